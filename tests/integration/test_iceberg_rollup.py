"""`gravixd rollup` with a catalog: commits in "rollup" mode (one committer, many daemons),
compacts a closed hour in one atomic replace, expires snapshots and removes what only they
read, and never lets an event be counted twice, even when killed mid-way.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon import Daemon, ndjson, wait_for
from iceberg_tables import duplicates, every_snapshot_ids, sqlite_uri, table, trace_ids

FAST = [
    "--segment-max-age-seconds=0.2",
    "--iceberg-commit-interval-seconds=0.1",
    "--log-level=info",
]
HOUR_NS = 3_600_000_000_000


def _closed_hour_events(prefix: str, n: int) -> bytes:
    """Events of an hour that closed two hours ago (whatever the time now)."""
    start = (time.time_ns() // HOUR_NS - 2) * HOUR_NS
    return ndjson(
        {"timestamp_unix_nano": start + i * 1000, "service": "s", "trace_id": f"{prefix}-{i}"}
        for i in range(n)
    )


def _rollup(workdir: Path, uri: str, *args: str, check: bool = True) -> dict:
    result = subprocess.run(
        [
            sys.executable, "-m", "gravixd", "rollup", "--json",
            "--store-url", f"file://{workdir / 'store'}", "--iceberg-catalog-uri", uri, *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def _assert_snapshots_exact(uri: str, expected: set[str]) -> None:
    for snapshot_id, ids in every_snapshot_ids(uri).items():
        assert not duplicates(ids), f"snapshot {snapshot_id} holds events twice"
        assert set(ids) <= expected
    final = trace_ids(uri)
    assert sorted(final) == sorted(expected)


def _files_of_hour(uri: str) -> list[str]:
    loaded = table(uri)
    assert loaded is not None
    return [t.file.file_path for t in loaded.scan().plan_files()]


def test_rollup_compacts_a_closed_hour_in_one_replace(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    expected: set[str] = set()
    with Daemon(tmp_path, "--iceberg-catalog-uri", uri, *FAST) as daemon:
        for batch in range(4):  # four segments (0.2 s apart), one closed event hour
            assert daemon.post("/v1/facts", _closed_hour_events(f"b{batch}", 30),
                               "application/x-ndjson")[0] == 202  # fmt: skip
            expected |= {f"b{batch}-{i}" for i in range(30)}
            time.sleep(0.3)
        wait_for(lambda: len(trace_ids(uri)) == 120, what="all committed")
    assert len(_files_of_hour(uri)) == 4
    report = _rollup(tmp_path, uri, "--stream", "facts")
    facts = report["tables"][0]
    assert (facts["hours_compacted"], facts["files_replaced"], facts["files_written"]) == (1, 4, 1)
    files = _files_of_hour(uri)
    assert len(files) == 1 and "/iceberg/gravix/facts/data/timestamp_hour=" in files[0]
    _assert_snapshots_exact(uri, expected)
    # Nothing left to do: a second run changes nothing.
    again = _rollup(tmp_path, uri, "--stream", "facts")["tables"][0]
    assert again["hours_compacted"] == 0
    # The pitfall: a segment committed before the compaction, whose spool copy a crash
    # left behind, is no longer among the current files; its commit is in the history.
    stored = sorted((tmp_path / "store" / "facts").rglob("*.parquet"))
    shutil.copyfile(stored[0], daemon.spool_dir / "sealed" / "facts" / stored[0].name)
    with daemon:
        wait_for(
            lambda: daemon.metric("iceberg_segments_already_committed_total", table="gravix.facts"),
            what="the old segment recognised as committed",
        )
    _assert_snapshots_exact(uri, expected)


def test_expiry_removes_replaced_files_and_keeps_the_table_whole(tmp_path: Path) -> None:
    import trio

    from gravixd.iceberg.catalog import CatalogSettings
    from gravixd.rollup.tables import upkeep_tables
    from gravixd.stores.local import LocalStore

    uri = sqlite_uri(tmp_path)
    with Daemon(tmp_path, "--iceberg-catalog-uri", uri, *FAST) as daemon:
        for batch in range(3):
            assert daemon.post("/v1/facts", _closed_hour_events(f"b{batch}", 10),
                               "application/x-ndjson")[0] == 202  # fmt: skip
            time.sleep(0.3)
        wait_for(lambda: len(trace_ids(uri)) == 30, what="all committed")
    segments = sorted((tmp_path / "store" / "facts").rglob("*.parquet"))
    assert len(segments) == 3
    _rollup(tmp_path, uri, "--stream", "facts")
    store = LocalStore(tmp_path / "store")
    settings = CatalogSettings(uri=uri)
    week = 7 * 86400.0

    async def upkeep(now: float):  # type: ignore[no-untyped-def]
        return await upkeep_tables(
            store, settings, streams=("facts",), commit_new=False, now_unix_seconds=now,
            retention_seconds=week, target_file_bytes=1 << 28,
        )  # fmt: skip

    # Within the retention: the replaced segments stay (older snapshots still read them).
    report = trio.run(upkeep, time.time())
    assert report.tables[0].snapshots_expired == 0
    assert all(s.exists() for s in segments)
    # Past it: the old snapshots go, and the files only they read.
    report = trio.run(upkeep, time.time() + week + 60)
    assert report.ok, report.tables[0].error
    assert report.tables[0].snapshots_expired >= 1
    assert not any(s.exists() for s in segments)
    assert sorted(trace_ids(uri)) == sorted(f"b{b}-{i}" for b in range(3) for i in range(10))
    loaded = table(uri)
    assert loaded is not None and len(loaded.metadata.snapshots) == 1


def test_fleet_daemons_only_upload_and_rollup_commits_once(tmp_path: Path) -> None:
    """`iceberg_commit = "rollup"`: three daemons upload; the table stays empty until
    `gravixd rollup` commits everything new in one snapshot; a second run adds nothing."""
    uri = sqlite_uri(tmp_path)
    store_url = f"file://{tmp_path / 'store'}"
    args = ["--iceberg-catalog-uri", uri, "--iceberg-commit", "rollup", *FAST]
    daemons = [Daemon(tmp_path / f"d{n}", *args, store_url=store_url) for n in range(3)]
    expected: set[str] = set()
    for n, d in enumerate(daemons):
        with d:
            body = ndjson({"service": "s", "trace_id": f"d{n}-{i}"} for i in range(20))
            assert d.post("/v1/facts", body, "application/x-ndjson")[0] == 202
            expected |= {f"d{n}-{i}" for i in range(20)}
        assert not list((d.spool_dir / "sealed" / "facts").iterdir())  # uploaded, deleted
    assert table(uri) is None or trace_ids(uri) == []
    report = _rollup(tmp_path, uri, "--stream", "facts", "--iceberg-commit", "rollup")
    assert report["tables"][0]["segments_committed"] == 3
    assert report["tables"][0]["rows_committed"] == 60
    assert sorted(trace_ids(uri)) == sorted(expected)
    again = _rollup(tmp_path, uri, "--stream", "facts", "--iceberg-commit", "rollup")
    assert again["tables"][0]["segments_committed"] == 0
    _assert_snapshots_exact(uri, expected)
    loaded = table(uri)
    assert loaded is not None and len(loaded.metadata.snapshots) == 1


@pytest.mark.slow
def test_sigkill_during_rollup_never_counts_an_event_twice(tmp_path: Path) -> None:
    """The rollup killed at random moments while it commits and compacts; daemons upload
    meanwhile. Every snapshot is read: no event twice; at the end every event once."""
    rng = random.Random(int(os.environ.get("GRAVIXD_CRASH_LOOP_SEED", "0")) or None)
    uri = sqlite_uri(tmp_path)
    store_url = f"file://{tmp_path / 'store'}"
    daemon = Daemon(
        tmp_path / "d", "--iceberg-catalog-uri", uri, "--iceberg-commit", "rollup", *FAST,
        store_url=store_url,
    )  # fmt: skip
    expected: set[str] = set()
    command = [
        sys.executable, "-m", "gravixd", "rollup", "--include-current-hour",
        "--store-url", store_url, "--iceberg-catalog-uri", uri, "--iceberg-commit", "rollup",
    ]  # fmt: skip
    with daemon:
        for round_ in range(8):
            for batch in range(3):
                body = _closed_hour_events(f"r{round_}b{batch}", 25)
                assert daemon.post("/v1/facts", body, "application/x-ndjson")[0] == 202
                expected |= {f"r{round_}b{batch}-{i}" for i in range(25)}
                time.sleep(0.25)
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            time.sleep(rng.uniform(0.2, 2.5))
            process.kill()
            process.wait()
            for ids in every_snapshot_ids(uri).values():
                assert not duplicates(ids)
    _rollup(tmp_path, uri, "--iceberg-commit", "rollup", "--include-current-hour")
    _assert_snapshots_exact(uri, expected)


def test_rollup_inside_serve_compacts_the_tables(tmp_path: Path) -> None:
    """`rollup_interval_seconds` with a catalog runs the tables' upkeep, not the Hive
    rollup (whose deletes would pull files from under the tables)."""
    uri = sqlite_uri(tmp_path)
    expected: set[str] = set()
    with Daemon(
        tmp_path, "--iceberg-catalog-uri", uri, "--rollup-interval-seconds=1", *FAST
    ) as daemon:
        for batch in range(3):
            assert daemon.post("/v1/facts", _closed_hour_events(f"b{batch}", 10),
                               "application/x-ndjson")[0] == 202  # fmt: skip
            expected |= {f"b{batch}-{i}" for i in range(10)}
            time.sleep(0.3)
        wait_for(lambda: len(trace_ids(uri)) == 30, what="all committed")
        wait_for(lambda: len(_files_of_hour(uri)) == 1, timeout=60, what="the hour compacted")
    assert not list((tmp_path / "store").glob("rollup/facts/dt=*"))  # no Hive rollup ran
    _assert_snapshots_exact(uri, expected)
