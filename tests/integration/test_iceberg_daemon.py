"""A daemon with `iceberg_catalog_uri` keeps Iceberg tables of what it acknowledged.

sqlite catalog, local store: every acknowledged event is in the table exactly once, its
timestamps in microseconds, and the data files are the Parquet segments in the store.
"""

from __future__ import annotations

from pathlib import Path

from daemon import Daemon, ndjson, wait_for
from iceberg_tables import duplicates, scan, sqlite_uri, table, trace_ids

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


HOUR_NS = 3_600_000_000_000


def test_a_segment_spanning_event_hours_is_split_and_pruned(tmp_path: Path) -> None:
    """One request with events of three hours: one segment, three data files (one per
    hour partition); a filter on one hour plans only that hour's file."""
    uri = sqlite_uri(tmp_path)
    base = 1_796_000_400 * 1_000_000_000  # 2026-11-30T01:00:00Z, an hour boundary
    assert base % HOUR_NS == 0
    body = [
        {"timestamp_unix_nano": base + h * HOUR_NS + i, "service": "s", "trace_id": f"h{h}-{i}"}
        for h in range(3)
        for i in range(10)
    ]
    with Daemon(tmp_path, "--iceberg-catalog-uri", uri, *FAST) as daemon:
        assert daemon.post("/v1/facts", ndjson(body), "application/x-ndjson")[0] == 202
        wait_for(lambda: len(trace_ids(uri)) == 30, what="all events committed")
    loaded = table(uri)
    assert loaded is not None
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    all_files = list(loaded.scan().plan_files())
    assert len(all_files) == 3
    second_hour = And(
        GreaterThanOrEqual("timestamp", "2026-11-30T02:00:00+00:00"),
        LessThan("timestamp", "2026-11-30T03:00:00+00:00"),
    )
    planned = list(loaded.scan(row_filter=second_hour).plan_files())
    assert len(planned) == 1
    read = loaded.scan(row_filter=second_hour).to_arrow()
    assert sorted(read.column("trace_id").to_pylist()) == sorted(f"h1-{i}" for i in range(10))
    assert not duplicates(trace_ids(uri))


def test_sigterm_commits_what_waits_without_waiting_for_the_interval(tmp_path: Path) -> None:
    """A drain commits the pending segments at once: with a commit interval longer than
    the drain deadline, the second batch is still in the table when the daemon exits."""
    uri = sqlite_uri(tmp_path)
    daemon = Daemon(
        tmp_path, "--iceberg-catalog-uri", uri, "--segment-max-age-seconds=0.2",
        "--iceberg-commit-interval-seconds=600", "--drain-timeout-seconds=20",
    )  # fmt: skip
    with daemon:
        assert daemon.post("/v1/facts", ndjson(facts("a", 5)), "application/x-ndjson")[0] == 202
        wait_for(lambda: len(trace_ids(uri)) == 5, what="the first commit")
        assert daemon.post("/v1/facts", ndjson(facts("b", 5)), "application/x-ndjson")[0] == 202
        wait_for(lambda: daemon.metric("upload_segments_total", stream="facts") >= 2, what="upload")
        assert daemon.stop() == 0
    assert sorted(trace_ids(uri)) == sorted(
        [f"a-{i}" for i in range(5)] + [f"b-{i}" for i in range(5)]
    )
    assert not list((daemon.spool_dir / "sealed" / "facts").iterdir())
