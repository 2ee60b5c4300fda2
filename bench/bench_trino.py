"""Trino 476 over gravixd's Iceberg table: count(*) and a grouped p99 over 10M facts.

    python -m bench.bench_trino                       # 10M events, 7 timed runs per query
    python -m bench.bench_trino --events 2000000 --runs 5

The table is `gravix.facts` with gravixd's columns, partitioned by hour(timestamp), in a
pyiceberg SQL catalog on a private PostgreSQL, data on SeaweedFS (the test suite's servers:
tests/postgres.py, tests/seaweed.py, tests/trino_server.py). The rows are generated with
pyarrow and appended through pyiceberg in 1M-row commits (Parquet written by pyiceberg, not
by the daemon: loading 10M events through HTTP would time the daemon, not Trino), spread over
24 hours, 20 services. Then each query runs once to warm up and `--runs` times timed, from
the `trino` client (wall time to the last row).

Prints a table and writes bench/results/trino.json. Everything runs on the same 2 cores
(Trino with -Xmx1500m, SeaweedFS, PostgreSQL, this process), shared with whatever else the
machine runs: figures are for this box, loopback, not a cluster.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .machine import describe

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO / "tests"))
from postgres import PASSWORD, USER, PostgresServer  # noqa: E402
from seaweed import SeaweedServer  # noqa: E402
from trino_server import TrinoServer, iceberg_catalog_properties  # noqa: E402
from trino_tables import (  # noqa: E402
    ICEBERG_TIMESTAMP_TYPE,
    create_table,
    iceberg_arrow_schema,
    sql_catalog,
)

CHUNK_ROWS = 1_000_000
SERVICES = [f"svc-{i:02d}" for i in range(20)]
ROUTES = [f"/api/v1/r{i}" for i in range(50)]
QUERIES = {
    "count(*)": "SELECT count(*) FROM iceberg.gravix.facts",
    "p99 by service": (
        "SELECT service, approx_percentile(duration_ms, 0.99) AS p99_ms "
        "FROM iceberg.gravix.facts GROUP BY service"
    ),
}


def chunk(rows: int, first_row: int, start: datetime, hours: int) -> pa.Table:
    """`rows` facts with vectorised random columns (no numpy needed: pyarrow's random)."""

    def pick(values: list[Any], type_: pa.DataType) -> pa.Array:
        index = pc.floor(pc.multiply(pc.random(rows), len(values))).cast(pa.int32())
        return pc.take(pa.array(values, type_), index)

    start_us = int(start.timestamp() * 1_000_000)
    offsets = pc.floor(pc.multiply(pc.random(rows), hours * 3600 * 1_000_000)).cast(pa.int64())
    stamps = pc.add(offsets, start_us).cast(ICEBERG_TIMESTAMP_TYPE)
    duration = pc.multiply(pc.power(pc.random(rows), 4), 2000.0)  # skewed: a long tail
    columns = {
        "timestamp": stamps,
        "service": pick(SERVICES, pa.string()),
        "route": pick(ROUTES, pa.string()),
        "method": pick(["GET", "GET", "POST", "PUT"], pa.string()),
        "status_code": pick([200, 200, 200, 201, 404, 500, 503], pa.int32()),
        "duration_ms": duration,
        "bytes_in": pc.floor(pc.multiply(pc.random(rows), 10_000)).cast(pa.int64()),
        "bytes_out": pc.floor(pc.multiply(pc.random(rows), 100_000)).cast(pa.int64()),
        "trace_id": pa.array(range(first_row, first_row + rows), pa.int64()).cast(pa.string()),
        "attributes": pa.nulls(rows, pa.map_(pa.string(), pa.string())),
    }
    return pa.table(columns, schema=iceberg_arrow_schema("facts"))


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of an already sorted list."""
    index = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="gravixd-bench-trino-"))
    # A folder of its own: as root, PostgreSQL runs as `nobody`, who cannot enter `base`.
    pg_base = Path(tempfile.mkdtemp(prefix="gravixd-bench-postgres-"))
    result: dict[str, Any] = {"machine": describe(), "events": args.events, "runs": args.runs}
    try:
        with PostgresServer(pg_base) as pg, SeaweedServer(base / "seaweed") as s3:
            props = iceberg_catalog_properties(
                jdbc_url=pg.jdbc_url,
                jdbc_user=USER,
                jdbc_password=PASSWORD,
                catalog_name="gravix",
                warehouse=f"s3://{s3.bucket}/trino-warehouse",
                s3_endpoint=s3.endpoint_url,
                s3_region=s3.region,
                s3_access_key=s3.access_key_id,
                s3_secret_key=s3.secret_access_key,
            )
            catalog = sql_catalog(pg, s3)
            table = create_table(catalog, "gravix.facts", "facts")
            start = datetime(2026, 11, 1, tzinfo=UTC)
            loaded = time.monotonic()
            for first in range(0, args.events, CHUNK_ROWS):
                rows = min(CHUNK_ROWS, args.events - first)
                table.append(chunk(rows, first, start, hours=24))
                print(f"loaded {first + rows:,} events", file=sys.stderr)
            result["load_seconds"] = round(time.monotonic() - loaded, 1)
            result["data_files"] = len(list(catalog.load_table("gravix.facts").scan().plan_files()))

            with TrinoServer(base / "trino", {"iceberg": props}) as trino:
                result["trino_start_seconds"] = round(trino.start_seconds or 0.0, 1)
                conn = trino.connect()
                cur = conn.cursor()
                timings: dict[str, dict[str, Any]] = {}
                for name, sql in QUERIES.items():
                    cur.execute(sql)
                    answer = cur.fetchall()  # warm-up (and the answer, checked below)
                    seconds = []
                    for _ in range(args.runs):
                        began = time.perf_counter()
                        cur.execute(sql)
                        cur.fetchall()
                        seconds.append(time.perf_counter() - began)
                    seconds.sort()
                    timings[name] = {
                        "p50_ms": round(percentile(seconds, 0.5) * 1000, 1),
                        "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
                        "min_ms": round(seconds[0] * 1000, 1),
                    }
                    if name == "count(*)":
                        assert answer == [[args.events]], answer
                    else:
                        assert len(answer) == len(SERVICES), answer
                conn.close()
                result["queries"] = timings
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(pg_base, ignore_errors=True)

    print(
        f"\n{args.events:,} events, {result['data_files']} data files, "
        f"load {result['load_seconds']} s, Trino start {result['trino_start_seconds']} s"
    )
    print("| query | p50 ms | p99 ms | min ms |")
    print("|---|---|---|---|")
    for name, t in result["queries"].items():
        print(f"| {name} | {t['p50_ms']} | {t['p99_ms']} | {t['min_ms']} |")
    out = _REPO / "bench" / "results" / "trino.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(_REPO)}")


if __name__ == "__main__":
    main()
