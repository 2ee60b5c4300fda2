"""Quarantine never overwrites: every way into it keeps what an earlier one put there.

A segment salvaged before upload (its damaged original kept in quarantine) and later refused
by the store is quarantined a second time under the same name; the original must survive.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from gravixd.core.decode import as_record_batch, decode_json
from gravixd.core.segment import new_segment_id
from gravixd.runtime import segment_files as files

SEGMENT_ID = new_segment_id(1_764_000_000_000, 7)


def sealed_segment(spool_dir: Path, count: int) -> files.SealedSegment:
    files.make_dirs(spool_dir, ["facts"])
    body = b"[" + b",".join(b'{"service":"s","trace_id":"t-%d"}' % i for i in range(count)) + b"]"
    batch = as_record_batch("facts", decode_json("facts", body, 1_764_000_000_000_000_000))
    segment = files.OpenSegment.create(spool_dir, "facts", SEGMENT_ID, 0)
    for i in range(count):
        segment.write(files.encode_batches("facts", "zstd", [batch.slice(i, 1)]))
    segment.sync()
    segment.close()
    report = files.seal_sync(spool_dir, "facts", SEGMENT_ID, segment.path, "arrow")
    assert report.sealed is not None
    return report.sealed


def test_salvaged_then_refused_keeps_both_files(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    segment = sealed_segment(spool_dir, 5)
    data = bytearray(segment.path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)  # damage while it waited for upload
    segment.path.write_bytes(bytes(data))

    report = files.verify_sealed_sync(spool_dir, segment)
    assert report.outcome == "salvaged" and report.sealed is not None
    original = report.quarantined
    assert original is not None and original.read_bytes() == bytes(data)
    salvaged = report.sealed.path.read_bytes()

    refused = files.quarantine(spool_dir, "facts", report.sealed.path)  # the store said no
    assert refused != original
    assert original.read_bytes() == bytes(data), "the damaged original was overwritten"
    assert refused.read_bytes() == salvaged
    kept = sorted(p.name for p in (spool_dir / "quarantine" / "facts").iterdir())
    assert kept == [f"{SEGMENT_ID}.arrow", f"{SEGMENT_ID}.arrow.1"]


def test_every_quarantine_path_picks_a_fresh_name(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    files.make_dirs(spool_dir, ["facts"])
    folder = spool_dir / "quarantine" / "facts"
    for n in range(3):
        stray = spool_dir / "sealed" / "facts" / "stray.arrow"
        stray.write_bytes(b"file %d" % n)
        files.quarantine(spool_dir, "facts", stray)
    directory = spool_dir / "sealed" / "facts" / "stray.arrow"
    directory.mkdir()  # a directory where a segment belongs
    files.quarantine(spool_dir, "facts", directory)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["stray.arrow", "stray.arrow.1", "stray.arrow.2", "stray.arrow.3"]
    assert [(folder / name).read_bytes() for name in names[:3]] == [b"file 0", b"file 1", b"file 2"]
    assert (folder / "stray.arrow.3").is_dir()


def test_a_sealed_file_reads_back_after_quarantine(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    segment = sealed_segment(spool_dir, 3)
    target = files.quarantine(spool_dir, "facts", segment.path)
    with pa.ipc.open_file(pa.memory_map(str(target))) as reader:
        assert reader.read_all().num_rows == 3
