"""A sealed Parquet segment as the Iceberg data files that hold its rows.

A data file lies in one partition (one event hour), and a segment is cut by receipt hour:
most segments hold one event hour and are added as they are, where they were uploaded (no
copy). A segment whose events span several hours (late or backfilled events, clocks that
disagree) is split into one file per event hour, written under the table's `data/` folder
with deterministic names (`{segment_id}-{YYYYMMDDHH}.parquet`), so a retry overwrites the
same objects. Statistics (row counts, column bounds, the partition value) come from the
Parquet footer, read locally: nothing is read back from the store.

Blocking; never touches the catalog.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .tables import PARTITION_FIELD, TABLE_TIMESTAMP_TYPE, table_prefix

MICROS_PER_HOUR = 3_600_000_000


@dataclass(frozen=True)
class PlannedFile:
    """One data file of a segment: where it is locally, and its key in the store."""

    local_path: Path
    key: str
    hour: int  # event hour, hours since the epoch (Iceberg's hour transform)
    needs_upload: bool  # a split written here; False: the uploaded segment itself


def hours_of(path: Path) -> tuple[int, int]:
    """The first and last event hour in a Parquet segment, from its footer statistics."""
    metadata = pq.read_metadata(path)
    arrow_schema = metadata.schema.to_arrow_schema()
    column = arrow_schema.get_field_index("timestamp")
    # The raw int64 statistics, in the column's unit (as_py would need pandas for ns).
    per_micro = {"ns": 1000, "us": 1, "ms": 1 / 1000, "s": 1 / 1_000_000}[
        arrow_schema.field(column).type.unit
    ]
    lows, highs = [], []
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(column).statistics
        if stats is None or not stats.has_min_max:
            raise ValueError(f"{path} has no timestamp statistics")
        lows.append(int(stats.min_raw // per_micro))
        highs.append(int(stats.max_raw // per_micro))
    return min(lows) // MICROS_PER_HOUR, max(highs) // MICROS_PER_HOUR


def hour_label(hour: int) -> str:
    """`2026-12-07-05`: Iceberg's text form of an hour partition value."""
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%d-%H")


def split_key(namespace: str, stream: str, segment_id: str, hour: int) -> str:
    stamp = datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y%m%d%H")
    return (
        f"{table_prefix(namespace, stream)}/data/{PARTITION_FIELD}={hour_label(hour)}/"
        f"{segment_id}-{stamp}.parquet"
    )


def plan_segment_files(
    path: Path, key: str, namespace: str, stream: str, segment_id: str, work_dir: Path
) -> list[PlannedFile]:
    """The data files for one sealed segment (`path`, uploaded under `key`); writes the
    per-hour splits into `work_dir` when its events span hours."""
    first, last = hours_of(path)
    timestamp_type = pq.read_schema(path).field("timestamp").type
    if first == last and timestamp_type == TABLE_TIMESTAMP_TYPE:
        return [PlannedFile(path, key, first, needs_upload=False)]
    # Several event hours, or nanoseconds (a segment sealed before the catalog was set):
    # rewritten as the table holds it, one file per hour.
    table = pq.read_table(path)
    stamps = table.column("timestamp").cast(TABLE_TIMESTAMP_TYPE, safe=False)  # truncates ns
    micros = pc.cast(stamps, pa.int64())
    hours = pc.divide(micros, MICROS_PER_HOUR)  # integer division floors for t >= 0
    planned = []
    for hour in sorted(set(hours.to_pylist())):
        part = table.filter(pc.equal(hours, hour))
        local = work_dir / f"{segment_id}-{hour}.parquet"
        write_table_file(part, local)
        planned.append(
            PlannedFile(local, split_key(namespace, stream, segment_id, hour), hour, True)
        )
    return planned


def write_table_file(table: pa.Table, path: Path) -> None:
    """Write Parquet the way the tables hold it (zstd, microsecond timestamps), durably."""
    table = table.cast(_with_micros(table.schema), safe=False)  # ns digits truncated
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)
    with open(tmp, "rb+") as written:
        os.fsync(written.fileno())
    os.replace(tmp, path)


def _with_micros(schema: pa.Schema) -> pa.Schema:
    index = schema.get_field_index("timestamp")
    return schema.set(index, pa.field("timestamp", TABLE_TIMESTAMP_TYPE))


def data_file(table_metadata: Any, local_path: Path, location: str) -> Any:
    """An Iceberg DataFile for the Parquet file at `local_path`, stored at `location`.

    Raises:
        ValueError: the file's columns do not fit the table's schema, or its rows span
            several event hours.
    """
    from pyiceberg.io.pyarrow import (
        _check_pyarrow_schema_compatible,
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat

    metadata = pq.read_metadata(local_path)
    schema = table_metadata.schema()
    _check_pyarrow_schema_compatible(
        schema, metadata.schema.to_arrow_schema(), format_version=table_metadata.format_version
    )
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=metadata,
        stats_columns=compute_statistics_plan(schema, table_metadata.properties),
        parquet_column_mapping=parquet_path_to_id_mapping(schema),
    )
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=location,
        file_format=FileFormat.PARQUET,
        partition=statistics.partition(table_metadata.spec(), schema),
        file_size_in_bytes=local_path.stat().st_size,
        sort_order_id=None,
        spec_id=table_metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )


def total_rows(paths: Sequence[Path]) -> int:
    return sum(pq.read_metadata(p).num_rows for p in paths)
