"""gravixd.iceberg.commit against a real pyiceberg SQL catalog (SQLite in a temp dir): a
commit that conflicts with another committer's is retried on the fresh table and never adds
a segment that committer added meanwhile (pyiceberg's own retry would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from gravixd.iceberg import commit as commit_module
from gravixd.iceberg.catalog import CatalogSettings, open_catalog
from gravixd.iceberg.commit import SegmentFiles, commit_segments, committed_segment_ids
from gravixd.iceberg.datafiles import plan_segment_files, write_table_file
from gravixd.iceberg.tables import ensure_table, object_location, table_location
from gravixd.schema import FACTS_SCHEMA
from gravixd.stores.local import LocalStore

HOUR_US = 3_600_000_000


def _segment(
    store: LocalStore, segment_id: str, trace_ids: list[str], hour: int = 490_000
) -> SegmentFiles:
    rows = pa.Table.from_pylist(
        [{"timestamp": (hour * HOUR_US + i) * 1000, "service": "s", "trace_id": t}
         for i, t in enumerate(trace_ids)],
        schema=FACTS_SCHEMA,
    )  # fmt: skip
    key = f"facts/dt=x/hour=00/{segment_id}.parquet"
    path = store.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table_file(rows, path)
    return SegmentFiles(segment_id, ((path, object_location(store, key)),))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Any, LocalStore]:
    store = LocalStore(tmp_path / "store")
    catalog = open_catalog(CatalogSettings(uri=f"sqlite:///{tmp_path}/catalog.db"))
    ensure_table(catalog, "gravix", "facts", table_location(store, "gravix", "facts"))
    return catalog, store


def _ids(catalog: Any) -> list[str]:
    return catalog.load_table(("gravix", "facts")).scan().to_arrow()["trace_id"].to_pylist()


def test_a_conflict_is_retried_without_adding_twice(
    setup: tuple[Any, LocalStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, store = setup
    x = _segment(store, "01KC0000000000000000000001", ["x1", "x2"])
    y = _segment(store, "01KC0000000000000000000002", ["y1"])
    stale = catalog.load_table(("gravix", "facts"))
    commit_segments(catalog.load_table(("gravix", "facts")), [x])  # the other committer
    real = commit_module.refresh_without_auto_retry
    calls = []

    def first_refresh_misses(table: Any) -> None:
        # The first attempt works from the stale table, as if the other commit landed
        # between this committer's history check and its commit.
        calls.append(table)
        if len(calls) > 1:
            real(table)
        else:
            from pyiceberg.table import TableProperties

            properties = {**table.metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}
            table.metadata = table.metadata.model_copy(update={"properties": properties})

    monkeypatch.setattr(commit_module, "refresh_without_auto_retry", first_refresh_misses)
    result = commit_segments(stale, [x, y], sleep=lambda _: None)
    assert result.conflicts == 1
    assert (result.added, result.already) == ([y.segment_id], [x.segment_id])
    assert sorted(_ids(catalog)) == ["x1", "x2", "y1"]
    assert committed_segment_ids(catalog.load_table(("gravix", "facts")).metadata) == {
        x.segment_id,
        y.segment_id,
    }


def test_a_segment_spanning_hours_becomes_one_file_per_hour(
    setup: tuple[Any, LocalStore], tmp_path: Path
) -> None:
    _, store = setup
    rows = pa.Table.from_pylist(
        [{"timestamp": ((490_000 + h) * HOUR_US + 5) * 1000 + 7, "service": "s", "trace_id": f"{h}"}
         for h in (0, 0, 2)],
        schema=FACTS_SCHEMA,
    )  # fmt: skip
    local = tmp_path / "segment.parquet"
    import pyarrow.parquet as pq

    pq.write_table(rows, local)  # nanoseconds, as a segment sealed without a catalog
    planned = plan_segment_files(
        local, "facts/k.parquet", "gravix", "facts", "01KC0000000000000000000003", tmp_path
    )
    assert [p.hour for p in planned] == [490_000, 490_002]
    assert all(p.needs_upload and "/data/timestamp_hour=" in p.key for p in planned)
    first = pq.read_table(planned[0].local_path)
    assert str(first.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert first.num_rows == 2
