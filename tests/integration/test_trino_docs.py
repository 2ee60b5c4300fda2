"""Every Trino query in README.md and docs/ (and the deployment's upkeep.sql) runs as written
on a real Trino 476 over the Iceberg tables, and the pyiceberg examples of docs/query.md
(pyarrow, DuckDB, polars) run as written over the tables the real daemon commits to a
one-host catalog (SQLite, local store).

A Trino query is a ```sql block naming the catalog `iceberg.`; a block of several statements
runs statement by statement.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from daemon import Daemon, ndjson, wait_for
from query_store import ROOT
from test_readme_queries import blocks

pytestmark = [pytest.mark.trino, pytest.mark.s3]

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def trino_blocks() -> list[tuple[str, int, str]]:
    found = []
    for path in DOCS:
        for i, block in enumerate(re.findall(r"```sql\n(.*?)```", path.read_text(), re.DOTALL)):
            if "iceberg." in block:
                found.append((path.relative_to(ROOT).as_posix(), i, block))
    return found


TRINO_BLOCKS = trino_blocks()


def test_the_docs_show_trino_queries() -> None:
    # The extraction itself: query.md's Trino section has its queries and its upkeep.
    assert sum(doc == "docs/query.md" for doc, _, _ in TRINO_BLOCKS) >= 3


@pytest.mark.parametrize(
    "block", [b for _, _, b in TRINO_BLOCKS], ids=[f"{d}#{i}" for d, i, _ in TRINO_BLOCKS]
)
def test_trino_query_runs_as_written(
    trino_server: Any, gravix_tables: tuple[pa.Table, pa.Table], block: str
) -> None:
    facts, _ = gravix_tables
    statements = [s.strip() for s in block.split(";") if s.strip()]
    for statement in statements:
        rows = trino_server.query(statement)
        if statement.upper().startswith("SELECT"):
            assert rows, statement
        if "count(*) AS n" in statement and "GROUP BY service" in statement:
            # Per-service counts over the last day: every fact once.
            assert sum(row[1] for row in rows) == facts.num_rows, statement
    # Upkeep leaves every row in place.
    assert trino_server.query("SELECT count(*) FROM iceberg.gravix.facts") == [[facts.num_rows]]


POSTED = 600


@pytest.fixture(scope="module")
def one_host_catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real daemon, a SQLite catalog and a local store (a newcomer's one host), with
    POSTED facts committed; yields the catalog URI."""
    workdir = tmp_path_factory.mktemp("one-host")
    uri = f"sqlite:///{workdir.absolute()}/catalog.db"
    now_ns = time.time_ns()
    body = [
        {
            "timestamp_unix_nano": now_ns - i * 1_000_000,
            "service": f"svc-{i % 3}",
            "route": "/r",
            "status_code": 200,
            "duration_ms": float(i % 50),
            "trace_id": f"t-{i}",
        }
        for i in range(POSTED)
    ]
    fast = ["--segment-max-age-seconds", "0.2", "--iceberg-commit-interval-seconds", "0.2"]
    with Daemon(workdir, "--iceberg-catalog-uri", uri, *fast) as daemon:
        status, answer, _ = daemon.post("/v1/facts", ndjson(body), "application/x-ndjson")
        assert (status, answer) == (202, {"accepted": POSTED})
        wait_for(
            lambda: daemon.metric("iceberg_rows_committed_total", table="gravix.facts") == POSTED,
            timeout=60,
            what="the facts committed",
        )
    yield uri


PYICEBERG_SECTION = "## pyarrow, DuckDB, polars (through pyiceberg)"


@pytest.mark.parametrize("index", range(3), ids=["pyarrow", "duckdb", "polars"])
def test_pyiceberg_examples_run_as_written(one_host_catalog: str, index: int) -> None:
    code = blocks(ROOT / "docs" / "query.md", "python", PYICEBERG_SECTION)[index]
    # A fresh interpreter: pyiceberg reads its environment once, at import. The variable is
    # what the docs tell the reader to set: the catalog's URI under its name.
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYICEBERG_CATALOG__GRAVIX__URI": one_host_catalog},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout
    if index == 0:  # pyarrow prints a table column by column
        counts = [
            int(n) for n in re.search(r"trace_id_count: \[\[([\d,]+)\]\]", printed)[1].split(",")
        ]
    else:  # DuckDB and polars print rows: service, then n
        counts = [int(n) for n in re.findall(r"svc-\d\s*[│┆]\s*(\d+)", printed)]
    assert len(counts) == 3 and sum(counts) == POSTED, printed


def test_duckdb_reads_the_tables_timestamps_as_microseconds(one_host_catalog: str) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    facts = SqlCatalog("gravix", uri=one_host_catalog).load_table("gravix.facts")
    con = facts.scan().to_duckdb("facts")
    ((kind, count),) = con.sql(
        "SELECT typeof(timestamp), count(*) FROM facts GROUP BY 1"
    ).fetchall()
    assert (kind, count) == ("TIMESTAMP WITH TIME ZONE", POSTED)
    assert str(facts.scan().to_arrow().schema.field("timestamp").type) == "timestamp[us, tz=UTC]"


def test_doc_python_blocks_are_the_ones_tested() -> None:
    code = blocks(ROOT / "docs" / "query.md", "python", PYICEBERG_SECTION)
    assert len(code) == 3 and "to_duckdb" in code[1] and "scan_iceberg" in code[2]


def test_the_deployments_upkeep_sql_runs_and_keeps_every_row(
    trino_server: Any, gravix_tables: tuple[pa.Table, pa.Table]
) -> None:
    """chart/charts/trino/files/upkeep.sql, as the chart's CronJob and compose run it (with
    the default retention), on the tables: every statement succeeds, no row is lost."""
    facts, events = gravix_tables
    sql = (ROOT / "chart/charts/trino/files/upkeep.sql").read_text().replace("RETENTION", "7d")
    statements = [
        s.strip()
        for s in "\n".join(line for line in sql.splitlines() if not line.startswith("--")).split(
            ";"
        )
        if s.strip()
    ]
    assert len(statements) == 6
    for statement in statements:
        trino_server.query(statement)
    assert trino_server.query("SELECT count(*) FROM iceberg.gravix.facts") == [[facts.num_rows]]
    assert trino_server.query("SELECT count(*) FROM iceberg.gravix.events") == [[events.num_rows]]
