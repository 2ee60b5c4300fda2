"""Spool recovery as a value (runtime/recovery.py): what a previous run left, returned to the
spool instead of written into its private fields; the spool hands each stream its part."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gravixd.core.decode import as_record_batch, decode_json
from gravixd.core.segment import new_segment_id
from gravixd.metrics import Metrics
from gravixd.runtime import recovery
from gravixd.runtime import segment_files as files
from gravixd.runtime.spool import Spool, SpoolSettings

NOW_NS = 1_764_000_000_000_000_000


def open_segment(spool_dir: Path, stream: str, seed: int, rows: int) -> Path:
    files.make_dirs(spool_dir, ["facts", "events"])
    body = b"[" + b",".join(b'{"service":"s","kind":"k"}' for _ in range(rows)) + b"]"
    batch = as_record_batch(stream, decode_json(stream, body, NOW_NS))
    segment_id = new_segment_id(1_764_000_000_000, seed)
    segment = files.OpenSegment.create(spool_dir, stream, segment_id, 0)
    segment.write(files.encode_batches(stream, "zstd", [batch]))
    segment.sync()
    segment.close()
    return segment.path


def test_recover_spool_returns_what_it_found(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    facts = open_segment(spool_dir, "facts", 1, 3)
    events = open_segment(spool_dir, "events", 2, 5)
    (spool_dir / "sealed" / "facts" / "stray.arrow").write_bytes(b"x")
    found = recovery.recover_spool(spool_dir, "arrow", Metrics())
    assert sorted((s.stream, s.rows) for s in found.ready) == [("events", 5), ("facts", 3)]
    assert found.unsealed == {"facts": [], "events": []}
    assert found.used_bytes == sum(s.path.stat().st_size for s in found.ready)
    assert not facts.exists() and not events.exists()  # sealed, moved to sealed/
    assert [p.name for p in (spool_dir / "quarantine" / "facts").iterdir()] == ["stray.arrow"]


def test_a_seal_that_fails_at_start_goes_to_its_streams_sealer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_dir = tmp_path / "spool"
    path = open_segment(spool_dir, "events", 3, 2)

    def disk_full(*args: object, **kwargs: object) -> files.SealReport:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "seal_sync", disk_full)
    found = recovery.recover_spool(spool_dir, "arrow", Metrics())
    assert found.ready == [] and found.used_bytes == path.stat().st_size
    [left] = found.unsealed["events"]
    assert (left.path, left.expected) == (path, None)

    spool = Spool(
        spool_dir,
        SpoolSettings(
            segment_max_bytes=1 << 20,
            segment_max_events=100,
            segment_max_age_seconds=60,
            segment_format="arrow",
            segment_compression="zstd",
            max_spool_bytes=1 << 30,
        ),
        Metrics(),
        clock_unix_ms=lambda: 0,
    )
    assert spool.recover_sync() == []
    assert spool.bytes_used == path.stat().st_size
    assert [t.path for t in spool.streams["events"]._unsealed] == [path]
    assert spool.streams["facts"]._unsealed == []
