"""gravixd.rollup.plan, sans I/O: which hours compact, names, orphans by age, hour plans."""

from __future__ import annotations

from datetime import UTC, datetime

from gravixd.rollup.plan import (
    Hour,
    Manifest,
    PartEntry,
    TableFile,
    compacted_part_name,
    orphans,
    plan_compaction,
    plan_hour,
    written_at_unix_seconds,
)

NOW = 1_796_000_000.0  # in hour 498888
CURRENT_HOUR = int(NOW // 3600)


def _file(hour: int, name: str) -> TableFile:
    return TableFile(hour=hour, location=f"file:///s/{name}", size_bytes=10, rows=1)


def test_only_closed_hours_with_several_files_compact() -> None:
    files = [
        _file(CURRENT_HOUR, "a"), _file(CURRENT_HOUR, "b"),  # still being written
        _file(CURRENT_HOUR - 1, "c"),  # one file: nothing to gain
        _file(CURRENT_HOUR - 2, "d"), _file(CURRENT_HOUR - 2, "e"),
    ]  # fmt: skip
    plan = plan_compaction(files, now_unix_seconds=NOW)
    assert list(plan) == [CURRENT_HOUR - 2]
    assert [f.location for f in plan[CURRENT_HOUR - 2]] == ["file:///s/d", "file:///s/e"]


def test_part_names_carry_their_time_and_inputs() -> None:
    first = compacted_part_name(1_796_000_000, ["b", "a"], 0)
    assert first == compacted_part_name(1_796_000_000, ["a", "b"], 0)  # order-free
    assert first != compacted_part_name(1_796_000_000, ["a", "c"], 0)
    assert written_at_unix_seconds(first) == 1_796_000_000
    assert written_at_unix_seconds("01KC0000000000000000000001-2026120705.parquet") is not None
    assert written_at_unix_seconds("someone-elses-file.parquet") is None


def test_orphans_are_unreferenced_and_older_than_the_retention() -> None:
    week = 7 * 86400.0
    old = f"iceberg/gravix/facts/data/h/{compacted_part_name(int(NOW - week - 60), ['x'], 0)}"
    young = f"iceberg/gravix/facts/data/h/{compacted_part_name(int(NOW - 60), ['x'], 0)}"
    referenced_old = (
        f"iceberg/gravix/facts/data/h/{compacted_part_name(int(NOW - week - 60), ['y'], 0)}"
    )
    unknown = "iceberg/gravix/facts/data/h/by-another-tool.parquet"
    found = orphans(
        [old, young, referenced_old, unknown],
        {referenced_old},
        now_unix_seconds=NOW,
        retention_seconds=week,
    )
    assert found == [old]


def test_an_hour_plan_finishes_a_crashed_run() -> None:
    hour = Hour("facts", datetime(2026, 12, 7, 5, tzinfo=UTC))
    done = Manifest(
        version=1, stream="facts", dt="2026-12-07", hour=5, batch=0,
        sources=["facts/dt=2026-12-07/hour=05/01A.parquet"], source_rows=3,
        parts=[PartEntry("rollup/facts/dt=2026-12-07/hour=05/part-00000.parquet", 3, 9, "h")],
    )  # fmt: skip
    existing = [
        "rollup/facts/dt=2026-12-07/hour=05/_manifest-00000.json",
        "rollup/facts/dt=2026-12-07/hour=05/part-00000.parquet",
        "rollup/facts/dt=2026-12-07/hour=05/part-00001.parquet",  # a crashed batch's part
    ]
    sources = [
        "facts/dt=2026-12-07/hour=05/01A.parquet",  # covered: its delete did not happen
        "facts/dt=2026-12-07/hour=05/01C.arrow",
        "facts/dt=2026-12-07/hour=05/01B.parquet",
    ]
    plan = plan_hour(hour, existing, [done], [], sources)
    assert plan.missing_commit_records == [done]
    assert plan.orphan_parts == ["rollup/facts/dt=2026-12-07/hour=05/part-00001.parquet"]
    assert plan.covered_sources == ["facts/dt=2026-12-07/hour=05/01A.parquet"]
    assert plan.new_sources == [
        "facts/dt=2026-12-07/hour=05/01B.parquet",
        "facts/dt=2026-12-07/hour=05/01C.arrow",
    ]
    assert (plan.batch, plan.first_part) == (1, 1)
