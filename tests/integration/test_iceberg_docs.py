"""docs/iceberg.md's Python example runs as written, from the directory of a daemon started
as the doc starts it, and reads every event once."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from daemon import Daemon, ndjson, wait_for
from iceberg_tables import trace_ids

DOC = Path(__file__).resolve().parents[2] / "docs" / "iceberg.md"


def test_the_python_example_reads_the_tables(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/gravixd-data/catalog.db"  # what "$PWD/gravixd-data/…" gives
    (tmp_path / "gravixd-data").mkdir()
    with Daemon(
        tmp_path / "d", "--iceberg-catalog-uri", uri, "--segment-max-age-seconds=0.2",
        "--iceberg-commit-interval-seconds=0.1",
    ) as daemon:  # fmt: skip
        rows = [
            {"service": f"svc-{i % 3}", "duration_ms": i, "trace_id": f"t{i}"} for i in range(90)
        ]
        assert daemon.post("/v1/facts", ndjson(rows), "application/x-ndjson")[0] == 202
        wait_for(lambda: len(trace_ids(uri)) == 90, what="committed")
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    namespace: dict = {}
    out = io.StringIO()
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<docs/iceberg.md>", "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(old)
    assert namespace["scan"].to_arrow().num_rows == 90
    assert namespace["con"].sql("SELECT count(*) FROM facts").fetchall() == [(90,)]
    assert "svc-0" in out.getvalue()
