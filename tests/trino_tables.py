"""Iceberg tables with gravixd's columns, written by pyiceberg directly, for the Trino tests
and bench/bench_trino.py: a pyiceberg SQL catalog on the test PostgreSQL, data on the test
SeaweedFS, partitioned by the hour of `timestamp` (microseconds: Iceberg v2).

Rows are generated here (deterministic per seed), so every test knows the exact answer its
query must give. Never used by gravixd itself.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from gravixd.schema import STREAMS

# Iceberg v2 (what pyiceberg writes) stores timestamps in microseconds.
ICEBERG_TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")


def iceberg_arrow_schema(stream: str) -> pa.Schema:
    """gravixd's Arrow schema of `stream` with microsecond timestamps."""
    schema = STREAMS[stream]
    index = schema.get_field_index("timestamp")
    return schema.set(index, schema.field(index).with_type(ICEBERG_TIMESTAMP_TYPE))


def sql_catalog(postgres: Any, seaweed: Any, name: str = "gravix") -> Any:
    """pyiceberg's SQL catalog on the test PostgreSQL, data files on the test SeaweedFS."""
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog(
        name,
        uri=postgres.sqlalchemy_uri,
        warehouse=f"s3://{seaweed.bucket}/warehouse",
        **{
            "s3.endpoint": seaweed.endpoint_url,
            "s3.region": seaweed.region,
            "s3.access-key-id": seaweed.access_key_id,
            "s3.secret-access-key": seaweed.secret_access_key,
            "s3.path-style-access": "true",
        },
    )


def create_table(catalog: Any, identifier: str, stream: str) -> Any:
    """A fresh table `identifier` (namespace.table) with `stream`'s columns, partitioned by
    hour(timestamp); an existing one of that name is dropped first."""
    from pyiceberg.transforms import HourTransform

    namespace = identifier.rsplit(".", 1)[0]
    catalog.create_namespace_if_not_exists(namespace)
    if catalog.table_exists(identifier):
        catalog.purge_table(identifier)
    table = catalog.create_table(identifier, schema=iceberg_arrow_schema(stream))
    with table.update_spec() as spec:
        spec.add_field("timestamp", HourTransform(), "timestamp_hour")
    return catalog.load_table(identifier)


def facts_rows(count: int, *, start: datetime, hours: int = 1, seed: int = 0) -> pa.Table:
    """`count` facts spread over `hours` hours from `start` (whole microseconds), services
    svc-0..svc-4, statuses 200/404/503, durations 0..100 ms."""
    rng = random.Random(seed)
    span_us = hours * 3600 * 1_000_000
    stamps = [start + timedelta(microseconds=rng.randrange(span_us)) for _ in range(count)]
    columns: dict[str, Any] = {
        "timestamp": pa.array(stamps, ICEBERG_TIMESTAMP_TYPE),
        "service": [f"svc-{rng.randrange(5)}" for _ in range(count)],
        "route": [f"/r/{rng.randrange(20)}" for _ in range(count)],
        "method": [rng.choice(("GET", "POST")) for _ in range(count)],
        "status_code": pa.array(
            [rng.choice((200, 200, 404, 503)) for _ in range(count)], pa.int32()
        ),
        "duration_ms": [rng.random() * 100 for _ in range(count)],
        "bytes_in": [rng.randrange(10_000) for _ in range(count)],
        "bytes_out": [rng.randrange(100_000) for _ in range(count)],
        "trace_id": [f"{rng.getrandbits(128):032x}" for _ in range(count)],
        "attributes": pa.array(
            [[("region", rng.choice(("eu", "us")))] for _ in range(count)],
            pa.map_(pa.string(), pa.string()),
        ),
    }
    return pa.table(columns, schema=iceberg_arrow_schema("facts"))


def events_rows(count: int, *, start: datetime, hours: int = 1, seed: int = 0) -> pa.Table:
    """`count` events spread over `hours` hours from `start`."""
    rng = random.Random(seed)
    span_us = hours * 3600 * 1_000_000
    stamps = [start + timedelta(microseconds=rng.randrange(span_us)) for _ in range(count)]
    columns: dict[str, Any] = {
        "timestamp": pa.array(stamps, ICEBERG_TIMESTAMP_TYPE),
        "service": [f"svc-{rng.randrange(5)}" for _ in range(count)],
        "kind": [rng.choice(("deploy", "login", "job")) for _ in range(count)],
        "severity": [rng.choice(("INFO", "WARN", "ERROR")) for _ in range(count)],
        "message": [f"message {i}" for i in range(count)],
        "trace_id": [f"{rng.getrandbits(128):032x}" for _ in range(count)],
        "attributes": pa.array(
            [[("user", f"u{rng.randrange(50)}")] for _ in range(count)],
            pa.map_(pa.string(), pa.string()),
        ),
    }
    return pa.table(columns, schema=iceberg_arrow_schema("events"))


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
