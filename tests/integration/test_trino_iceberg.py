"""A real Trino 476 reads the Iceberg tables pyiceberg commits to the shared JDBC catalog
(PostgreSQL) and S3 (SeaweedFS): exact counts and sums, timestamps in microseconds, pruning
on `timestamp` in its plan, and exact counts while Trino's own compaction and upkeep run
beside a writer that keeps committing.

One Trino for the session (tests/conftest.py); each test has its own namespace.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import trino
from trino_tables import create_table, facts_rows, sql_catalog

pytestmark = [pytest.mark.trino, pytest.mark.s3]

# A fixed past day: partitions are hours, the data's moment is not the test's.
START = datetime(2026, 11, 3, 10, tzinfo=UTC)
ROWS_PER_HOUR = 1000
HOURS = 3


@pytest.fixture(scope="module")
def facts(postgres: Any, seaweed: Any, trino_server: Any) -> Iterator[tuple[Any, pa.Table]]:
    """t_read.facts: three hours of facts, one commit per hour; and the rows committed."""
    catalog = sql_catalog(postgres, seaweed)
    table = create_table(catalog, "t_read.facts", "facts")
    written = []
    for hour in range(HOURS):
        rows = facts_rows(ROWS_PER_HOUR, start=START + timedelta(hours=hour), seed=hour)
        table.append(rows)
        written.append(rows)
    yield table, pa.concat_tables(written)


def test_trino_reads_what_pyiceberg_committed_exactly(
    trino_server: Any, facts: tuple[Any, pa.Table]
) -> None:
    _, rows = facts
    got = trino_server.query(
        "SELECT service, count(*), sum(bytes_in), sum(CASE WHEN status_code >= 500 THEN 1 "
        "ELSE 0 END) FROM iceberg.t_read.facts GROUP BY service ORDER BY service"
    )
    expected = []
    for service in sorted(set(rows.column("service").to_pylist())):
        mine = rows.filter(pc.equal(rows.column("service"), service))
        errors = pc.sum(pc.greater_equal(mine.column("status_code"), 500).cast(pa.int64()))
        expected.append(
            [service, mine.num_rows, pc.sum(mine.column("bytes_in")).as_py(), errors.as_py()]
        )
    assert got == expected
    assert trino_server.query("SELECT count(*) FROM iceberg.t_read.facts") == [
        [HOURS * ROWS_PER_HOUR]
    ]


def test_timestamps_read_back_in_microseconds(
    trino_server: Any, facts: tuple[Any, pa.Table]
) -> None:
    _, rows = facts
    ((kind,),) = trino_server.query("SELECT typeof(timestamp) FROM iceberg.t_read.facts LIMIT 1")
    assert kind == "timestamp(6) with time zone"
    # Every row's timestamp, to the microsecond, keyed by its unique trace_id.
    got = dict(
        trino_server.query(
            "SELECT trace_id, to_unixtime(timestamp) * 1e6 FROM iceberg.t_read.facts"
        )
    )
    expected = dict(
        zip(
            rows.column("trace_id").to_pylist(),
            rows.column("timestamp").cast(pa.int64()).to_pylist(),
            strict=True,
        )
    )
    assert len(got) == len(expected)
    # to_unixtime is a double: microseconds of 2026 fit its 53 bits exactly.
    assert {k: round(v) for k, v in got.items()} == expected
    assert any(v % 1000 for v in expected.values())  # the data holds sub-millisecond digits


def test_explain_shows_pruning_on_timestamp(trino_server: Any, facts: tuple[Any, pa.Table]) -> None:
    second_hour = START + timedelta(hours=1)
    where = (
        f"timestamp >= TIMESTAMP '{second_hour:%Y-%m-%d %H:%M:%S} UTC' "
        f"AND timestamp < TIMESTAMP '{second_hour + timedelta(hours=1):%Y-%m-%d %H:%M:%S} UTC'"
    )
    plan = "\n".join(
        row[0]
        for row in trino_server.query(
            f"EXPLAIN SELECT count(*) FROM iceberg.t_read.facts WHERE {where}"
        )
    )
    # The filter is pushed into the table scan as a constraint on the partition source...
    assert "constraint on [timestamp]" in plan, plan
    assert f"[[{second_hour:%Y-%m-%d %H:%M:%S}.000000 UTC, " in plan, plan

    def scanned(sql: str) -> tuple[int, int]:
        text = "\n".join(row[0] for row in trino_server.query(f"EXPLAIN ANALYZE {sql}"))
        match = re.search(r"Input: (\d+) rows \([^)]*\),[^\n]*? Splits: (\d+)", text)
        assert match, text
        return int(match[1]), int(match[2])

    # ...and the scan reads one hour's file of three.
    assert scanned(f"SELECT count(*) FROM iceberg.t_read.facts WHERE {where}") == (
        ROWS_PER_HOUR,
        1,
    )
    assert scanned("SELECT count(*) FROM iceberg.t_read.facts") == (
        HOURS * ROWS_PER_HOUR,
        HOURS,
    )


def test_counts_stay_exact_while_trino_compacts_and_a_writer_commits(
    postgres: Any, seaweed: Any, trino_server: Any
) -> None:
    """A writer commits batches (pyiceberg, retrying on conflict) while Trino runs optimize,
    expire_snapshots and remove_orphan_files; every count a reader sees is a total the
    writer had committed at some moment (never a batch twice, never one lost), and the last
    is the whole."""
    from pyiceberg.exceptions import CommitFailedException

    catalog = sql_catalog(postgres, seaweed)
    create_table(catalog, "t_compact.facts", "facts")
    batches = [
        facts_rows(200, start=START + timedelta(hours=i % 2), seed=100 + i) for i in range(12)
    ]
    committed_totals = [0]
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for batch in batches:
                for _ in range(20):
                    try:
                        catalog.load_table("t_compact.facts").append(batch)
                        break
                    except CommitFailedException:
                        time.sleep(0.2)  # Trino's optimize committed first: retry on top
                else:
                    raise AssertionError("20 commit conflicts in a row")
                committed_totals.append(committed_totals[-1] + batch.num_rows)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[int] = []
    # Beside the writer, the retention is the deployment's kind (longer than any commit in
    # flight): remove_orphan_files with a retention shorter than a concurrent commit deletes
    # that commit's new files (seen here: ICEBERG_MISSING_METADATA), which is why Trino's
    # minimum is 7 days. The short retention runs once the writer is done, below.
    upkeep = [
        f"ALTER TABLE iceberg.t_compact.facts EXECUTE {procedure}"
        for procedure in (
            "optimize",
            "expire_snapshots(retention_threshold => '1h')",
            "remove_orphan_files(retention_threshold => '1h')",
            "optimize",
        )
    ]
    step = 0
    try:
        while not done.is_set() or step < len(upkeep):
            ((count,),) = trino_server.query("SELECT count(*) FROM iceberg.t_compact.facts")
            seen.append(count)
            if step < len(upkeep) and committed_totals[-1] > 0:
                try:
                    trino_server.query(upkeep[step])
                    step += 1
                except trino.exceptions.TrinoQueryError as exc:  # lost to the writer: again
                    lost = (
                        exc.error_name == "ICEBERG_COMMIT_ERROR" or "conflict" in str(exc).lower()
                    )
                    if not lost:
                        raise
    finally:
        writer.join(120)
    assert not errors, errors
    # Each count is a whole number of batches: the writer's totals after 0, 1, ... commits.
    possible = [sum(b.num_rows for b in batches[:i]) for i in range(len(batches) + 1)]
    assert set(seen) <= set(possible), (seen, possible)
    assert seen == sorted(seen)
    # Upkeep with no retention once no commit is in flight: old snapshots and the files only
    # they read go, every row stays.
    for procedure in ("expire_snapshots", "remove_orphan_files"):
        trino_server.query(
            f"ALTER TABLE iceberg.t_compact.facts EXECUTE {procedure}(retention_threshold => '0s')"
        )
    snapshots = trino_server.query('SELECT count(*) FROM iceberg.t_compact."facts$snapshots"')
    assert snapshots == [[1]]
    ((final,),) = trino_server.query("SELECT count(*) FROM iceberg.t_compact.facts")
    assert final == committed_totals[-1] == sum(b.num_rows for b in batches)
    ((total_bytes,),) = trino_server.query("SELECT sum(bytes_in) FROM iceberg.t_compact.facts")
    assert total_bytes == sum(pc.sum(b.column("bytes_in")).as_py() for b in batches)
