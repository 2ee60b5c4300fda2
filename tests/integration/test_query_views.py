"""The views `facts_all` / `events_all` count every stored event exactly once, across a real
rollup run: before it, crashed half way at each step, after it, and with late segments.

The store is written by the real daemon (Parquet segments, as in the compose stack); the
rollup is gravixd's own, crashed by a store that fails on chosen operations (the crash
points of test_rollup.py); the view is the Trino view from deploy/trino/gravix-tables.sql
run in DuckDB (tests/query_store.py). Also: a nanosecond timestamp reads back as documented,
and the partition filters docs/query.md gives work in pyarrow and DuckDB.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from faulty_store import FailingOpsStore, after_n
from query_store import HIVE_TYPES, duckdb_view, events, facts, land

from gravixd.rollup import rollup
from gravixd.stores import ObjectStore, open_store

# 2026-11-25T07:08:09.123456789Z: a nanosecond timestamp, in an hour "07" that needs its
# leading zero in some engines and not in others.
NS = 1_795_590_489_123_456_789
NS_HOUR = datetime(2026, 11, 25, 7, tzinfo=UTC)
SMALL_PARTS = 20_000  # bytes: several parts per hour, so a crash can fall between two


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A store the daemon wrote (several segments an hour), and a later run's late segments."""
    base = tmp_path_factory.mktemp("landed")
    store, late = base / "store", base / "late"
    land(
        base / "d1",
        store,
        {
            "facts": [facts("a", 700, first_ns=NS), facts("b", 700), facts("c", 600)],
            "events": [events("e", 500), events("f", 400)],
        },
        "--segment-max-events",
        "400",
    )
    land(base / "d2", late, {"facts": [facts("late", 150)], "events": [events("late", 90)]})
    return store, late


def expected_ids(stream: str) -> Counter[str]:
    if stream == "facts":
        rows = facts("a", 700) + facts("b", 700) + facts("c", 600)
    else:
        rows = events("e", 500) + events("f", 400)
    return Counter(r["trace_id"] for r in rows)


def late_ids(stream: str) -> Counter[str]:
    rows = facts("late", 150) if stream == "facts" else events("late", 90)
    return Counter(r["trace_id"] for r in rows)


def view_ids(store_dir: Path, stream: str) -> Counter[str]:
    rows = duckdb.sql(f"SELECT trace_id FROM ({duckdb_view(store_dir, stream)})").fetchall()
    return Counter(r[0] for r in rows)


def copy_segments(src: Path, dst: Path) -> list[Path]:
    copied = []
    for path in sorted(src.rglob("*.parquet")):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(target)
    return copied


async def roll(store_dir: Path, wrap: Callable[[ObjectStore], ObjectStore] = lambda s: s) -> bool:
    store = open_store(f"file://{store_dir}")
    try:
        report = await rollup(
            wrap(store),
            target_file_bytes=SMALL_PARTS,
            now=datetime.now(UTC),
            include_current_hour=True,  # the daemon just wrote the current hour
        )
    finally:
        await store.aclose()
    return report.ok


@pytest.mark.parametrize("stream", ["facts", "events"])
async def test_every_event_once_before_after_and_with_late_segments(
    landed: tuple[Path, Path], tmp_path: Path, stream: str
) -> None:
    store = tmp_path / "store"
    shutil.copytree(landed[0], store)
    assert len(list((store / stream).rglob("*.parquet"))) >= 2  # several segments

    assert view_ids(store, stream) == expected_ids(stream), "before the rollup"

    assert await roll(store)
    assert not list((store / stream).rglob("*.parquet"))  # sources deleted
    assert view_ids(store, stream) == expected_ids(stream), "after the rollup"

    late = copy_segments(landed[1] / stream, store / stream)
    assert late
    assert view_ids(store, stream) == expected_ids(stream) + late_ids(stream), "late segments"

    # The daemon uploads a segment again after its own crash (same key): not counted twice.
    assert await roll(store)
    shutil.copy2(landed[1] / late[0].relative_to(store), late[0])
    assert view_ids(store, stream) == expected_ids(stream) + late_ids(stream), "re-upload"
    assert await roll(store)
    assert not list((store / stream).rglob("*.parquet"))
    assert view_ids(store, stream) == expected_ids(stream) + late_ids(stream), "rolled again"


@pytest.mark.parametrize(
    ("op", "key_part", "n", "when"),
    [
        ("put", "/part-", 1, "after the first part, before the second"),
        ("put", "_manifest-", 0, "after the parts, before the manifest"),
        ("put", "/batch-", 0, "after the manifest, before the commit record"),
        ("delete", "facts/dt=", 0, "after the commit record, before any source is deleted"),
        ("delete", "facts/dt=", 2, "half way through deleting the sources"),
    ],
)
async def test_every_event_once_when_the_rollup_crashes_half_way(
    landed: tuple[Path, Path], tmp_path: Path, op: str, key_part: str, n: int, when: str
) -> None:
    store = tmp_path / "store"
    shutil.copytree(landed[0], store)

    crashed = await roll(store, lambda s: FailingOpsStore(s, after_n(op, key_part, n)))
    assert not crashed, when
    assert view_ids(store, "facts") == expected_ids("facts"), when

    assert await roll(store)  # the next run finishes the hour
    assert view_ids(store, "facts") == expected_ids("facts"), f"then rolled: {when}"
    assert not list((store / "facts").rglob("*.parquet"))


def test_a_nanosecond_timestamp_reads_back_as_documented(landed: tuple[Path, Path]) -> None:
    store = landed[0]
    # pyarrow: timestamp[ns, tz=UTC], every digit kept.
    table = ds.dataset(store / "facts", format="parquet", partitioning="hive").to_table(
        filter=ds.field("trace_id") == "a-000000"
    )
    assert table.schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert table.column("timestamp").cast(pa.int64()).to_pylist() == [NS]
    # DuckDB: TIMESTAMP WITH TIME ZONE at nanoseconds; epoch_ns gives the value back.
    kind, value = duckdb.sql(
        f'SELECT typeof("timestamp"), epoch_ns("timestamp") FROM read_parquet('
        f"'{store}/facts/*/*/*.parquet', hive_partitioning = true) WHERE trace_id = 'a-000000'"
    ).fetchall()[0]
    assert (kind, value) == ("TIMESTAMPTZ_NS", NS)


def test_the_partition_filters_of_the_docs_work(landed: tuple[Path, Path]) -> None:
    store = landed[0]
    segment = next((store / "facts").rglob("*.parquet"))
    dt, hour = segment.parent.parent.name[3:], segment.parent.name[5:]  # '2026-…', '07'
    in_hour = len(
        duckdb.sql(f"SELECT trace_id FROM read_parquet('{segment.parent}/*.parquet')").fetchall()
    )
    glob = f"{store}/facts/*/*/*.parquet"

    # pyarrow: dt a string, hour an int32.
    dataset = ds.dataset(store / "facts", format="parquet", partitioning="hive")
    assert dataset.schema.field("dt").type == pa.string()
    assert dataset.schema.field("hour").type == pa.int32()
    filtered = dataset.to_table(filter=(ds.field("dt") == dt) & (ds.field("hour") == int(hour)))
    assert filtered.num_rows == in_hour

    # DuckDB: hive_types fixes the types whatever the hours (else '07' VARCHAR, '14' BIGINT).
    typed = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true, "
        f"hive_types = {HIVE_TYPES}) WHERE dt = DATE '{dt}' AND hour = {int(hour)}"
    ).fetchall()
    assert typed == [(in_hour,)]
    cast = duckdb.sql(
        f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true) "
        f"WHERE dt = DATE '{dt}' AND CAST(hour AS INTEGER) = {int(hour)}"
    ).fetchall()
    assert cast == [(in_hour,)]


async def test_the_rollup_makes_every_table_location_exist(tmp_path: Path) -> None:
    # Trino's CREATE TABLE refuses an external location that does not exist yet: the rollup
    # keeps a hidden marker in each of its locations from its first run on.
    store = tmp_path / "store"
    store.mkdir()
    assert await roll(store)  # nothing to roll up yet
    for prefix in ("rollup", "rollup-commits"):
        for stream in ("facts", "events"):
            (marker,) = (store / prefix / stream).iterdir()
            assert marker.name.startswith("_")  # hidden from Trino, pyarrow, DuckDB globs
