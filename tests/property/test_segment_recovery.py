"""Spool recovery on start, against every way a crash, a bad disk or a stray file can leave
a segment.

A crash can cut an open segment at any byte. Whatever the cut, recovery keeps exactly the
whole record batches before it (each was a group commit; the ones acknowledged are among
them), seals them for upload, and never raises: a segment it cannot read at all is moved to
quarantine and counted, so a bad file can never make the daemon crash-loop. Garbage and
zero-length files get the same treatment. Damage (a flipped byte anywhere in a batch) is
always detected by the batch's checksum: the damaged batch is cut out, the original file is
kept in quarantine, and every intact batch before and after it is still delivered.
`gravixd spool check` reports all of it and changes nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gravixd.core.decode import as_record_batch, decode_json
from gravixd.core.segment import (
    END_OF_STREAM,
    file_header,
    new_segment_id,
    scan_segment,
    stream_header,
)
from gravixd.metrics import Metrics
from gravixd.runtime.segment_files import encode_batches
from gravixd.runtime.spool import Spool, SpoolSettings
from gravixd.spool_check import inspect_spool

SEGMENT_ID = new_segment_id(1_764_000_000_000, 12345)
NOW_NS = 1_764_000_000_000_000_000


def facts_batch(first: int, count: int) -> pa.RecordBatch:
    body = (
        b"["
        + b",".join(
            b'{"service":"s","trace_id":"t-%d","attributes":{"k":"v%d"}}' % (i, i)
            for i in range(first, first + count)
        )
        + b"]"
    )
    return as_record_batch("facts", decode_json("facts", body, NOW_NS))


def small_segment(legacy: bool = False) -> tuple[bytes, list[int], list[int]]:
    """A spool segment of three group commits; returns (bytes, batch end offsets, rows).

    `legacy`: the IPC stream an older gravixd wrote (no magic, no checksums, uncompressed).
    """
    data = bytearray(stream_header("facts") if legacy else file_header("facts"))
    ends, rows = [], []
    for first, count in ((0, 1), (1, 3), (4, 2)):
        batch = facts_batch(first, count)
        if legacy:
            data += batch.serialize().to_pybytes()
        else:
            [(message, _)] = encode_batches("facts", "lz4", [batch])
            data += message
        ends.append(len(data))
        rows.append(count)
    return bytes(data), ends, rows


SEGMENT, BATCH_ENDS, BATCH_ROWS = small_segment()
HEADER_BYTES = len(file_header("facts"))
LEGACY_SEGMENT, LEGACY_ENDS, _ = small_segment(legacy=True)


def rows_whole_before(cut: int) -> int:
    return sum(r for end, r in zip(BATCH_ENDS, BATCH_ROWS, strict=True) if end <= cut)


@pytest.fixture
def fast_dir() -> Iterator[Path]:
    """A tmpfs directory when there is one: recovery fsyncs, thousands of times here."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="gravixd-recovery-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def new_spool(spool_dir: Path) -> Spool:
    spool = Spool(
        spool_dir,
        SpoolSettings(
            segment_max_bytes=1 << 20,
            segment_max_events=1000,
            segment_max_age_seconds=60,
            segment_format="arrow",
            segment_compression="zstd",
            max_spool_bytes=1 << 30,
        ),
        Metrics(),
        clock_unix_ms=lambda: 0,
    )
    return spool


def recover(spool_dir: Path) -> tuple[Spool, list]:
    spool = new_spool(spool_dir)
    return spool, spool.recover_sync()


def sealed_trace_ids(path: Path) -> list[str]:
    with pa.ipc.open_file(pa.memory_map(str(path))) as reader:
        return reader.read_all().column("trace_id").to_pylist()


def counter(spool: Spool, name: str, **labels: str) -> float:
    return spool.metrics.registry.get_sample_value(name, labels) or 0.0


# --- the scan alone, at every byte ---------------------------------------------------------


def test_scan_at_every_byte_offset_keeps_exactly_the_whole_batches() -> None:
    for cut in range(len(SEGMENT) + 1):
        scan = scan_segment("facts", SEGMENT[:cut])
        if cut < HEADER_BYTES:
            assert not scan.readable, cut
            assert scan.error and "Expected" in scan.error and "Arrow IPC" in scan.error
            continue
        assert not scan.damaged, cut  # a cut is a tear, never reported as damage
        assert scan.readable, cut
        assert scan.rows == rows_whole_before(cut), cut
        whole_end = max([HEADER_BYTES] + [e for e in BATCH_ENDS if e <= cut])
        assert scan.good_bytes == whole_end, cut
        assert scan.torn == (cut != whole_end), cut


def test_scan_of_a_cleanly_closed_stream_is_not_torn() -> None:
    scan = scan_segment("facts", SEGMENT + END_OF_STREAM)
    assert not scan.torn and scan.error is None and scan.rows == sum(BATCH_ROWS)


def test_a_flipped_byte_anywhere_in_a_batch_is_detected_and_costs_only_that_batch() -> None:
    """Every byte of every batch message, every bit: the checksum catches it, and the
    batches before and after the damaged one are all still found. (A flip in the last
    batch's length fields makes it run past the end of the file, as a torn write does: it
    is cut as a torn tail, whose bytes are kept in quarantine.)"""
    starts = [HEADER_BYTES, *BATCH_ENDS[:-1]]
    for index, (start, end) in enumerate(zip(starts, BATCH_ENDS, strict=True)):
        for position in range(start, end):
            for bit in (0, 7):
                data = bytearray(SEGMENT)
                data[position] ^= 1 << bit
                scan = scan_segment("facts", bytes(data))
                if index == len(BATCH_ENDS) - 1 and scan.torn:
                    assert scan.torn_at == start and not scan.damaged, (position, bit)
                else:
                    assert scan.damaged, (position, bit)
                    assert scan.damaged[0][0] == start, (position, bit)
                kept = [b.rows for b in scan.blocks]
                assert kept == BATCH_ROWS[:index] + BATCH_ROWS[index + 1 :], (position, bit)


def test_a_flipped_byte_in_the_schema_or_magic_is_detected() -> None:
    for position in range(HEADER_BYTES):
        data = bytearray(SEGMENT)
        data[position] ^= 0x10
        scan = scan_segment("facts", bytes(data))
        # Either the schema still reads as this stream's (a padding byte): nothing is lost;
        # or the damage is reported; never a silent change of what is delivered.
        assert scan.damaged or not scan.readable or scan.rows == sum(BATCH_ROWS), position
        if scan.readable:
            assert scan.rows == sum(BATCH_ROWS), position


def test_an_older_spools_stream_file_still_recovers(fast_dir: Path) -> None:
    open_dir = fast_dir / "spool" / "open" / "facts"
    open_dir.mkdir(parents=True)
    (open_dir / f"{SEGMENT_ID}.arrows").write_bytes(LEGACY_SEGMENT[: LEGACY_ENDS[-1] + 3])
    _, ready = recover(fast_dir / "spool")
    assert sealed_trace_ids(ready[0].path) == [f"t-{i}" for i in range(sum(BATCH_ROWS))]


# --- recovery of the spool directory, at every byte ----------------------------------------


def test_recovery_at_every_byte_offset(fast_dir: Path) -> None:
    """Cut the open segment at each byte, recover, and check what was sealed."""
    quarantined = truncated = 0
    for cut in range(len(SEGMENT) + 1):
        spool_dir = fast_dir / f"cut{cut}"
        open_dir = spool_dir / "open" / "facts"
        open_dir.mkdir(parents=True)
        (open_dir / f"{SEGMENT_ID}.arrows").write_bytes(SEGMENT[:cut])
        spool, ready = recover(spool_dir)
        expected_rows = rows_whole_before(cut)
        assert not list(open_dir.iterdir()), f"cut {cut}: the open segment was left behind"
        if cut < HEADER_BYTES:
            quarantined += 1
            assert ready == []
            assert [p.name for p in (spool_dir / "quarantine" / "facts").iterdir()] == [
                f"{SEGMENT_ID}.arrows"
            ]
            assert counter(spool, "spool_segments_quarantined_total", reason="unreadable") == 1
        elif expected_rows == 0:
            assert ready == [], f"cut {cut}: an empty segment is removed, not uploaded"
        else:
            assert len(ready) == 1
            assert ready[0].segment_id == SEGMENT_ID
            assert sealed_trace_ids(ready[0].path) == [f"t-{i}" for i in range(expected_rows)]
            assert spool.bytes_used == ready[0].size_bytes
        if cut >= HEADER_BYTES and cut not in [HEADER_BYTES, *BATCH_ENDS]:
            truncated += 1
            assert counter(spool, "spool_segments_recovered_total", outcome="truncated") == 1
            whole_end = max([HEADER_BYTES] + [e for e in BATCH_ENDS if e <= cut])
            [tail] = (spool_dir / "quarantine" / "facts").iterdir()  # the cut bytes, kept
            assert tail.read_bytes() == SEGMENT[whole_end:cut]
        shutil.rmtree(spool_dir)
    assert quarantined == HEADER_BYTES and truncated > 0


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(min_value=0, max_value=len(SEGMENT)),
    position=st.integers(min_value=0, max_value=len(SEGMENT) - 1),
    flip=st.integers(min_value=1, max_value=255),
)
def test_recovery_of_a_corrupted_byte_never_raises(
    fast_dir: Path, cut: int, position: int, flip: int
) -> None:
    """A flipped byte anywhere (bit rot, a bad sector), in a file cut anywhere: recovery
    never raises, never invents or alters an event, and keeps the original whenever it
    delivers less than the file held."""
    data = bytearray(SEGMENT[:cut])
    if position < len(data):
        data[position] ^= flip
    spool_dir = fast_dir / "spool"
    shutil.rmtree(spool_dir, ignore_errors=True)
    (spool_dir / "open" / "facts").mkdir(parents=True)
    (spool_dir / "open" / "facts" / f"{SEGMENT_ID}.arrows").write_bytes(bytes(data))
    _, ready = recover(spool_dir)
    assert not list((spool_dir / "open" / "facts").iterdir())
    originals = {f"t-{i}" for i in range(sum(BATCH_ROWS))}
    delivered: list[str] = []
    for segment in ready:
        table = pa.ipc.open_file(pa.memory_map(str(segment.path))).read_all()
        table.validate(full=True)
        delivered += table.column("trace_id").to_pylist()
    assert set(delivered) <= originals and len(delivered) == len(set(delivered))
    if len(delivered) < rows_whole_before(cut):
        assert list((spool_dir / "quarantine" / "facts").iterdir()), "lost without a trace"


# --- stray and garbage files ----------------------------------------------------------------

GARBAGE_FILES = {
    "zero-length": b"",
    "random bytes": bytes(range(256)) * 4,
    "text": b"hello, this is not arrow\n",
    "continuation marker only": b"\xff\xff\xff\xff",
    "huge metadata length": b"\xff\xff\xff\xff\xff\xff\xff\x7f" + b"\x00" * 32,
    "events schema in the facts folder": stream_header("events"),
}


@pytest.mark.parametrize("content", GARBAGE_FILES.values(), ids=GARBAGE_FILES.keys())
def test_garbage_open_segment_is_quarantined_and_others_recover(
    fast_dir: Path, content: bytes
) -> None:
    spool_dir = fast_dir / "spool"
    open_dir = spool_dir / "open" / "facts"
    open_dir.mkdir(parents=True)
    bad_id = new_segment_id(1_764_000_000_000, 1)
    (open_dir / f"{bad_id}.arrows").write_bytes(content)
    (open_dir / f"{SEGMENT_ID}.arrows").write_bytes(SEGMENT)
    spool, ready = recover(spool_dir)
    assert [s.segment_id for s in ready] == [SEGMENT_ID]
    assert sealed_trace_ids(ready[0].path) == [f"t-{i}" for i in range(sum(BATCH_ROWS))]
    quarantined = spool_dir / "quarantine" / "facts" / f"{bad_id}.arrows"
    assert quarantined.read_bytes() == content  # kept as it was, for a human to look at
    assert counter(spool, "spool_segments_quarantined_total", reason="unreadable") == 1


def test_leftovers_of_an_interrupted_seal_are_resolved(fast_dir: Path) -> None:
    """A crash mid-seal leaves a .tmp (dropped: the open file still has the events) or the
    sealed file beside its open file (the open one is dropped: sealed already holds it)."""
    spool_dir = fast_dir / "spool"
    spool, ready = recover(spool_dir)  # creates the folders
    assert ready == []
    open_dir, sealed_dir = spool_dir / "open" / "facts", spool_dir / "sealed" / "facts"
    (open_dir / f"{SEGMENT_ID}.arrows").write_bytes(SEGMENT)
    first = new_spool(spool_dir).recover_sync()
    sealed_bytes = first[0].path.read_bytes()
    # Now both: the sealed file and (again) its open file, plus a temp file of a later seal.
    (open_dir / f"{SEGMENT_ID}.arrows").write_bytes(SEGMENT)
    other = new_segment_id(1_764_000_000_001, 2)
    (sealed_dir / f"{other}.arrow.tmp").write_bytes(b"partial")
    (open_dir / f"{other}.arrows").write_bytes(SEGMENT[: BATCH_ENDS[0]])
    ready = new_spool(spool_dir).recover_sync()
    assert sorted(s.segment_id for s in ready) == sorted([SEGMENT_ID, other])
    assert (sealed_dir / f"{SEGMENT_ID}.arrow").read_bytes() == sealed_bytes
    assert not list(open_dir.iterdir())
    assert not list(sealed_dir.glob("*.tmp"))
    assert sealed_trace_ids(sealed_dir / f"{other}.arrow") == ["t-0"]


def test_spool_check_reports_without_changing_anything(fast_dir: Path) -> None:
    spool_dir = fast_dir / "spool"
    new_spool(spool_dir).recover_sync()
    open_dir = spool_dir / "open" / "facts"
    torn_at = BATCH_ENDS[1] + 5
    (open_dir / f"{SEGMENT_ID}.arrows").write_bytes(SEGMENT[:torn_at])
    (open_dir / f"{new_segment_id(1_764_000_000_000, 9)}.arrows").write_bytes(b"")

    def snapshot() -> dict[str, bytes]:
        return {
            str(p.relative_to(spool_dir)): p.read_bytes()
            for p in sorted(spool_dir.rglob("*"))
            if p.is_file()
        }

    before = snapshot()
    reports = {r.name: r for r in inspect_spool(spool_dir)}
    assert snapshot() == before
    torn = reports[f"{SEGMENT_ID}.arrows"]
    assert torn.rows == BATCH_ROWS[0] + BATCH_ROWS[1]
    assert torn.torn_bytes == 5
    empty = reports[f"{new_segment_id(1_764_000_000_000, 9)}.arrows"]
    assert empty.rows is None and empty.error


def test_a_crash_while_salvaging_damage_loses_nothing(
    fast_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original is linked into quarantine first, the intact batches are made durable
    in the sealed file next, and only then is the original's spool name removed: a crash
    at any step leaves something the next start finishes."""
    from gravixd.runtime import segment_files

    spool_dir = fast_dir / "spool"
    open_dir = spool_dir / "open" / "facts"
    open_dir.mkdir(parents=True)
    damaged = bytearray(SEGMENT)
    damaged[BATCH_ENDS[0] + 100] ^= 0xFF  # inside the second batch
    (open_dir / f"{SEGMENT_ID}.arrows").write_bytes(bytes(damaged))

    class Crash(Exception):
        pass

    def crash(*args: object) -> None:
        raise Crash

    for step in ("_rewrite", "_remove"):  # before the new file, then before the cleanup
        with monkeypatch.context() as patch:
            patch.setattr(segment_files, step, crash)
            with pytest.raises(Crash):
                recover(spool_dir)
        assert (open_dir / f"{SEGMENT_ID}.arrows").read_bytes() == bytes(damaged)
    _, ready = recover(spool_dir)
    expected = [f"t-{i}" for i in range(BATCH_ROWS[0])] + [
        f"t-{i}" for i in range(BATCH_ROWS[0] + BATCH_ROWS[1], sum(BATCH_ROWS))
    ]
    assert sealed_trace_ids(ready[0].path) == expected
    assert not list(open_dir.iterdir())
    [kept] = (spool_dir / "quarantine" / "facts").iterdir()
    assert kept.read_bytes() == bytes(damaged)


def test_a_zeroed_head_keeps_every_batch_after_it() -> None:
    """Issue 19: zeroing a segment's first 64 bytes (magic and schema) kept 0 of 300 acked
    events. The scan resynchronises on the next intact batch, whatever prefix is lost."""
    starts = [HEADER_BYTES, *BATCH_ENDS[:-1]]
    for zeroed in range(1, len(SEGMENT)):
        data = bytearray(SEGMENT)
        data[:zeroed] = bytes(zeroed)
        scan = scan_segment("facts", bytes(data))
        survivors = [r for s, r in zip(starts, BATCH_ROWS, strict=True) if s >= zeroed]
        assert scan.readable or not survivors, zeroed
        assert [b.rows for b in scan.blocks] == survivors, zeroed
        assert scan.damaged or scan.torn or not scan.readable, zeroed  # never silent


def test_a_segment_with_a_zeroed_head_recovers_its_intact_batches(fast_dir: Path) -> None:
    spool_dir = fast_dir / "spool"
    open_dir = spool_dir / "open" / "facts"
    open_dir.mkdir(parents=True)
    data = bytearray(SEGMENT)
    data[:64] = bytes(64)
    (open_dir / f"{SEGMENT_ID}.arrows").write_bytes(bytes(data))
    spool, ready = recover(spool_dir)
    assert [s.segment_id for s in ready] == [SEGMENT_ID]
    assert sealed_trace_ids(ready[0].path) == [f"t-{i}" for i in range(sum(BATCH_ROWS))]
    # The original is kept whole in quarantine before anything was cut.
    kept = spool_dir / "quarantine" / "facts" / f"{SEGMENT_ID}.arrows"
    assert kept.read_bytes() == bytes(data)
    assert counter(spool, "spool_segments_quarantined_total", reason="damaged") == 1
