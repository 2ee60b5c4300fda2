"""A daemon with `iceberg_catalog_uri` keeps Iceberg tables of what it acknowledged.

sqlite catalog, local store: every acknowledged event is in the table exactly once, its
timestamps in microseconds, and the data files are the Parquet segments in the store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyiceberg", reason="the gravixd[iceberg] extra is in the test extra")

from tests.daemon import Daemon, ndjson, wait_for  # noqa: E402
from tests.iceberg_tables import duplicates, scan, sqlite_uri, table, trace_ids  # noqa: E402

FAST = ["--segment-max-age-seconds", "0.2", "--iceberg-commit-interval-seconds", "0.2"]


def facts(prefix: str, n: int, base_ns: int = 1_796_000_000_123_456_789) -> list[dict]:
    return [
        {
            "timestamp_unix_nano": base_ns + i,
            "service": "svc",
            "route": "/r",
            "status_code": 200,
            "trace_id": f"{prefix}-{i}",
        }
        for i in range(n)
    ]


def test_acknowledged_events_land_in_the_table_once(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    with Daemon(tmp_path, "--iceberg-catalog-uri", uri, *FAST) as daemon:
        expected = []
        for batch in range(5):
            body = facts(f"b{batch}", 50)
            status, answer, _ = daemon.post("/v1/facts", ndjson(body), "application/x-ndjson")
            assert (status, answer) == (202, {"accepted": 50})
            expected += [f["trace_id"] for f in body]
        wait_for(lambda: len(trace_ids(uri)) >= len(expected), what="all events committed")
        assert sorted(trace_ids(uri)) == sorted(expected)
        assert daemon.metric("iceberg_rows_committed_total", table="gravix.facts") == 250
    loaded = table(uri)
    assert loaded is not None
    files = [task.file.file_path for task in loaded.scan().plan_files()]
    # The data files are the uploaded segments themselves, in the store's Hive layout.
    assert files and all(f.startswith(f"file://{daemon.store_dir}/facts/dt=") for f in files)
    assert not duplicates(trace_ids(uri))
    # The spool keeps nothing once committed.
    assert not list((daemon.spool_dir / "sealed" / "facts").iterdir())


def test_timestamps_are_microseconds_truncated(tmp_path: Path) -> None:
    """docs/iceberg.md: the tables hold microseconds; the nanosecond digits are cut."""
    uri = sqlite_uri(tmp_path)
    with Daemon(tmp_path, "--iceberg-catalog-uri", uri, *FAST) as daemon:
        body = facts("t", 1, base_ns=1_796_000_000_123_456_789)
        assert daemon.post("/v1/facts", ndjson(body), "application/x-ndjson")[0] == 202
        wait_for(lambda: trace_ids(uri) == ["t-0"], what="the event committed")
    read = scan(uri)
    assert str(read.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert read.column("timestamp").cast("int64").to_pylist() == [1_796_000_000_123_456]
