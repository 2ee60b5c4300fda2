"""`gravixd rollup`: rows preserved, idempotent, crash-safe, readable as one Hive dataset."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import trio
from faulty_store import FailingOpsStore, after_n
from rollup_data import (
    arrow_file_bytes,
    parquet_bytes,
    segment_id,
    segment_key,
    table_for,
)

from gravixd import rollup as rollup_mod
from gravixd.rollup import RollupReport, rollup, run_rollup_schedule
from gravixd.schema import STREAMS
from gravixd.stores import ObjectStore, open_store

H20 = datetime(2026, 11, 25, 20, tzinfo=UTC)
H21 = H20 + timedelta(hours=1)
H23 = H20 + timedelta(hours=3)
NOW = H23 + timedelta(minutes=30)  # hour 23 is still open
TARGET = 256 * 1024 * 1024


@pytest.fixture(params=["memory", "local"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    url = "memory://" if request.param == "memory" else f"file://{tmp_path / 'store'}"
    s = open_store(url)
    yield s
    await s.aclose()


async def put_segments(
    store: ObjectStore,
    stream: str,
    hour: datetime,
    rows_per_segment: list[int],
    *,
    first_row: int = 0,
    first_n: int = 0,
    ext: str = "arrow",
) -> pa.Table:
    """Put segments of the given sizes; return all their rows in segment-id order."""
    tables = []
    row = first_row
    for n, rows in enumerate(rows_per_segment, start=first_n):
        table = table_for(stream, hour, row, rows)
        body = arrow_file_bytes(table) if ext == "arrow" else parquet_bytes(table)
        await store.put(segment_key(stream, hour, segment_id(hour, n), ext), body)
        tables.append(table)
        row += rows
    return pa.concat_tables(tables)


async def rolled_rows(store: ObjectStore, stream: str, hour: datetime) -> pa.Table:
    prefix = f"rollup/{stream}/dt={hour:%Y-%m-%d}/hour={hour:%H}/"
    tables = []
    for key in await store.list(prefix):
        if key.endswith(".parquet"):
            tables.append(pq.read_table(pa.BufferReader(await store.get(key))))
    return pa.concat_tables(tables) if tables else STREAMS[stream].empty_table()


def sources(keys: list[str]) -> list[str]:
    return [k for k in keys if not k.startswith(("rollup/", "rollup-commits/"))]


async def test_rows_and_contents_are_preserved(store: ObjectStore) -> None:
    facts20 = await put_segments(store, "facts", H20, [1000, 10, 2500])
    facts21 = await put_segments(store, "facts", H21, [700])
    events20 = await put_segments(store, "events", H20, [300, 300])

    report = await rollup(store, target_file_bytes=TARGET, now=NOW)

    assert report.ok, report.errors
    assert report.rows == 1000 + 10 + 2500 + 700 + 600
    assert [(h.stream, h.hour, h.status) for h in report.hours] == [
        ("facts", 20, "rolled"),
        ("facts", 21, "rolled"),
        ("events", 20, "rolled"),
    ]
    assert (await rolled_rows(store, "facts", H20)).equals(facts20)
    assert (await rolled_rows(store, "facts", H21)).equals(facts21)
    assert (await rolled_rows(store, "events", H20)).equals(events20)
    assert sources(await store.list()) == []  # sources removed after the commit
    assert "rollup/facts/dt=2026-11-25/hour=20/part-00000.parquet" in await store.list()


async def test_parts_are_zstd_parquet_of_about_the_target_size(store: ObjectStore) -> None:
    facts = await put_segments(store, "facts", H20, [4000] * 5)
    target = 40_000
    report = await rollup(store, target_file_bytes=target, now=NOW)

    parts = [k for k in await store.list("rollup/") if k.endswith(".parquet")]
    assert len(parts) >= 3
    assert parts == [
        f"rollup/facts/dt=2026-11-25/hour=20/part-{i:05d}.parquet" for i in range(len(parts))
    ]
    for key in parts[:-1]:  # each closed at the first row group reaching the target
        data = await store.get(key)
        assert target <= len(data) < 3 * target
        meta = pq.read_metadata(pa.BufferReader(data))
        assert meta.row_group(0).column(0).compression == "ZSTD"
    assert report.parts_written == len(parts)
    assert (await rolled_rows(store, "facts", H20)).equals(facts)


async def test_a_rerun_changes_nothing(store: ObjectStore) -> None:
    await put_segments(store, "facts", H20, [500, 500])
    await rollup(store, target_file_bytes=TARGET, now=NOW)
    before = {k: await store.get(k) for k in await store.list()}

    report = await rollup(store, target_file_bytes=TARGET, now=NOW)

    assert report.hours == []  # no sources left: nothing even to look at
    assert {k: await store.get(k) for k in await store.list()} == before


async def test_the_open_hour_is_skipped_unless_asked(store: ObjectStore) -> None:
    await put_segments(store, "facts", H23, [10])
    report = await rollup(store, target_file_bytes=TARGET, now=NOW)
    assert (report.hours, report.hours_skipped_open) == ([], 1)
    assert len(sources(await store.list())) == 1

    report = await rollup(store, target_file_bytes=TARGET, now=NOW, include_current_hour=True)
    assert report.rows == 10


async def test_since_and_until_select_hours(store: ObjectStore) -> None:
    await put_segments(store, "facts", H20, [5])
    await put_segments(store, "facts", H21, [6])
    await put_segments(store, "facts", H21 + timedelta(hours=1), [7])
    report = await rollup(
        store,
        target_file_bytes=TARGET,
        now=NOW,
        since=H21 + timedelta(minutes=30),  # the hour containing it is included
        until=H21 + timedelta(hours=1),  # exclusive
    )
    assert [(h.hour, h.rows) for h in report.hours] == [(21, 6)]


async def test_keep_sources_leaves_them_and_never_rolls_them_twice(store: ObjectStore) -> None:
    facts = await put_segments(store, "facts", H20, [100, 200])
    await rollup(store, target_file_bytes=TARGET, now=NOW, keep_sources=True)
    assert len(sources(await store.list())) == 2

    report = await rollup(store, target_file_bytes=TARGET, now=NOW, keep_sources=True)
    assert [h.status for h in report.hours] == ["up-to-date"]
    assert (await rolled_rows(store, "facts", H20)).equals(facts)

    # A later run without the option removes the covered sources, still no new parts.
    report = await rollup(store, target_file_bytes=TARGET, now=NOW)
    assert (report.sources_deleted, report.parts_written) == (2, 0)
    assert (await rolled_rows(store, "facts", H20)).equals(facts)


async def test_late_segments_become_additional_parts(store: ObjectStore) -> None:
    first = await put_segments(store, "facts", H20, [100])
    await rollup(store, target_file_bytes=TARGET, now=NOW)
    late = await put_segments(store, "facts", H20, [50], first_row=100, first_n=1)

    report = await rollup(store, target_file_bytes=TARGET, now=NOW)

    assert [(h.status, h.batch, h.rows) for h in report.hours] == [("rolled", 1, 50)]
    assert report.hours[0].parts_written == [
        "rollup/facts/dt=2026-11-25/hour=20/part-00001.parquet"
    ]
    assert (await rolled_rows(store, "facts", H20)).equals(pa.concat_tables([first, late]))


async def test_a_segment_uploaded_again_after_rollup_is_not_duplicated(store: ObjectStore) -> None:
    # The daemon crashed after its upload and before deleting its spool copy: on restart it
    # uploads the same segment (same id, same key) again.
    facts = await put_segments(store, "facts", H20, [100])
    await rollup(store, target_file_bytes=TARGET, now=NOW)
    await put_segments(store, "facts", H20, [100])

    report = await rollup(store, target_file_bytes=TARGET, now=NOW)

    assert [(h.status, h.sources_deleted, h.rows) for h in report.hours] == [("finished", 1, 0)]
    assert (await rolled_rows(store, "facts", H20)).equals(facts)


async def test_parquet_segments_are_rolled_too(store: ObjectStore) -> None:
    arrow = await put_segments(store, "facts", H20, [100])
    parquet = await put_segments(store, "facts", H20, [80], first_row=100, first_n=1, ext="parquet")
    await rollup(store, target_file_bytes=TARGET, now=NOW)
    assert (await rolled_rows(store, "facts", H20)).equals(pa.concat_tables([arrow, parquet]))


async def test_a_bad_segment_fails_its_hour_only_and_deletes_nothing(store: ObjectStore) -> None:
    await put_segments(store, "facts", H20, [10])
    await store.put(segment_key("facts", H20, segment_id(H20, 9)), b"not arrow at all")
    events = table_for("events", H20, 0, 5)  # events rows under the facts stream
    await store.put(segment_key("facts", H20, segment_id(H20, 8)), arrow_file_bytes(events))
    facts21 = await put_segments(store, "facts", H21, [20])

    report = await rollup(store, target_file_bytes=TARGET, now=NOW)

    assert [(h.hour, h.status) for h in report.hours] == [(20, "failed"), (21, "rolled")]
    assert "schema" in report.hours[0].error
    assert len(sources(await store.list("facts/dt=2026-11-25/hour=20/"))) == 3
    assert await store.list("rollup/facts/dt=2026-11-25/hour=20/") == []
    assert (await rolled_rows(store, "facts", H21)).equals(facts21)


# --- crashes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "key_part", "n", "what"),
    [
        ("delete", "facts/dt=", 0, "after the manifest, before any source is deleted"),
        ("delete", "facts/dt=", 2, "half way through deleting sources"),
        ("put", "_manifest-", 0, "after the parts, before the manifest"),
        ("put", "part-", 1, "after the first part, before the second"),
        ("get", "part-", 0, "while reading a part back"),
    ],
)
async def test_a_crash_half_way_leaves_no_duplicates_after_the_next_run(
    store: ObjectStore, op: str, key_part: str, n: int, what: str
) -> None:
    facts = await put_segments(store, "facts", H20, [3000, 3000, 3000, 3000])
    faulty = FailingOpsStore(store, after_n(op, key_part, n))

    crashed = await rollup(faulty, target_file_bytes=60_000, now=NOW, streams=("facts",))
    assert not crashed.ok, what

    report = await rollup(store, target_file_bytes=60_000, now=NOW, streams=("facts",))

    assert report.ok, report.errors
    assert (await rolled_rows(store, "facts", H20)).equals(facts), what
    assert sources(await store.list()) == []
    manifests = [k for k in await store.list("rollup/") if "_manifest-" in k]
    assert len(manifests) == 1  # one batch: the crashed one, or its redo


# --- readers ------------------------------------------------------------------------------


async def test_output_reads_as_one_hive_dataset_in_pyarrow_and_duckdb(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    await put_segments(store, "facts", H20, [1000, 500])
    await put_segments(store, "facts", H21, [250])
    await put_segments(store, "facts", H21 + timedelta(days=1), [125])
    await rollup(store, target_file_bytes=30_000, now=NOW + timedelta(days=2))
    root = tmp_path / "rollup" / "facts"

    dataset = ds.dataset(root, format="parquet", partitioning="hive")
    assert {"dt", "hour"} <= set(dataset.schema.names)
    table = dataset.to_table(columns=["dt", "hour", "status_code"])
    counts = table.group_by(["dt", "hour"]).aggregate([("status_code", "count")])
    assert sorted(counts.to_pylist(), key=lambda r: (str(r["dt"]), r["hour"])) == [
        {"dt": "2026-11-25", "hour": 20, "status_code_count": 1500},
        {"dt": "2026-11-25", "hour": 21, "status_code_count": 250},
        {"dt": "2026-11-26", "hour": 21, "status_code_count": 125},
    ]

    rows = duckdb.sql(
        f"SELECT CAST(dt AS VARCHAR) AS dt, hour, count(*) AS n, count(DISTINCT trace_id) AS ids "
        f"FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true) "
        "GROUP BY ALL ORDER BY dt, hour"
    ).fetchall()
    assert rows == [
        ("2026-11-25", 20, 1500, 1500),
        ("2026-11-25", 21, 250, 250),
        ("2026-11-26", 21, 125, 125),
    ]


# --- the schedule and the command line ----------------------------------------------------


async def test_the_schedule_rolls_up_every_interval() -> None:
    store = open_store("memory://")
    await put_segments(store, "facts", H20, [10])
    reports: list[RollupReport] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_rollup_schedule(
                store,
                0.01,
                target_file_bytes=TARGET,
                clock=lambda: NOW,
                on_report=reports.append,
                task_status=task_status,
            )
        )
        with trio.fail_after(10):
            while len(reports) < 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert reports[0].rows == 10 and reports[1].rows == 0


def test_cli_rolls_up_a_file_store_and_prints_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("GRAVIXD_")]:
        monkeypatch.delenv(name)
    store = open_store(f"file://{tmp_path}")
    # A closed hour, whatever today's date (H20 is in the future for a clock set back).
    closed = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=30)
    trio.run(put_segments, store, "facts", closed, [42])

    code = rollup_mod.main(["--store-url", f"file://{tmp_path}", "--stream", "facts", "--json"])

    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["ok"], out["rows"], out["parts_written"]) == (True, 42, 1)
    assert list((tmp_path / "facts").rglob("*.arrow")) == []


def test_cli_names_a_bad_flag_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = rollup_mod.main(["--store-url", "gopher://x"])
    assert code == 2
    assert "gopher://x" in capsys.readouterr().err
