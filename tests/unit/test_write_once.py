"""Each byte is written once: the spool segment is the stored object.

A segment is appended as a compressed Arrow IPC file; sealing appends only the footer and
renames it (same inode, no copy), and the local store hard-links it (same inode again),
fsyncing every directory it creates before `put` returns. The result is an ordinary Arrow
IPC file: pyarrow reads it as a file, its torn prefix as a stream, DuckDB queries it.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from gravixd import fsutil
from gravixd.core.decode import as_record_batch, decode
from gravixd.core.segment import FILE_MAGIC, new_segment_id
from gravixd.runtime import segment_files as files
from gravixd.stores import local

NOW_MS = 1_764_000_000_000


def batch(first: int, count: int) -> pa.RecordBatch:
    body = json.dumps([{"service": "s", "trace_id": f"t-{i}"} for i in range(first, first + count)])
    return as_record_batch("facts", decode("facts", "application/json", body.encode(), 1))


def written_segment(spool_dir: Path) -> files.OpenSegment:
    files.make_dirs(spool_dir, ["facts"])
    segment = files.OpenSegment.create(spool_dir, "facts", new_segment_id(NOW_MS, 1), NOW_MS)
    for n in range(5):
        segment.write(files.encode_batches("facts", "lz4", [batch(n * 100, 100)]))
        segment.sync()
    segment.close()
    return segment


def test_sealing_appends_the_footer_and_renames_no_copy(tmp_path: Path) -> None:
    segment = written_segment(tmp_path)
    inode, appended = segment.path.stat().st_ino, segment.path.stat().st_size
    report = files.seal_sync(
        tmp_path, "facts", segment.segment_id, segment.path, "arrow", segment.blocks
    )
    assert report.outcome == "sealed" and report.sealed is not None
    sealed = report.sealed.path
    assert sealed.stat().st_ino == inode  # the same file, renamed
    assert sealed.stat().st_size - appended < 2048  # only the footer was added
    assert not segment.path.exists()

    with pa.ipc.open_file(pa.memory_map(str(sealed))) as reader:
        table = reader.read_all()
        assert reader.num_record_batches == 5
    assert table.column("trace_id").to_pylist() == [f"t-{i}" for i in range(500)]
    # Before the footer, the same bytes are an IPC stream (what recovery reads after a crash).
    data = sealed.read_bytes()
    assert data.startswith(FILE_MAGIC)
    assert pa.ipc.open_stream(pa.py_buffer(data[8:appended])).read_all().equals(table)
    # Compressed as it was appended (the configured codec is in each batch's metadata).
    assert len(data) < table.nbytes
    db = duckdb.connect()
    db.register("stored", table)  # DuckDB scans the Arrow table pyarrow read from the file
    assert db.sql("select count(*), count(distinct trace_id) from stored").fetchall() == [
        (500, 500)
    ]


async def test_local_store_hard_links_and_fsyncs_the_new_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment = written_segment(tmp_path / "spool")
    sealed = files.seal_sync(
        tmp_path / "spool", "facts", segment.segment_id, segment.path, "arrow", segment.blocks
    ).sealed
    assert sealed is not None
    synced: list[Path] = []
    real_fsync_dir = fsutil.fsync_dir

    def recording_fsync_dir(path: Path) -> None:
        synced.append(Path(path))
        real_fsync_dir(path)

    monkeypatch.setattr(fsutil, "fsync_dir", recording_fsync_dir)
    monkeypatch.setattr(local, "fsync_dir", recording_fsync_dir)
    store = local.LocalStore(tmp_path / "store")
    key = "facts/dt=2026-11-24/hour=16/x.arrow"
    await store.put(key, sealed.path)
    stored = tmp_path / "store" / key
    assert stored.stat().st_ino == sealed.path.stat().st_ino  # linked, not copied
    # Each directory created on the way (facts, dt=, hour=) was fsynced in its parent, and
    # the object's own directory after the rename.
    for created in ("facts", "facts/dt=2026-11-24", "facts/dt=2026-11-24/hour=16"):
        assert (tmp_path / "store" / created).parent in synced, created
    assert synced[-1] == stored.parent
    sealed.path.unlink()  # what the uploader does next: the object stays whole
    assert pa.ipc.open_file(str(stored)).read_all().num_rows == 500
