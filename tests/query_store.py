"""A real gravixd store for query tests, and the Trino views run in DuckDB.

`land` runs the real daemon (`python -m gravixd serve`, Parquet segments as in the compose
stack), posts events and stops it with SIGTERM (its drain seals and uploads). `duckdb_view`
takes the view from deploy/trino/gravix-tables.sql itself, parsed by sqlglot, and points each
`gravix.events.*` table at the files Trino would read (`read_parquet` of the table's location,
`"$path"` as DuckDB's `filename`), so the DuckDB tests run the Trino view's logic, not a copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlglot
from daemon import Daemon
from sqlglot import exp

from gravixd.rollup import COMMITS_PREFIX, ROLLUP_PREFIX
from gravixd.schema import COMMITS_SCHEMA, STREAMS

ROOT = Path(__file__).resolve().parents[1]
TABLES_SQL = ROOT / "deploy" / "trino" / "gravix-tables.sql"
# DuckDB types a hive partition from its values (hour '07' VARCHAR, but BIGINT when every
# hour read is like '14'): fix the types, as docs/query.md advises.
HIVE_TYPES = "{'dt': DATE, 'hour': INTEGER}"


def facts(tag: str, n: int, *, first_ns: int | None = None) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "service": f"svc-{i % 3}",
                "route": f"/r/{i % 4}",
                "method": ("GET", "POST")[i % 2],
                "status_code": (200, 201, 404, 500, 503)[i % 5],
                "duration_ms": (i * 7919) % 1000 / 10,
                "bytes_in": i * 3,
                "bytes_out": i * 11,
                "trace_id": f"{tag}-{i:06d}",
            }
        )
    if first_ns is not None and rows:
        rows[0]["timestamp_unix_nano"] = first_ns
    return rows


def events(tag: str, n: int) -> list[dict[str, Any]]:
    severities = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")
    return [
        {
            "service": f"svc-{i % 3}",
            "kind": ("deploy", "restart", "error")[i % 3],
            "severity": severities[i % len(severities)],
            "message": f"event {i}",
            "trace_id": f"{tag}-{i:06d}",
        }
        for i in range(n)
    ]


def land(
    workdir: Path, store_dir: Path, posts: dict[str, list[list[dict[str, Any]]]], *args: str
) -> None:
    """Post each stream's batches to a real daemon writing Parquet segments into `store_dir`,
    then stop it (SIGTERM: seal and upload everything acknowledged)."""
    with Daemon(
        workdir,
        "--segment-format",
        "parquet",
        "--store-url",
        f"file://{store_dir}",
        *args,
        store_url=f"file://{store_dir}",
    ) as daemon:
        for stream, batches in posts.items():
            for batch in batches:
                body = b"".join(json.dumps(row).encode() + b"\n" for row in batch)
                status, answer, _ = daemon.post(f"/v1/{stream}", body, "application/x-ndjson")
                assert (status, answer.get("accepted")) == (202, len(batch)), answer
        assert daemon.stop() == 0


def table_location(store_dir: Path, table: str) -> tuple[Path, list[str]]:
    """Where a gravix.events table's files are, and its columns (the DDL's layout)."""
    for stream, schema in STREAMS.items():
        if table == stream:
            return store_dir / stream, schema.names
        if table == f"{stream}_rollup":
            return store_dir / ROLLUP_PREFIX / stream, schema.names
        if table == f"{stream}_commits":
            return store_dir / COMMITS_PREFIX / stream, COMMITS_SCHEMA.names
    raise KeyError(table)


def _trino_view(stream: str) -> exp.Expression:
    for statement in sqlglot.parse(TABLES_SQL.read_text(), read="trino"):
        if (
            isinstance(statement, exp.Create)
            and statement.args["kind"] == "VIEW"
            and statement.this.name == f"{stream}_all"
        ):
            return statement.expression
    raise KeyError(f"{stream}_all")


def duckdb_view(store_dir: Path, stream: str) -> str:
    """The Trino view `gravix.events.{stream}_all` as DuckDB SQL over `store_dir`."""

    def swap(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and (node.catalog, node.db) == ("gravix", "events"):
            location, columns = table_location(store_dir, node.name)
            alias = node.alias or node.name
            files = sorted(str(p) for p in location.glob("*/*/*.parquet"))
            if files:
                source = (
                    f"read_parquet({files!r}, hive_partitioning = true, "
                    f"hive_types = {HIVE_TYPES}, filename = true)"
                )
            else:  # DuckDB refuses a glob of no file; Trino reads an empty table
                nulls = ", ".join(f"NULL AS {sqlglot.exp.to_identifier(c).sql()}" for c in columns)
                source = (
                    f"(SELECT {nulls}, NULL::DATE AS dt, NULL::INTEGER AS hour, "
                    "NULL::VARCHAR AS filename WHERE false)"
                )
            return (
                sqlglot.parse_one(f"SELECT * FROM {source} AS {alias}", read="duckdb")
                .args["from_"]
                .this
            )
        if isinstance(node, exp.Column) and node.name == "$path":
            return exp.column("filename", table=node.table)
        return node

    return _trino_view(stream).copy().transform(swap).sql("duckdb")
