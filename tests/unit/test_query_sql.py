"""The Trino DDL (deploy/trino/*.sql) parses as Trino SQL and cannot drift from gravixd/schema.py.

Trino is not available here, so sqlglot (Trino dialect) parses the files, and every table's
columns, types, location and partitions are held against the Arrow schemas, the rollup's
layout and the catalog's timestamp precision; the views are held against the tables.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from gravixd.rollup import COMMITS_PREFIX, ROLLUP_PREFIX
from gravixd.schema import COMMITS_SCHEMA, STREAMS, TIMESTAMP_TYPE

ROOT = Path(__file__).resolve().parents[2]
TRINO = ROOT / "deploy" / "trino"
# The compose stack's store URL (docker-compose.yml: GRAVIXD_STORE_URL); the chart renders
# the same file with its own location in place of this one.
STORE = "s3://gravix/events"
PRECISION_DIGITS = {"MILLISECONDS": 3, "MICROSECONDS": 6, "NANOSECONDS": 9}


def trino_type(arrow: pa.DataType, precision: int) -> str:
    """The Trino (Hive connector) type a column of this Arrow type is declared as."""
    if pa.types.is_timestamp(arrow):
        return f"TIMESTAMP({precision})"
    if pa.types.is_map(arrow):
        key, item = (trino_type(t, precision) for t in (arrow.key_type, arrow.item_type))
        return f"MAP({key}, {item})"
    simple = {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT"}
    simple[pa.float64()] = "DOUBLE"
    return simple[arrow]


def catalog_properties() -> dict[str, str]:
    props = {}
    for line in (TRINO / "catalog" / "gravix.properties").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def statements(name: str) -> list[exp.Expression]:
    parsed = sqlglot.parse((TRINO / name).read_text(), read="trino")
    return [s for s in parsed if s is not None]


def tables() -> dict[str, exp.Create]:
    return {
        s.this.this.name: s
        for s in statements("gravix-tables.sql")
        if isinstance(s, exp.Create) and s.args["kind"] == "TABLE"
    }


def views() -> dict[str, exp.Create]:
    return {
        s.this.name: s
        for s in statements("gravix-tables.sql")
        if isinstance(s, exp.Create) and s.args["kind"] == "VIEW"
    }


def expected_tables() -> dict[str, tuple[pa.Schema, str]]:
    """Table name -> (schema of its files, location), from gravixd's own constants."""
    expected: dict[str, tuple[pa.Schema, str]] = {}
    for stream, schema in STREAMS.items():
        expected[stream] = (schema, f"{STORE}/{stream}")
        expected[f"{stream}_rollup"] = (schema, f"{STORE}/{ROLLUP_PREFIX}/{stream}")
        expected[f"{stream}_commits"] = (COMMITS_SCHEMA, f"{STORE}/{COMMITS_PREFIX}/{stream}")
    return expected


def test_every_stream_has_its_live_rollup_and_commit_tables() -> None:
    assert set(tables()) == set(expected_tables())
    assert set(views()) == {f"{stream}_all" for stream in STREAMS}
    for create in [*tables().values(), *views().values()]:
        table = create.this.this if create.args["kind"] == "TABLE" else create.this
        assert (table.catalog, table.db) == ("gravix", "events"), create.sql("trino")[:80]


def test_the_timestamp_precision_is_the_catalogs_and_gravixds() -> None:
    # Trino's Hive connector refuses a timestamp column declared at any precision other
    # than hive.timestamp-precision; gravixd writes nanoseconds.
    precision = PRECISION_DIGITS[catalog_properties()["hive.timestamp-precision"]]
    assert TIMESTAMP_TYPE.unit == "ns" and TIMESTAMP_TYPE.tz == "UTC"
    assert precision == 9


@pytest.mark.parametrize("name", sorted(expected_tables()))
def test_columns_types_location_and_partitions_match_gravixd(name: str) -> None:
    precision = PRECISION_DIGITS[catalog_properties()["hive.timestamp-precision"]]
    schema, location = expected_tables()[name]
    create = tables()[name]
    declared = [(c.name, c.args["kind"].sql("trino")) for c in create.this.expressions]
    wanted = [(f.name, trino_type(f.type, precision)) for f in schema]
    assert declared == [*wanted, ("dt", "VARCHAR"), ("hour", "VARCHAR")]

    props = {p.sql("trino") for p in create.args["properties"].expressions}
    assert props == {
        f"external_location='{location}'",
        "format='PARQUET'",
        "PARTITIONED_BY=ARRAY['dt', 'hour']",
    }


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_the_all_view_reads_committed_parts_and_uncovered_segments(stream: str) -> None:
    view = views()[f"{stream}_all"]
    union = view.expression
    assert isinstance(union, exp.Union) and not union.args.get("distinct")  # UNION ALL
    columns = [*STREAMS[stream].names, "dt", "hour"]
    rollup_side, live_side = union.left, union.right
    for side, table, role, negated in (
        (rollup_side, f"{stream}_rollup", "part", False),
        (live_side, stream, "source", True),
    ):
        assert [c.alias_or_name for c in side.expressions] == columns
        assert side.args["from_"].this.name == table
        where = side.args["where"].this
        if negated:
            assert isinstance(where, exp.Not)
            where = where.this
        assert isinstance(where, exp.Exists)
        sub = where.this
        assert sub.args["from_"].this.name == f"{stream}_commits"
        condition = sub.args["where"].sql("trino")
        assert f"c.role = '{role}'" in condition
        assert "c.dt = " in condition and "c.hour = " in condition
        assert "REGEXP_EXTRACT(" in condition and '"$path"' in condition


def test_partition_sync_covers_every_table() -> None:
    calls = [s.sql("trino") for s in statements("sync-partitions.sql")]
    synced = {re.search(r"'events', '([a-z_]+)'", c)[1] for c in calls}  # type: ignore[index]
    assert synced == set(expected_tables())
    assert all("'FULL'" in c for c in calls)  # FULL also drops hours the rollup emptied


def test_compose_writes_where_the_tables_read() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"GRAVIXD_STORE_URL: {STORE}" in compose
    assert "GRAVIXD_SEGMENT_FORMAT: parquet" in compose  # Trino reads Parquet, not Arrow IPC
