"""The two Iceberg tables: their schema, partition spec and location.

Schema: the columns of `gravixd.schema`, with timestamps in microseconds (Iceberg format v2,
which pyiceberg writes, has no nanosecond type). Partition spec: `hour(timestamp)`, named
`timestamp_hour`: a filter on event time plans only the files of the hours it names. Each
table lives at `{store}/iceberg/{namespace}/{stream}` (metadata/, and data/ for the files
gravixd writes for the table itself: splits of segments that span event hours, rollup
parts); a segment that lies in one event hour is added where it was uploaded, no copy.

Creating is idempotent and race-safe (several daemons at once): a table another process
created first is loaded. This module never writes data.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pyarrow as pa

from ..schema import STREAMS, TIMESTAMP_TYPE
from ..stores import ObjectStore

PARTITION_FIELD = "timestamp_hour"
TABLE_TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


def table_arrow_schema(stream: str) -> pa.Schema:
    """The stream's Arrow schema as the table holds it: timestamps in microseconds."""
    schema: pa.Schema = STREAMS[stream]
    index = schema.get_field_index("timestamp")
    assert schema.field(index).type == TIMESTAMP_TYPE
    return schema.set(index, pa.field("timestamp", TABLE_TIMESTAMP_TYPE))


def store_root_location(store: ObjectStore) -> str:
    """The store's root as an absolute URL Iceberg readers resolve (file:///abs, s3://b/p).

    Raises:
        ValueError: the store is neither local nor S3 (a memory:// store has no files).
    """
    root = getattr(store, "root", None)
    if root is not None:
        return f"file://{root}"
    settings = getattr(store, "settings", None)
    if settings is not None and hasattr(settings, "bucket"):
        return f"s3://{settings.bucket}/{settings.prefix}".rstrip("/")
    raise ValueError(f"Iceberg tables need a file:// or s3:// store, got {store.url}")


def object_location(store: ObjectStore, key: str) -> str:
    """The absolute location of the object stored under `key`."""
    return f"{store_root_location(store)}/{key}"


def table_prefix(namespace: str, stream: str) -> str:
    """The table's key prefix in the store (its location, relative to the store root)."""
    return f"iceberg/{namespace}/{stream}"


def table_location(store: ObjectStore, namespace: str, stream: str) -> str:
    return object_location(store, table_prefix(namespace, stream))


def key_of(store: ObjectStore, location: str) -> str | None:
    """The store key of an absolute location, or None when it lies outside the store."""
    root = store_root_location(store) + "/"
    return location[len(root) :] if location.startswith(root) else None


def _iceberg_schema(stream: str) -> Any:
    from pyiceberg.io.pyarrow import _ConvertToIcebergWithoutIDs, visit_pyarrow
    from pyiceberg.schema import assign_fresh_schema_ids

    return assign_fresh_schema_ids(
        visit_pyarrow(table_arrow_schema(stream), _ConvertToIcebergWithoutIDs())
    )


def partition_spec(schema: Any) -> Any:
    """hour(timestamp): one partition per event hour."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import HourTransform

    source_id = schema.find_field("timestamp").field_id
    return PartitionSpec(
        PartitionField(
            source_id=source_id, field_id=1000, transform=HourTransform(), name=PARTITION_FIELD
        )
    )


def ensure_table(catalog: Any, namespace: str, stream: str, location: str) -> Any:
    """Load `{namespace}.{stream}`, creating it (and the namespace) when absent."""
    from pyiceberg.exceptions import (
        NamespaceAlreadyExistsError,
        NoSuchTableError,
        TableAlreadyExistsError,
    )

    identifier = (namespace, stream)
    try:
        return catalog.load_table(identifier)
    except NoSuchTableError:
        pass
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace(namespace)
    schema = _iceberg_schema(stream)
    try:
        return catalog.create_table(
            identifier,
            schema=schema,
            location=location,
            partition_spec=partition_spec(schema),
            properties={
                "format-version": "2",
                "write.parquet.compression-codec": "zstd",
                # Old metadata JSON files go as new ones are written (Iceberg's own upkeep).
                "write.metadata.delete-after-commit.enabled": "true",
                "write.metadata.previous-versions-max": "100",
            },
        )
    except TableAlreadyExistsError:  # another daemon was first
        return catalog.load_table(identifier)
