"""Blocking file operations on spool segments; the trio code runs them in worker threads.

Layout under `spool_dir`:
    open/{stream}/{segment_id}.arrows     Arrow IPC file being appended (fsynced per commit)
    sealed/{stream}/{segment_id}.arrow    the same file with its footer: the object to store
    quarantine/{stream}/...               what could not be delivered as it was, kept whole

Each byte is written once: a segment is appended compressed, checksummed batch by batch, and
sealed by appending the footer, fsync and a rename into sealed/ (no second copy, so sealing
needs no free space beyond the footer). Only damage or an older spool's file is rewritten,
and then the original goes to quarantine first. Every rename is followed by an fsync of the
directory, so a crash leaves either the old name or the new one with complete contents.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.segment import (
    FILE_MAGIC,
    FORMAT_EXTENSIONS,
    OPEN_EXTENSION,
    BatchEncoder,
    Block,
    ScanResult,
    file_header,
    file_trailer,
    scan_segment,
)
from ..errors import DurabilityError
from ..fsutil import fsync_dir, make_dirs_durable

_TMP_SUFFIX: Final = ".tmp"


@dataclass(frozen=True, slots=True)
class SealedSegment:
    stream: str
    segment_id: str
    path: Path
    size_bytes: int
    rows: int
    segment_format: str


@dataclass(slots=True)
class SealReport:
    """What sealing, recovering or verifying a segment did, for the caller to log and count.

    outcome: "sealed" (intact), "truncated" (a torn tail cut, the tail kept in quarantine),
    "salvaged" (damage: the original quarantined, the intact batches kept), "unreadable"
    (quarantined whole), "empty" (no rows: removed), "gone" (the file vanished), "not_a_file".
    """

    outcome: str
    sealed: SealedSegment | None = None
    quarantined: Path | None = None
    scan: ScanResult | None = None
    error: str | None = None
    kept_rows: int = 0
    damaged: list[tuple[int, int]] = field(default_factory=list)


def make_dirs(spool_dir: Path, streams: list[str]) -> None:
    """Create the spool's folders, each fsynced in its parent (a fresh spool is durable)."""
    for area in ("open", "sealed", "quarantine"):
        for stream in streams:
            make_dirs_durable(spool_dir / area / stream)


@functools.cache
def _encoder(stream: str, compression: str) -> BatchEncoder:
    return BatchEncoder(stream, compression)


def encode_batches(
    stream: str, compression: str, batches: list[pa.RecordBatch]
) -> list[tuple[bytearray, int]]:
    """Checksummed, compressed IPC messages and their row counts."""
    encoder = _encoder(stream, compression)
    return [(encoder.encode(b), b.num_rows) for b in batches]


class OpenSegment:
    """An IPC file appended by exactly one task (its stream's committer)."""

    def __init__(self, path: Path, stream: str, segment_id: str, created_unix_ms: int) -> None:
        self.path = path
        self.stream = stream
        self.segment_id = segment_id
        self.created_unix_ms = created_unix_ms
        self.size_bytes = 0
        self.rows = 0
        self.blocks: list[Block] = []
        self.failed = False  # an fsync failed: the file may have lost writes; stop using it
        self._fd = -1

    @classmethod
    def create(
        cls, spool_dir: Path, stream: str, segment_id: str, created_unix_ms: int
    ) -> OpenSegment:
        path = spool_dir / "open" / stream / f"{segment_id}{OPEN_EXTENSION}"
        segment = cls(path, stream, segment_id, created_unix_ms)
        try:
            segment._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            segment._write_all([file_header(stream)])
            os.fdatasync(segment._fd)
            fsync_dir(path.parent)
        except OSError as exc:
            segment.discard()
            raise DurabilityError(
                f"Could not create spool segment {path.name} ({_failure(exc)})"
            ) from exc
        return segment

    def write(self, messages: list[tuple[bytearray, int]]) -> int:
        """Append encoded record batch messages (into the page cache; `sync` makes them
        durable); returns bytes written.

        On failure the file is cut back to its length before this call, so the segment
        still holds only whole batches, and DurabilityError is raised.
        """
        good_size = self.size_bytes
        try:
            written = self._write_all([m for m, _ in messages])
        except OSError as exc:
            try:
                os.ftruncate(self._fd, good_size)
                os.lseek(self._fd, good_size, os.SEEK_SET)
            except OSError:
                pass  # recovery at next start scans for the last whole batch anyway
            self.size_bytes = good_size
            raise DurabilityError(f"Could not write {self.path.name} ({_failure(exc)})") from exc
        offset = good_size
        for message, rows in messages:
            metadata_bytes = 8 + int.from_bytes(message[4:8], "little")
            self.blocks.append(Block(offset, metadata_bytes, len(message) - metadata_bytes, rows))
            offset += len(message)
            self.rows += rows
        return written

    def sync(self) -> None:
        """fdatasync: what was written so far is durable. Blocking; run it in a thread."""
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            self.failed = True
            raise DurabilityError(
                f"Could not make {self.path.name} durable ({_failure(exc)})"
            ) from exc

    def _write_all(self, buffers: list[bytes | bytearray | pa.Buffer]) -> int:
        views = [memoryview(b) for b in buffers]
        total = sum(v.nbytes for v in views)
        while views:
            n = os.writev(self._fd, views)
            # Drop what was fully written, trim a partly written one (writev may be short).
            while views and n >= views[0].nbytes:
                n -= views[0].nbytes
                views.pop(0)
            if views and n:
                views[0] = views[0][n:]
        self.size_bytes += total
        return total

    def close(self) -> None:
        """Close the file (its contents stay as written): the segment is ready to seal."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _failure(exc: OSError) -> str:
    """An OSError as a client-facing reason: "disk full" is the one operators act on."""
    kind = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "write failed"
    return f"{kind}: {exc.strerror or exc}"


def read_segment(stream: str, path: Path, validate: bool = True) -> ScanResult:
    """Scan a spool file.

    Raises:
        FileNotFoundError: it is gone.
        IsADirectoryError: it is a directory (or another kind of non-file).
    """
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
    if info.st_size == 0:
        return scan_segment(stream, b"", validate)
    with pa.memory_map(str(path), "r") as source:
        return scan_segment(stream, source.read_buffer(), validate)


def sealed_path(spool_dir: Path, stream: str, segment_id: str, segment_format: str) -> Path:
    return spool_dir / "sealed" / stream / f"{segment_id}{FORMAT_EXTENSIONS[segment_format]}"


def seal_sync(
    spool_dir: Path,
    stream: str,
    segment_id: str,
    path: Path,
    segment_format: str,
    expected: list[Block] | None = None,
    *,
    timestamp_unit: str = "ns",
) -> SealReport:
    """Turn a spool file into its upload form: verified, then footer, fsync, rename.

    `path` is an open segment (at rotation or recovery) or a sealed one (before upload).
    `expected` are the blocks this process wrote (rotation): anything else in the file is
    damage. Damaged bytes never reach the store and are never destroyed: the original is
    moved to quarantine first, then the intact batches are written to the sealed file.
    """
    try:
        scan = read_segment(stream, path)
    except FileNotFoundError as exc:
        return SealReport("gone", error=f"{path} vanished before it was sealed ({exc})")
    except IsADirectoryError:
        target = quarantine(spool_dir, stream, path)
        return SealReport("not_a_file", quarantined=target, error=f"{path} is not a file")
    if expected is not None and scan.intact and scan.blocks != expected:
        scan.damaged.append((scan.good_bytes, scan.total_bytes))
        scan.error = scan.error or "the file does not hold the batches written to it"
    final = sealed_path(spool_dir, stream, segment_id, segment_format)
    if not scan.readable:
        target = quarantine(spool_dir, stream, path)
        return SealReport("unreadable", quarantined=target, scan=scan, error=scan.error)
    if scan.damaged or not scan.file_format:
        # Damage, or an older spool's stream file: rewrite the intact batches. Crash-safe in
        # this order: the original is linked into quarantine (damage), the new file made
        # durable, and only then the original's spool name removed; a crash in between
        # redoes it from the original, still in place.
        kept = _keep_original(spool_dir, stream, path) if scan.damaged else None
        sealed = (
            _rewrite(stream, segment_id, scan, final, segment_format, timestamp_unit)
            if scan.blocks
            else None
        )
        if path != final or sealed is None:
            _remove(path)
        outcome = "salvaged" if scan.damaged else "sealed"
        return SealReport(outcome, sealed, kept, scan, scan.error, scan.rows, list(scan.damaged))
    outcome = "sealed"
    tail_target = None
    if scan.torn and scan.torn_at is not None and not scan.has_trailer:
        # A torn tail holds nothing acknowledged (its fsync never returned), but it is kept
        # anyway: a flipped length byte in the last batch looks the same.
        tail_target = _save_tail(spool_dir, stream, path, scan.torn_at)
        outcome = "truncated"
    if not scan.blocks:
        _remove(path)
        return SealReport("empty" if tail_target is None else outcome, None, tail_target, scan)
    if segment_format == "parquet":
        sealed = _rewrite(stream, segment_id, scan, final, segment_format, timestamp_unit)
        _remove(path)
        return SealReport(outcome, sealed, tail_target, scan, kept_rows=scan.rows)
    if not scan.sealed:
        _append_trailer(path, scan)
    if path != final:
        os.replace(path, final)
        fsync_dir(final.parent)
        fsync_dir(path.parent)
    sealed = SealedSegment(
        stream, segment_id, final, final.stat().st_size, scan.rows, segment_format
    )
    return SealReport(outcome, sealed, tail_target, scan, scan.error, scan.rows)


def _append_trailer(path: Path, scan: ScanResult) -> None:
    """Cut the file after its last intact batch, append EOS and footer, fsync."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, scan.good_bytes)
        os.lseek(fd, scan.good_bytes, os.SEEK_SET)
        trailer = file_trailer(scan.schema_message, scan.blocks)
        written = 0
        while written < len(trailer):
            written += os.write(fd, trailer[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_original(spool_dir: Path, stream: str, path: Path) -> Path:
    """Hard-link `path` into quarantine (a copy where links are not possible), durable
    before anything else happens to it."""
    target = spool_dir / "quarantine" / stream / path.name
    if target.exists() and not os.path.samefile(target, path):
        target = target.with_name(f"{path.name}.{time.time_ns()}")
    if not target.exists():
        try:
            os.link(path, target)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            shutil.copyfile(path, target)
            with open(target, "rb") as copied:
                os.fsync(copied.fileno())
    fsync_dir(target.parent)
    return target


def _save_tail(spool_dir: Path, stream: str, path: Path, offset: int) -> Path:
    """Copy the bytes from `offset` on into quarantine, before the file is cut there."""
    target = spool_dir / "quarantine" / stream / f"{path.name}.torn-at-{offset}"
    with open(path, "rb") as source, open(target, "wb") as out:
        source.seek(offset)
        out.write(source.read())
        out.flush()
        os.fsync(out.fileno())
    fsync_dir(target.parent)
    return target


def _rewrite(
    stream: str,
    segment_id: str,
    scan: ScanResult,
    final: Path,
    segment_format: str,
    timestamp_unit: str = "ns",
) -> SealedSegment:
    """Write the intact batches of `scan` to `final` (tmp, fsync, rename, dir fsync)."""
    tmp = final.with_name(final.name + _TMP_SUFFIX)
    try:
        if segment_format == "parquet":
            # Parquet is a different layout: converting at seal is its one extra copy.
            table = pa.Table.from_batches(scan.batches(stream))
            # "us" (Iceberg tables): sub-microsecond digits are truncated, as documented.
            pq.write_table(
                table,
                tmp,
                compression="zstd",
                write_page_checksum=True,
                coerce_timestamps=None if timestamp_unit == "ns" else timestamp_unit,
                allow_truncated_timestamps=timestamp_unit != "ns",
            )
            with open(tmp, "rb+") as written:
                os.fsync(written.fileno())
        else:
            header = file_header(stream)
            blocks: list[Block] = []
            parts: list[bytes | memoryview] = [header]
            offset = len(header)
            for block in scan.blocks:
                parts.append(scan.message(block))
                blocks.append(Block(offset, block.metadata_bytes, block.body_bytes, block.rows))
                offset += block.metadata_bytes + block.body_bytes
            parts.append(file_trailer(header[len(FILE_MAGIC) :], blocks))
            with open(tmp, "wb") as out:
                for part in parts:
                    out.write(part)
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return SealedSegment(stream, segment_id, final, final.stat().st_size, scan.rows, segment_format)


def verify_sealed_sync(spool_dir: Path, segment: SealedSegment) -> SealReport:
    """Before upload: check the sealed file again (checksums, framing, footer); salvage or
    quarantine it when it was damaged while it waited."""
    path = segment.path
    if segment.segment_format == "parquet":
        try:
            if not path.is_file():
                raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
            pq.ParquetFile(path, page_checksum_verification=True).read().validate(full=True)
        except FileNotFoundError as exc:
            return SealReport("gone", error=f"{path} vanished before upload ({exc})")
        except (OSError, pa.ArrowException) as exc:
            target = quarantine(spool_dir, segment.stream, path)
            return SealReport("unreadable", quarantined=target, error=str(exc))
        return SealReport("sealed", segment, kept_rows=segment.rows)
    return seal_sync(spool_dir, segment.stream, segment.segment_id, path, segment.segment_format)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)


def quarantine(spool_dir: Path, stream: str, path: Path) -> Path:
    target = spool_dir / "quarantine" / stream / path.name
    os.replace(path, target)
    fsync_dir(target.parent)
    fsync_dir(path.parent)
    return target


def sealed_segment_from_path(stream: str, path: Path) -> SealedSegment | None:
    """A sealed file found at start; None for leftovers of an interrupted seal."""
    if path.name.endswith(_TMP_SUFFIX):
        path.unlink(missing_ok=True)
        return None
    segment_id, _, ext = path.name.partition(".")
    segment_format = "parquet" if ext == "parquet" else "arrow"
    size = path.stat().st_size if path.is_file() else 0
    return SealedSegment(stream, segment_id, path, size, -1, segment_format)


def count_segments(spool_dir: Path, streams: list[str]) -> int:
    """Segment files really in the spool (open and sealed): what a drain left behind."""
    return sum(
        1
        for area in ("open", "sealed")
        for stream in streams
        for path in (spool_dir / area / stream).glob("*")
        if not path.name.endswith(_TMP_SUFFIX)
    )
