"""`gravixd rollup`: compaction and table upkeep on one host.

`plan` decides from listings (sans-I/O), `parts` writes Parquet parts (blocking, in worker
threads), `run` does the store I/O and the daemon's schedule, `tables` the Iceberg upkeep
(commit in "rollup" mode, compaction as one atomic replace per closed hour, snapshot expiry
and orphan removal), `cli` the command line. The runtime imports `run`; only `gravixd.cli`
imports `cli` (through `main`, loaded on first use, so that argparse stays out of the daemon).
"""

from __future__ import annotations

from typing import Any

from .parts import RollupError
from .plan import COMMITS_PREFIX, ROLLUP_PREFIX
from .run import HourReport, RollupReport, rollup, run_rollup_schedule

__all__ = [
    "COMMITS_PREFIX",
    "ROLLUP_PREFIX",
    "HourReport",
    "RollupError",
    "RollupReport",
    "main",
    "rollup",
    "run_rollup_schedule",
]


def __getattr__(name: str) -> Any:
    if name == "main":
        from .cli import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
