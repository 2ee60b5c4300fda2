"""docs/query.md's "Partition columns by engine": the types its table gives polars and pandas
for `dt` and `hour` are the ones they read from a store the real daemon wrote (and the real
rollup compacted), and the section's polars and pandas examples run as written."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import polars as pl
import pytest
import trio
from query_store import ROOT, facts, land

from gravixd.rollup import rollup
from gravixd.stores import open_store

QUERY_MD = ROOT / "docs" / "query.md"
SECTION = "## Partition columns by engine"
POSTED = 60


def section_text() -> str:
    text = QUERY_MD.read_text()
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory holding ./gravixd-data/store: live segments (Parquet, the default) and
    their rollup."""
    cwd = tmp_path_factory.mktemp("partitions")
    store = cwd / "gravixd-data" / "store"
    land(cwd / "daemon", store, {"facts": [facts("p", POSTED)]})

    rolled = cwd / "rolled" / "store"  # a copy, rolled up: the live segments stay too

    async def roll() -> None:
        shutil.copytree(store, rolled)
        s = open_store(f"file://{rolled}")
        report = await rollup(
            s, target_file_bytes=1 << 20, now=datetime.now(UTC), include_current_hour=True
        )
        await s.aclose()
        assert report.ok and report.rows == POSTED

    trio.run(roll)
    (store / "rollup").symlink_to(rolled / "rollup")
    yield cwd


def test_polars_types_are_the_documented_ones(store_dir: Path) -> None:
    row = next(line for line in section_text().splitlines() if line.startswith("| polars"))
    assert "`Date`" in row and "`Int64`" in row
    schema = pl.scan_parquet(
        f"{store_dir}/gravixd-data/store/rollup/facts/**/*.parquet", hive_partitioning=True
    ).collect_schema()
    assert (schema["dt"], schema["hour"]) == (pl.Date, pl.Int64)
    # The documented filter finds the hour's rows.
    frame = pl.read_parquet(
        f"{store_dir}/gravixd-data/store/rollup/facts/**/*.parquet", hive_partitioning=True
    )
    day, hour = frame["dt"][0], frame["hour"][0]
    assert isinstance(day, date)
    assert frame.filter((pl.col("dt") == day) & (pl.col("hour") == hour)).height == POSTED


def test_pandas_types_are_the_documented_ones(store_dir: Path) -> None:
    row = next(line for line in section_text().splitlines() if line.startswith("| pandas"))
    assert "`category` of `str`" in row and "`category` of `int32`" in row
    frame = pd.read_parquet(f"{store_dir}/gravixd-data/store/rollup/facts")
    assert isinstance(frame["dt"].dtype, pd.CategoricalDtype)
    assert isinstance(frame["hour"].dtype, pd.CategoricalDtype)
    assert frame["dt"].cat.categories.dtype.kind in "OUT"  # text
    assert str(frame["hour"].cat.categories.dtype) == "int32"
    day, hour = str(frame["dt"].iloc[0]), int(frame["hour"].iloc[0])
    filtered = pd.read_parquet(
        f"{store_dir}/gravixd-data/store/rollup/facts",
        filters=[("dt", "==", day), ("hour", "==", hour)],
    )
    assert len(filtered) == POSTED


@pytest.mark.parametrize("engine", ["polars", "pandas"])
def test_the_section_examples_run_as_written(store_dir: Path, engine: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", section_text(), re.DOTALL)
    (code,) = [b for b in blocks if f"import {engine}" in b]
    out = io.StringIO()
    old = Path.cwd()
    os.chdir(store_dir)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"<query.md {engine}>", "exec"), {})  # noqa: S102
    finally:
        os.chdir(old)
    printed = out.getvalue()
    assert "svc-0" in printed and "svc-2" in printed, printed
