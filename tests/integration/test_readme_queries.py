"""The reading examples of README.md and docs/query.md run as written, over a store the real
daemon wrote and the real rollup compacted, from the directory a newcomer runs them in (the
daemon's default ./gravixd-data). The README's are held on the default settings (Parquet
segments), before and after `gravixd rollup`, and across a switch of `segment_format` from
Arrow IPC to the default."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import trio
from daemon import Daemon, ndjson
from query_store import ROOT, facts, land

from gravixd.rollup import rollup
from gravixd.stores import open_store

POSTED = 1200


def blocks(path: Path, language: str, section: str) -> list[str]:
    """The fenced `language` blocks under the heading `section` (up to the next heading of
    the same or a higher level)."""
    text = path.read_text()
    level = section.split(" ", 1)[0]
    start = text.index(section + "\n")
    stop = re.search(rf"^#{{1,{len(level)}}} ", text[start + len(section) + 1 :], re.MULTILINE)
    body = text[start : start + len(section) + 1 + stop.start()] if stop else text[start:]
    return re.findall(rf"```{language}\n(.*?)```", body, re.DOTALL)


@pytest.fixture(scope="module")
def newcomer_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cwd = tmp_path_factory.mktemp("newcomer")
    store = cwd / "gravixd-data" / "store"
    # The daemon's default segment format (Parquet), as docs/query.md's pyarrow example reads.
    land(
        cwd / "daemon",
        store,
        {"facts": [facts("a", 700), facts("b", 500)]},
        "--segment-format",
        "parquet",
    )
    rolled = cwd / "gravixd-data-rolled" / "store"

    async def roll() -> None:
        # A second copy, rolled up, so that both the live and the rollup examples have data.
        shutil.copytree(store, rolled)
        s = open_store(f"file://{rolled}")
        report = await rollup(
            s, target_file_bytes=1 << 20, now=datetime.now(UTC), include_current_hour=True
        )
        await s.aclose()
        assert report.ok and report.rows == POSTED

    trio.run(roll)
    (store / "rollup").symlink_to(rolled / "rollup")
    old = Path.cwd()
    os.chdir(cwd)
    try:
        yield cwd
    finally:
        os.chdir(old)


def run_python(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<doc>", "exec"), {})  # noqa: S102 - the docs' own example
    return out.getvalue()


def _post_and_stop(daemon: Daemon, rows: list[dict]) -> None:
    with daemon:
        status, answer, _ = daemon.post("/v1/facts", ndjson(rows), "application/x-ndjson")
        assert (status, answer) == (202, {"accepted": len(rows)})
        assert daemon.stop() == 0


def _rollup_in_place(store: Path) -> None:
    async def roll() -> None:
        s = open_store(f"file://{store}")
        report = await rollup(
            s, target_file_bytes=1 << 20, now=datetime.now(UTC), include_current_hour=True
        )
        await s.aclose()
        assert report.ok and report.rows == POSTED

    trio.run(roll)


# (scenario, Arrow IPC rows first, rolled up): what a newcomer's store can look like.
SCENARIOS = [
    ("defaults", False, False),
    ("defaults-rolled-up", False, True),
    ("switched-from-arrow", True, False),
    ("switched-from-arrow-rolled-up", True, True),
]


@pytest.fixture(scope="module", params=SCENARIOS, ids=[s[0] for s in SCENARIOS])
def readme_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, int]]:
    """A ./gravixd-data written by the daemon on default settings (after Arrow IPC rows, in
    the switched scenarios); yields the directory and how many rows are Parquet files."""
    _, arrow_first, rolled = request.param
    cwd = tmp_path_factory.mktemp("readme")
    store = cwd / "gravixd-data" / "store"
    url = f"file://{store}"
    arrow_rows = 500 if arrow_first else 0
    if arrow_first:
        old = Daemon(cwd / "old", "--segment-format", "arrow", store_url=url)
        _post_and_stop(old, facts("a", arrow_rows))
    new = Daemon(cwd / "new", store_url=url, default_segment_format=True)
    _post_and_stop(new, facts("b", POSTED - arrow_rows))
    assert list(store.rglob("*.parquet"))
    if rolled:
        _rollup_in_place(store)
    old_cwd = Path.cwd()
    os.chdir(cwd)
    try:
        yield cwd, POSTED if rolled else POSTED - arrow_rows
    finally:
        os.chdir(old_cwd)


def test_readme_examples_read_every_event(readme_store: tuple[Path, int]) -> None:
    """pyarrow, DuckDB on that dataset, and DuckDB's own SQL on the Parquet files."""
    _, parquet_rows = readme_store
    pyarrow_code, duckdb_code = blocks(ROOT / "README.md", "python", "## Reading them")
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(pyarrow_code, "<README pyarrow>", "exec"), namespace)  # noqa: S102
    assert namespace["last_day"].num_rows == POSTED
    assert "svc-0" in out.getvalue()
    printed: list = []
    namespace["print"] = printed.append
    exec(compile(duckdb_code, "<README duckdb>", "exec"), namespace)  # noqa: S102
    (relation,) = printed
    assert sum(row[1] for row in relation.fetchall()) == POSTED
    (sql,) = blocks(ROOT / "README.md", "sql", "## Reading them")
    # DuckDB reads Parquet: Arrow IPC rows count once a rollup made them Parquet, as it says.
    assert sum(row[1] for row in duckdb.sql(sql).fetchall()) == parquet_rows


@pytest.mark.parametrize(("doc", "section"), [(ROOT / "docs/query.md", "### pyarrow")])
def test_python_examples_run(newcomer_dir: Path, doc: Path, section: str) -> None:
    (code,) = blocks(doc, "python", section)
    printed = run_python(code)
    assert "service" in printed and "svc-" in printed


@pytest.mark.parametrize(("doc", "section"), [(ROOT / "docs/query.md", "### DuckDB")])
def test_duckdb_examples_run(newcomer_dir: Path, doc: Path, section: str) -> None:
    sql = blocks(doc, "sql", section)[0]
    rows = duckdb.sql(sql).fetchall()
    assert sum(row[1] for row in rows) == POSTED  # n per service, every fact once
