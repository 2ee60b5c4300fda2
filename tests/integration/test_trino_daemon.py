"""The real daemon commits to Iceberg tables (S3 store on SeaweedFS, catalog on PostgreSQL)
and a real Trino reads them: while ingest, Trino's optimize and `gravixd rollup` run, no count
ever exceeds what was acknowledged and no event is read twice; once commits catch up,
count(*) and the per-service sums equal the acknowledged events exactly; timestamps read
back in microseconds (the nanosecond digits cut, as docs/iceberg.md says).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trino
from daemon import Daemon, ndjson, wait_for
from postgres import PASSWORD, USER

pytestmark = [pytest.mark.trino, pytest.mark.s3, pytest.mark.slow]

FAST = ["--segment-max-age-seconds", "0.3", "--iceberg-commit-interval-seconds", "0.5"]
BASE_NS = 1_796_000_000_123_456_789  # 2026-11-30T00:53:20.123456789Z
SERVICES = ("api", "web", "jobs")


def daemon_args(postgres: Any, seaweed: Any, namespace: str) -> list[str]:
    return [*store_args(postgres, seaweed, namespace), *FAST]


def store_args(postgres: Any, seaweed: Any, namespace: str) -> list[str]:
    """The store and catalog settings `gravixd serve` and `gravixd rollup` share."""
    options = seaweed.store_options()
    return [
        "--store-url",
        f"s3://{seaweed.bucket}/{namespace}",
        "--s3-endpoint-url",
        options["s3_endpoint_url"],
        "--s3-path-style",
        "--s3-region",
        options["s3_region"],
        "--s3-access-key-id",
        options["s3_access_key_id"],
        "--s3-secret-access-key",
        options["s3_secret_access_key"],
        "--iceberg-catalog-uri",
        f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{postgres.port}/gravix",
        "--iceberg-namespace",
        namespace,
    ]


def lost_a_commit_race(exc: Exception) -> bool:
    """Trino's optimize lost to another commit (the daemon's, or gravixd rollup replacing the
    same files first): Iceberg's optimistic concurrency; the next round tries again."""
    name = getattr(exc, "error_name", "")
    return name == "ICEBERG_COMMIT_ERROR" or "conflict" in str(exc).lower()


def batch(tag: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "timestamp_unix_nano": BASE_NS + i * 1_000_003,
            "service": SERVICES[i % len(SERVICES)],
            "route": "/r",
            "status_code": 200,
            "bytes_in": i,
            "trace_id": f"{tag}-{i}",
        }
        for i in range(n)
    ]


def test_trino_counts_are_exact_while_ingest_and_compaction_run(
    tmp_path: Path, postgres: Any, seaweed: Any, trino_server: Any
) -> None:
    namespace = f"t_daemon_{uuid.uuid4().hex[:8]}"
    table = f"iceberg.{namespace}.facts"
    acknowledged: list[dict[str, Any]] = []
    lock = threading.Lock()
    stop = threading.Event()  # the writer has stopped
    enough = threading.Event()  # the reader has seen compaction run beside ingest
    errors: list[BaseException] = []
    rollup_runs: list[subprocess.CompletedProcess[str]] = []

    def rollup() -> None:
        """`gravixd rollup` on the same store and catalog: compaction of the closed hour."""
        rollup_runs.append(
            subprocess.run(
                [sys.executable, "-m", "gravixd", "rollup", "--json"]
                + store_args(postgres, seaweed, namespace),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        )

    compactor = threading.Thread(target=rollup)

    with Daemon(tmp_path / "d", *daemon_args(postgres, seaweed, namespace)) as daemon:

        def ingest() -> None:
            try:
                # Until compaction has run twice beside it (bounded: 300 batches).
                for k in range(300):
                    if enough.is_set() and k >= 20:
                        break
                    body = batch(f"b{k}", 100)
                    status, answer, _ = daemon.post(
                        "/v1/facts", ndjson(body), "application/x-ndjson"
                    )
                    assert (status, answer) == (202, {"accepted": 100}), (status, answer)
                    with lock:
                        acknowledged.extend(body)
                    time.sleep(0.1)
            except BaseException as exc:
                errors.append(exc)
            finally:
                stop.set()

        def table_exists() -> bool:
            try:
                return ["facts"] in trino_server.query(f"SHOW TABLES FROM iceberg.{namespace}")
            except trino.exceptions.TrinoQueryError:  # catalog tables not created yet
                return False

        writer = threading.Thread(target=ingest)
        writer.start()
        try:
            wait_for(table_exists, timeout=120, what="the daemon to create its table")
            optimized = 0
            while not stop.is_set():
                if optimized >= 2:
                    enough.set()
                with lock:
                    acked_before = len(acknowledged)
                ((count, distinct),) = trino_server.query(
                    f"SELECT count(*), count(DISTINCT trace_id) FROM {table}"
                )
                with lock:
                    acked_after = len(acknowledged)
                # At most once at every moment: nothing unacknowledged, nothing twice.
                assert count == distinct, (count, distinct)
                assert count <= acked_after, (count, acked_before, acked_after)
                if count and not compactor.is_alive() and not rollup_runs:
                    compactor.start()  # gravixd's compaction beside Trino's, once
                if count and optimized < 2:
                    try:
                        trino_server.query(f"ALTER TABLE {table} EXECUTE optimize")
                        optimized += 1
                    except trino.exceptions.TrinoQueryError as exc:
                        if not lost_a_commit_race(exc):
                            raise
        finally:
            writer.join(120)
            if compactor.is_alive() or rollup_runs:
                compactor.join(300)
        assert not errors, errors
        (run,) = rollup_runs
        assert run.returncode == 0, run.stdout + run.stderr
        assert optimized >= 1  # Trino's compaction really ran beside ingest
        total = len(acknowledged)

        def caught_up() -> bool:
            return trino_server.query(f"SELECT count(*) FROM {table}") == [[total]]

        wait_for(caught_up, timeout=120, what="every acknowledged event committed")

    got = trino_server.query(
        f"SELECT service, count(*), sum(bytes_in) FROM {table} GROUP BY service ORDER BY 1"
    )
    counts: Counter[str] = Counter()
    sums: Counter[str] = Counter()
    for event in acknowledged:
        counts[event["service"]] += 1
        sums[event["service"]] += event["bytes_in"]
    assert got == [[s, counts[s], sums[s]] for s in sorted(counts)]
    ids = trino_server.query(f"SELECT count(DISTINCT trace_id) FROM {table}")
    assert ids == [[total]]
    operations = {
        row[0]
        for row in trino_server.query(
            f'SELECT operation FROM iceberg.{namespace}."facts$snapshots"'
        )
    }
    assert {"append", "replace"} <= operations, operations  # commits, and Trino's optimize


def test_trino_reads_the_daemons_timestamps_in_microseconds(
    tmp_path: Path, postgres: Any, seaweed: Any, trino_server: Any
) -> None:
    namespace = f"t_ts_{uuid.uuid4().hex[:8]}"
    table = f"iceberg.{namespace}.facts"
    body = batch("ts", 3)
    with Daemon(tmp_path / "d", *daemon_args(postgres, seaweed, namespace)) as daemon:
        assert daemon.post("/v1/facts", ndjson(body), "application/x-ndjson")[0] == 202

        def committed() -> bool:
            try:
                return trino_server.query(f"SELECT count(*) FROM {table}") == [[3]]
            except trino.exceptions.TrinoQueryError:  # the table does not exist yet
                return False

        wait_for(committed, timeout=120, what="the batch committed")
    rows = trino_server.query(
        f"SELECT trace_id, typeof(timestamp), CAST(to_unixtime(timestamp) * 1e6 AS bigint), "
        f"CAST(timestamp AS varchar) FROM {table} ORDER BY trace_id"
    )
    assert [row[:3] for row in rows] == [
        [event["trace_id"], "timestamp(6) with time zone", event["timestamp_unix_nano"] // 1000]
        for event in body
    ]
    # The first event as text: six fractional digits, its nanoseconds (789) cut.
    assert rows[0][3] == "2026-11-30 00:53:20.123456 UTC"


HOUR_NS = 3_600_000_000_000


def test_trino_prunes_the_daemons_tables_by_event_hour(
    tmp_path: Path, postgres: Any, seaweed: Any, trino_server: Any
) -> None:
    """One request with events of three hours: gravixd's partition spec (hour of
    `timestamp`) lets Trino read one hour's file for a filter on that hour."""
    namespace = f"t_prune_{uuid.uuid4().hex[:8]}"
    table = f"iceberg.{namespace}.facts"
    base = 1_796_000_400 * 1_000_000_000  # 2026-11-30T01:00:00Z, an hour boundary
    body = [
        {"timestamp_unix_nano": base + h * HOUR_NS + i, "service": "s", "trace_id": f"h{h}-{i}"}
        for h in range(3)
        for i in range(10 + h)  # 10, 11, 12 events: each hour's count is its own
    ]
    with Daemon(tmp_path / "d", *daemon_args(postgres, seaweed, namespace)) as daemon:
        assert daemon.post("/v1/facts", ndjson(body), "application/x-ndjson")[0] == 202

        def committed() -> bool:
            try:
                return trino_server.query(f"SELECT count(*) FROM {table}") == [[len(body)]]
            except trino.exceptions.TrinoQueryError:  # the table does not exist yet
                return False

        wait_for(committed, timeout=120, what="the request committed")
    where = (
        "WHERE timestamp >= TIMESTAMP '2026-11-30 02:00:00 UTC' "
        "AND timestamp < TIMESTAMP '2026-11-30 03:00:00 UTC'"
    )
    plan = "\n".join(r[0] for r in trino_server.query(f"EXPLAIN SELECT * FROM {table} {where}"))
    assert "constraint on [timestamp]" in plan, plan
    analyzed = "\n".join(
        r[0] for r in trino_server.query(f"EXPLAIN ANALYZE SELECT trace_id FROM {table} {where}")
    )
    match = re.search(r"Input: (\d+) rows \([^)]*\),[^\n]*? Splits: (\d+)", analyzed)
    assert match, analyzed
    assert (int(match[1]), int(match[2])) == (11, 1)  # the second hour's file alone
    assert trino_server.query(f"SELECT count(*) FROM {table} {where}") == [[11]]
