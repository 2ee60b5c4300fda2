"""The Cube model's measures and dimensions compute what they say, on a real Trino over the
Iceberg tables.

Cube cannot run here (its native module is published only on GitHub). What Cube's Trino
driver sends is each member's SQL inside an aggregate (`count(*)`, `sum(sql)`, `avg(sql)`,
or the `number` expression with its member references expanded), grouped by dimension SQL,
over the cube's `sql_table`. This builds that query from deploy/cube/model/*.yml, runs it on
the session's Trino 476 against `iceberg.gravix.facts` / `events` (rows pyiceberg committed,
tests/conftest.py), and compares every number with pyarrow's own computation of the rows.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from query_store import ROOT

pytestmark = [pytest.mark.trino, pytest.mark.s3]

MODEL = ROOT / "deploy" / "cube" / "model"
# approx_percentile (Trino) / approx_quantile (DuckDB) are t-digest estimates: within this
# many ms of the exact quantile for these few thousand latencies spread over 0..100 ms.
QUANTILE_TOLERANCE_MS = 2.0


def cube(name: str) -> dict[str, Any]:
    for path in sorted(MODEL.glob("*.yml")):
        for c in yaml.safe_load(path.read_text())["cubes"]:
            if c["name"] == name:
                return dict(c)
    raise KeyError(name)


def member_sql(c: dict[str, Any], sql: str) -> str:
    """A member's SQL with {CUBE} and {other_member} expanded (as Cube does)."""
    measures = {m["name"]: m for m in c["measures"]}

    def expand(match: re.Match[str]) -> str:
        name = match[1]
        return c["name"] if name == "CUBE" else f"({measure_sql(c, measures[name])})"

    return re.sub(r"\{(\w+)\}", expand, sql)


def measure_sql(c: dict[str, Any], m: dict[str, Any]) -> str:
    kind = m["type"]
    if kind == "count":
        return "count(*)"
    inner = member_sql(c, str(m["sql"]))
    if kind in ("sum", "avg", "min", "max"):
        return f"{kind}({inner})"
    assert kind == "number", m
    return inner


def dimension_sql(c: dict[str, Any], name: str) -> str:
    (d,) = (d for d in c["dimensions"] if d["name"] == name)
    return member_sql(c, str(d["sql"]))


def run(trino_server: Any, c: dict[str, Any], dimension_sql: str) -> dict[Any, dict[str, Any]]:
    """Every measure of cube `c`, grouped by a dimension expression, as Trino computes them."""
    measures = [f'{measure_sql(c, m)} AS "{m["name"]}"' for m in c["measures"]]
    sql = (
        f"SELECT {dimension_sql} AS d, {', '.join(measures)} "
        f"FROM {c['sql_table']} AS {c['name']} GROUP BY 1"
    )
    conn = trino_server.connect()
    try:
        cur = conn.cursor()
        cur.execute(sql)
        rows = cur.fetchall()
        names = [d[0] for d in cur.description]
    finally:
        conn.close()
    return {row[0]: dict(zip(names[1:], row[1:], strict=True)) for row in rows}


@pytest.fixture(scope="module")
def tables(gravix_tables: tuple[pa.Table, pa.Table]) -> dict[str, pa.Table]:
    facts, events = gravix_tables
    return {"facts": facts, "events": events}


def by(table: pa.Table, key: pa.Array, value: Any) -> pa.Table:
    return table.filter(pc.equal(key, value))


def test_facts_measures_by_service_match_pyarrow(
    trino_server: Any, tables: dict[str, pa.Table]
) -> None:
    c = cube("facts")
    got = run(trino_server, c, dimension_sql(c, "service"))
    table = tables["facts"]
    assert table.num_rows == 1500
    services = sorted(set(table.column("service").to_pylist()))
    assert sorted(got) == services
    for service in services:
        rows = by(table, table.column("service"), service)
        status = rows.column("status_code")
        duration = rows.column("duration_ms")
        errors = pc.sum(pc.greater_equal(status, 500).cast(pa.int64())).as_py()
        m = got[service]
        assert m["count"] == rows.num_rows
        assert m["errors"] == errors
        assert m["error_rate"] == pytest.approx(errors / rows.num_rows)
        assert m["avg_ms"] == pytest.approx(pc.mean(duration).as_py())
        assert m["bytes_in"] == pc.sum(rows.column("bytes_in")).as_py()
        assert m["bytes_out"] == pc.sum(rows.column("bytes_out")).as_py()
        for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            exact = pc.quantile(duration, q=q).to_pylist()[0]
            assert m[name] == pytest.approx(exact, abs=QUANTILE_TOLERANCE_MS), (service, name)


@pytest.mark.parametrize("dimension", ["route", "method", "status_code", "status_class"])
def test_facts_counts_by_each_dimension_match_pyarrow(
    trino_server: Any, tables: dict[str, pa.Table], dimension: str
) -> None:
    c = cube("facts")
    got = {key: m["count"] for key, m in run(trino_server, c, dimension_sql(c, dimension)).items()}
    table = tables["facts"]
    if dimension == "status_class":
        status = table.column("status_code").to_pylist()
        keys = [f"{s // 100}xx" if s >= 100 else "none" for s in status]
    else:
        keys = table.column(dimension).to_pylist()
    expected: dict[Any, int] = {}
    for key in keys:
        expected[key] = expected.get(key, 0) + 1
    assert got == expected
    if dimension == "status_class":
        assert set(got) == {"2xx", "4xx", "5xx"}


def test_the_time_dimension_buckets_by_hour_like_pyarrow(
    trino_server: Any, tables: dict[str, pa.Table]
) -> None:
    c = cube("facts")
    got = run(trino_server, c, f"date_trunc('hour', {dimension_sql(c, 'timestamp')})")
    table = tables["facts"]
    hours = pc.floor_temporal(table.column("timestamp"), unit="hour").to_pylist()
    expected: dict[datetime, int] = {}
    for hour in hours:
        expected[hour] = expected.get(hour, 0) + 1
    assert {k.astimezone(UTC): m["count"] for k, m in got.items()} == {
        k.astimezone(UTC): v for k, v in expected.items()
    }


@pytest.mark.parametrize("dimension", ["service", "kind", "severity"])
def test_events_measures_match_pyarrow(
    trino_server: Any, tables: dict[str, pa.Table], dimension: str
) -> None:
    c = cube("events")
    got = run(trino_server, c, dimension_sql(c, dimension))
    table = tables["events"]
    assert table.num_rows == 900
    for key in set(table.column(dimension).to_pylist()):
        rows = by(table, table.column(dimension), key)
        severity = rows.column("severity").to_pylist()
        errors = sum(s in ("ERROR", "FATAL") for s in severity)
        assert got[key]["count"] == rows.num_rows
        assert got[key]["errors"] == errors
        assert got[key]["error_rate"] == pytest.approx(errors / rows.num_rows)


def test_the_model_covers_what_a_dashboard_needs() -> None:
    facts_cube, events_cube = cube("facts"), cube("events")
    assert {m["name"] for m in facts_cube["measures"]} >= {
        "count", "error_rate", "p50_ms", "p95_ms", "p99_ms", "bytes_in", "bytes_out",
    }  # fmt: skip
    assert {d["name"] for d in facts_cube["dimensions"]} >= {
        "service", "route", "method", "status_class", "timestamp",
    }  # fmt: skip
    assert {d["name"] for d in events_cube["dimensions"]} >= {
        "service", "severity", "kind", "timestamp",
    }  # fmt: skip
    for c in (facts_cube, events_cube):
        (time,) = (d for d in c["dimensions"] if d["type"] == "time")
        assert time["name"] == "timestamp"
        # The Iceberg table (exactly once by its snapshots), by Trino's catalog name.
        assert c["sql_table"] == f"iceberg.gravix.{c['name']}"
