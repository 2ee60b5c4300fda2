"""Exactly once at every moment: SIGKILL before, during and after Iceberg commits, a catalog
that is down, several daemons on one catalog. Every snapshot the table keeps is read: none
holds an event twice, and the last holds every acknowledged event.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest
from daemon import Daemon, ndjson, wait_for
from iceberg_tables import (
    duplicates,
    every_snapshot_ids,
    sqlite_uri,
    table,
    trace_ids,
)
from test_crash_loop import Client

FAST = [
    "--segment-max-age-seconds=0.2",
    "--iceberg-commit-interval-seconds=0.1",
    "--upload-retry-initial-seconds=0.05",
    "--upload-retry-max-seconds=0.5",
    "--log-level=info",
]


def _events(prefix: str, n: int) -> bytes:
    return ndjson({"service": "x", "trace_id": f"{prefix}-{i}"} for i in range(n))


def _assert_every_snapshot_once(uri: str, acked: list[str], stream: str = "facts") -> None:
    snapshots = every_snapshot_ids(uri, stream)
    assert snapshots, "no snapshot"
    for snapshot_id, ids in snapshots.items():
        assert not duplicates(ids), f"snapshot {snapshot_id} holds events twice"
    final = trace_ids(uri, stream)
    missing = set(acked) - set(final)
    assert not missing, (
        f"{len(missing)} acknowledged events not in the table, e.g. {sorted(missing)[:3]}"
    )
    assert not duplicates(final)


def test_catalog_down_spool_keeps_segments_then_commits_after_sigkill(tmp_path: Path) -> None:
    """Before the commit: uploaded, not committed (the catalog is unreachable), killed.
    The spool keeps the segment; the restarted daemon commits it once the catalog is back."""
    catalog_dir = tmp_path / "catalog-not-yet"
    uri = f"sqlite:///{catalog_dir}/catalog.db"
    daemon = Daemon(tmp_path / "d", "--iceberg-catalog-uri", uri, *FAST).start()
    try:
        assert daemon.post("/v1/facts", _events("a", 40), "application/x-ndjson")[0] == 202
        wait_for(
            lambda: daemon.metric("iceberg_commit_failures_total", table="gravix.facts") >= 2,
            what="commit attempts failing",
        )
        # Uploaded to the store, and still in the spool: its commit is outstanding.
        assert daemon.metric("upload_segments_total", stream="facts") >= 1
        assert list((daemon.spool_dir / "sealed" / "facts").iterdir())
        assert daemon.metric("iceberg_commit_backlog_segments") >= 1
        # Ingest goes on while the catalog is down.
        assert daemon.post("/v1/facts", _events("b", 40), "application/x-ndjson")[0] == 202
        daemon.kill()
        catalog_dir.mkdir()
        daemon.start()
        assert daemon.post("/v1/facts", _events("c", 40), "application/x-ndjson")[0] == 202
        wait_for(lambda: len(trace_ids(uri)) >= 120, what="every event committed")
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    acked = [f"{p}-{i}" for p in "abc" for i in range(40)]
    _assert_every_snapshot_once(uri, acked)
    assert not list((daemon.spool_dir / "sealed" / "facts").iterdir())


def test_commits_resume_by_themselves_when_the_catalog_returns(tmp_path: Path) -> None:
    catalog_dir = tmp_path / "catalog-later"
    uri = f"sqlite:///{catalog_dir}/catalog.db"
    with Daemon(tmp_path / "d", "--iceberg-catalog-uri", uri, *FAST) as daemon:
        assert daemon.post("/v1/facts", _events("a", 10), "application/x-ndjson")[0] == 202
        wait_for(
            lambda: daemon.metric("iceberg_commit_failures_total", table="gravix.facts") >= 1,
            what="a failed commit",
        )
        catalog_dir.mkdir()
        wait_for(lambda: len(trace_ids(uri)) == 10, what="the commit after the catalog returned")
        assert daemon.metric("iceberg_last_commit_timestamp_seconds", table="gravix.facts") > 0
    _assert_every_snapshot_once(uri, [f"a-{i}" for i in range(10)])


def test_a_segment_committed_before_a_crash_is_never_added_again(tmp_path: Path) -> None:
    """After the commit, before the spool copy is deleted: the next start uploads the
    segment again and finds it named in the table's history."""
    uri = sqlite_uri(tmp_path)
    daemon = Daemon(tmp_path / "d", "--iceberg-catalog-uri", uri, *FAST)
    with daemon:
        assert daemon.post("/v1/facts", _events("a", 25), "application/x-ndjson")[0] == 202
        wait_for(lambda: len(trace_ids(uri)) == 25, what="the commit")
    # Put the committed segment back into the spool, as a crash right after the commit
    # (before its spool copy was deleted) leaves it.
    stored = sorted((daemon.store_dir / "facts").rglob("*.parquet"))
    assert len(stored) == 1
    sealed = daemon.spool_dir / "sealed" / "facts" / stored[0].name
    shutil.copyfile(stored[0], sealed)
    with daemon:
        wait_for(
            lambda: (
                daemon.metric("iceberg_segments_already_committed_total", table="gravix.facts") == 1
            ),
            what="the segment recognised as committed",
        )
        assert daemon.post("/v1/facts", _events("b", 5), "application/x-ndjson")[0] == 202
        wait_for(lambda: len(trace_ids(uri)) >= 30, what="the second commit")
    assert not sealed.exists()
    _assert_every_snapshot_once(uri, [f"a-{i}" for i in range(25)] + [f"b-{i}" for i in range(5)])
    assert len(trace_ids(uri)) == 30


@pytest.mark.slow
def test_sigkill_loop_with_commits_keeps_every_snapshot_exact(tmp_path: Path) -> None:
    """SIGKILL at random moments under load while commits run every 0.1 s: kills land
    before, during and after commits. No snapshot ever holds an event twice; after the
    last start every acknowledged event is in the table."""
    rng = random.Random(int(os.environ.get("GRAVIXD_CRASH_LOOP_SEED", "0")) or None)
    uri = sqlite_uri(tmp_path)
    daemon = Daemon(
        tmp_path / "d", "--iceberg-catalog-uri", uri, "--drain-timeout-seconds=30", *FAST
    )
    clients: list[Client] = []
    kills = 8
    for round_ in range(kills + 1):
        daemon.start()
        round_clients = [
            Client(daemon.http_port, f"r{round_}c{n}", stream, kind, rng.randrange(1 << 30))
            for n, (stream, kind) in enumerate([("facts", "batch"), ("events", "ndjson")])
        ]
        for c in round_clients:
            c.start()
        clients += round_clients
        time.sleep(rng.uniform(0.3, 1.0))
        for c in round_clients:
            c.stop.set()
        if round_ < kills:
            daemon.kill()
        for c in round_clients:
            c.join(15)
    assert daemon.stop() == 0
    acked_facts = [t for c in clients if c.stream == "facts" for t in c.acked]
    acked_events = [t for c in clients if c.stream == "events" for t in c.acked]
    assert len(acked_facts) > 100
    _assert_every_snapshot_once(uri, acked_facts, "facts")
    _assert_every_snapshot_once(uri, acked_events, "events")
    tried = {t for c in clients for t in c.tried}
    assert set(trace_ids(uri, "facts")) <= tried


def test_several_daemons_commit_to_one_catalog_exactly_once(tmp_path: Path) -> None:
    """Three daemons, own spools, one store, one catalog, committing at once: conflicts
    are retried, counts are exact, no snapshot holds an event twice."""
    uri = sqlite_uri(tmp_path)
    store_url = f"file://{tmp_path / 'store'}"
    daemons = [
        Daemon(tmp_path / f"d{n}", "--iceberg-catalog-uri", uri, *FAST, store_url=store_url)
        for n in range(3)
    ]
    acked: list[str] = []
    lock = threading.Lock()

    def load(daemon: Daemon, name: str) -> None:
        for batch in range(15):
            ids = [f"{name}-{batch}-{i}" for i in range(20)]
            body = ndjson({"service": name, "trace_id": t} for t in ids)
            if daemon.post("/v1/facts", body, "application/x-ndjson")[0] == 202:
                with lock:
                    acked.extend(ids)
            time.sleep(0.03)

    for d in daemons:
        d.start()
    try:
        threads = [threading.Thread(target=load, args=(d, f"d{n}")) for n, d in enumerate(daemons)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(acked) == 3 * 15 * 20
        wait_for(lambda: len(trace_ids(uri)) >= len(acked), timeout=60, what="all committed")
        conflicts = sum(
            d.metric("iceberg_commit_conflicts_total", table="gravix.facts") for d in daemons
        )
        for d in daemons:
            assert d.stop() == 0
    finally:
        for d in daemons:
            d.kill()
    _assert_every_snapshot_once(uri, acked)
    assert len(trace_ids(uri)) == len(acked)
    loaded = table(uri)
    assert loaded is not None
    print(f"\n3 daemons: {len(loaded.metadata.snapshots)} snapshots, {conflicts} conflicts retried")


def test_segments_awaiting_commit_fill_the_spool_then_503_then_resume(tmp_path: Path) -> None:
    """A catalog that stays down: uploaded segments keep their spool copy until committed,
    counted in max_spool_bytes, so ingest sheds load (503) as for a store outage instead of
    growing; when the catalog returns, commits drain the spool and 202s come back."""
    catalog_dir = tmp_path / "catalog-down"
    uri = f"sqlite:///{catalog_dir}/catalog.db"
    daemon = Daemon(tmp_path / "d", "--iceberg-catalog-uri", uri, "--max-spool-bytes=200000", *FAST)
    acked: list[str] = []
    with daemon:
        statuses = []
        for batch in range(200):
            ids = [f"b{batch}-{i}" for i in range(50)]
            # Incompressible, so that Parquet segments hold their size.
            body = ndjson(
                {"service": "x", "route": os.urandom(100).hex(), "trace_id": t} for t in ids
            )
            status = daemon.post("/v1/facts", body, "application/x-ndjson")[0]
            statuses.append(status)
            if status == 202:
                acked += ids
            else:
                break
            time.sleep(0.02)
        assert statuses[-1] == 503, "the spool never filled"
        assert daemon.metric("iceberg_commit_backlog_segments") >= 1
        catalog_dir.mkdir()
        wait_for(
            lambda: len(trace_ids(uri)) >= len(acked), timeout=60, what="the backlog committed"
        )
        wait_for(
            lambda: daemon.post("/v1/facts", _events("after", 5), "application/x-ndjson")[0] == 202,
            what="202 again",
        )
        acked += [f"after-{i}" for i in range(5)]
        wait_for(lambda: len(trace_ids(uri)) >= len(acked), what="the last commit")
    _assert_every_snapshot_once(uri, acked)


def test_a_segment_older_than_the_retention_is_quarantined_not_committed(tmp_path: Path) -> None:
    """docs/iceberg.md: whether a segment older than the kept history was committed can no
    longer be told, so it goes to quarantine (counted, logged) instead of maybe twice into
    the table."""
    import pyarrow as pa

    from gravixd.core.segment import new_segment_id
    from gravixd.iceberg.datafiles import write_table_file
    from gravixd.schema import FACTS_SCHEMA

    uri = sqlite_uri(tmp_path)
    daemon = Daemon(tmp_path / "d", "--iceberg-catalog-uri", uri, *FAST)
    eight_days_ago_ms = int((time.time() - 8 * 86400) * 1000)
    old_id = new_segment_id(eight_days_ago_ms, 12345)
    sealed = daemon.spool_dir / "sealed" / "facts"
    sealed.mkdir(parents=True)
    rows = pa.Table.from_pylist(
        [{"timestamp": eight_days_ago_ms * 1_000_000, "service": "old", "trace_id": "old-0"}],
        schema=FACTS_SCHEMA,
    )
    write_table_file(rows, sealed / f"{old_id}.parquet")
    with daemon:
        wait_for(
            lambda: daemon.metric(
                "spool_segments_quarantined_total", reason="older_than_iceberg_retention"
            ),
            what="the old segment quarantined",
        )
        assert daemon.post("/v1/facts", _events("new", 3), "application/x-ndjson")[0] == 202
        wait_for(lambda: len(trace_ids(uri)) == 3, what="the new events committed")
    assert "old-0" not in trace_ids(uri)
    assert (daemon.spool_dir / "quarantine" / "facts" / f"{old_id}.parquet").exists()
