"""The reading examples of README.md and docs/query.md run as written, over a store the real
daemon wrote (default Arrow IPC segments) and the real rollup compacted, from the directory
a newcomer runs them in (the daemon's default ./gravixd-data)."""

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
    # The daemon's default segment format (Arrow IPC), as the README's pyarrow example reads.
    land(
        cwd / "daemon",
        store,
        {"facts": [facts("a", 700), facts("b", 500)]},
        "--segment-format",
        "arrow",
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


@pytest.mark.parametrize(
    ("doc", "section"),
    [(ROOT / "README.md", "## Reading them"), (ROOT / "docs/query.md", "### pyarrow")],
)
def test_python_examples_run(newcomer_dir: Path, doc: Path, section: str) -> None:
    (code,) = blocks(doc, "python", section)
    printed = run_python(code)
    assert "service" in printed and "svc-" in printed


@pytest.mark.parametrize(
    ("doc", "section"),
    [(ROOT / "README.md", "## Reading them"), (ROOT / "docs/query.md", "### DuckDB")],
)
def test_duckdb_examples_run(newcomer_dir: Path, doc: Path, section: str) -> None:
    sql = blocks(doc, "sql", section)[0]
    rows = duckdb.sql(sql).fetchall()
    assert sum(row[1] for row in rows) == POSTED  # n per service, every fact once
