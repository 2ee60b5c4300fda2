"""What a short segment age costs: server CPU and objects written for a steady 1000 facts/s
over HTTP (100 requests/s) into a local store, for each `segment_max_age_seconds` given.

    .venv/bin/python -m bench.bench_freshness 60 2 0.2

Figures, not thresholds: compare ages within one run (this box's CPU figures move +-15%).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from daemon import Daemon  # noqa: E402 - the tests' daemon runner


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(ages: list[str]) -> None:
    for age in ages:
        work = pathlib.Path(tempfile.mkdtemp(prefix="gravixd-fresh-"))
        with Daemon(work, "--segment-max-age-seconds", age) as daemon:
            assert daemon.proc is not None
            time.sleep(1)
            before = cpu_seconds(daemon.proc.pid)
            subprocess.run(
                [sys.executable, "-m", "gravixd", "emit", "--url",
                 f"http://127.0.0.1:{daemon.http_port}", "--rate", "1000", "--duration", "20",
                 "--batch-size", "10", "--concurrency", "2", "--json"],
                capture_output=True, check=True,
            )  # fmt: skip
            time.sleep(0.5)
            used = cpu_seconds(daemon.proc.pid) - before
            objects = len(list((work / "store").rglob("*.arrow")))
            print(f"segment_max_age_seconds {age}: server CPU {used:.2f} s over 20 s, "
                  f"{objects} objects")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:] or ["60", "2", "0.2"])
