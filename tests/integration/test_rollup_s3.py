"""Rollup against a real S3 server (SeaweedFS): same guarantees, and the bucket's rollup tree
reads as one Hive-partitioned dataset straight from S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from rollup_data import arrow_file_bytes, segment_id, segment_key, table_for
from seaweed import SeaweedServer

from gravixd.rollup import rollup
from gravixd.stores.s3 import S3Store

pytestmark = pytest.mark.s3

H20 = datetime(2026, 11, 25, 20, tzinfo=UTC)
NOW = H20 + timedelta(hours=5)


async def test_rollup_on_s3_preserves_rows_and_reads_as_a_hive_dataset(
    s3_store: S3Store, seaweed: SeaweedServer
) -> None:
    tables = []
    for hour_offset in (0, 1):
        hour = H20 + timedelta(hours=hour_offset)
        for n in range(3):
            table = table_for("facts", hour, n * 1000, 1000)
            await s3_store.put(
                segment_key("facts", hour, segment_id(hour, n)), arrow_file_bytes(table)
            )
            tables.append(table)

    report = await rollup(s3_store, target_file_bytes=50_000, now=NOW)
    assert report.ok, report.errors
    assert report.rows == 6000
    again = await rollup(s3_store, target_file_bytes=50_000, now=NOW)
    assert (again.rows, again.parts_written, again.hours) == (0, 0, [])
    assert [
        k for k in await s3_store.list() if not k.startswith(("rollup/", "rollup-commits/"))
    ] == []

    s3fs = pa.fs.S3FileSystem(
        access_key=seaweed.access_key_id,
        secret_key=seaweed.secret_access_key,
        region=seaweed.region,
        endpoint_override=urlsplit(seaweed.endpoint_url).netloc,
        scheme="http",
        force_virtual_addressing=False,
    )
    root = f"{seaweed.bucket}/{s3_store.settings.prefix}rollup/facts"
    dataset = ds.dataset(root, filesystem=s3fs, format="parquet", partitioning="hive")
    got = dataset.to_table().sort_by([("timestamp", "ascending")])
    assert got.num_rows == 6000
    assert sorted(set(got["hour"].to_pylist())) == [20, 21]
    expected = pa.concat_tables(tables).sort_by([("timestamp", "ascending")])
    assert got.select(expected.schema.names).equals(expected)
