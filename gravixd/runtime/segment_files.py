"""Blocking file operations on spool segments; the trio code runs them in worker threads.

Layout under `spool_dir`:
    open/{stream}/{segment_id}.arrows     IPC stream being appended (fsynced per group commit)
    sealed/{stream}/{segment_id}.arrow    compressed IPC file (or .parquet), ready for upload
    quarantine/{stream}/...               unreadable segments, or ones the store refused

Every rename is followed by an fsync of the directory, so a crash leaves either the old name
or the new one with complete contents.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.segment import (
    END_OF_STREAM,
    FORMAT_EXTENSIONS,
    OPEN_EXTENSION,
    ScanResult,
    scan_segment,
    stream_header,
)
from ..errors import DurabilityError
from ..fsutil import fsync_dir

_TMP_SUFFIX: Final = ".tmp"


@dataclass(frozen=True, slots=True)
class SealedSegment:
    stream: str
    segment_id: str
    path: Path
    size_bytes: int
    rows: int
    segment_format: str


def make_dirs(spool_dir: Path, streams: list[str]) -> None:
    for area in ("open", "sealed", "quarantine"):
        for stream in streams:
            (spool_dir / area / stream).mkdir(parents=True, exist_ok=True)


class OpenSegment:
    """An IPC stream file appended by exactly one task (its stream's committer)."""

    def __init__(self, path: Path, stream: str, segment_id: str, created_unix_ms: int) -> None:
        self.path = path
        self.stream = stream
        self.segment_id = segment_id
        self.created_unix_ms = created_unix_ms
        self.size_bytes = 0
        self.rows = 0
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
            segment._write_all([stream_header(stream)])
            os.fdatasync(segment._fd)
            fsync_dir(path.parent)
        except OSError as exc:
            segment.discard()
            raise DurabilityError(
                f"Could not create spool segment {path.name} ({_failure(exc)})"
            ) from exc
        return segment

    def write(self, messages: list[pa.Buffer], rows: int) -> int:
        """Append serialized record batch messages (into the page cache; `sync` makes them
        durable); returns bytes written.

        On failure the file is cut back to its length before this call, so the segment
        still holds only whole batches, and DurabilityError is raised.
        """
        good_size = self.size_bytes
        try:
            written = self._write_all(messages)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, good_size)
                os.lseek(self._fd, good_size, os.SEEK_SET)
            except OSError:
                pass  # recovery at next start scans for the last whole batch anyway
            self.size_bytes = good_size
            raise DurabilityError(f"Could not write {self.path.name} ({_failure(exc)})") from exc
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

    def _write_all(self, buffers: list[bytes | pa.Buffer]) -> int:
        views = [memoryview(b) for b in buffers]
        total = sum(v.nbytes for v in views)
        remaining = total
        while views:
            n = os.writev(self._fd, views)
            remaining -= n
            # Drop what was fully written, trim a partly written one (writev may be short).
            while views and n >= views[0].nbytes:
                n -= views[0].nbytes
                views.pop(0)
            if views and n:
                views[0] = views[0][n:]
        self.size_bytes += total
        return total

    def close_sync(self) -> None:
        """End the stream (EOS marker) and close: the segment is ready to seal."""
        if self._fd < 0:
            return
        try:
            self._write_all([END_OF_STREAM])
            os.fdatasync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.path.unlink(missing_ok=True)


def _failure(exc: OSError) -> str:
    """An OSError as a client-facing reason: "disk full" is the one operators act on."""
    kind = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "write failed"
    return f"{kind}: {exc.strerror or exc}"


def read_segment(stream: str, path: Path, validate: bool = True) -> ScanResult:
    with pa.memory_map(str(path), "r") as source:
        return scan_segment(stream, source.read_buffer(), validate)


def seal_sync(
    spool_dir: Path,
    stream: str,
    segment_id: str,
    open_path: Path,
    segment_format: str,
    compression: str,
    scan: ScanResult | None = None,
) -> SealedSegment | None:
    """Turn an open segment into its upload form, then remove the open file.

    Returns None when the segment held no rows (it is simply removed).
    """
    if scan is None:
        scan = read_segment(stream, open_path, validate=False)
    if not scan.batches:
        open_path.unlink(missing_ok=True)
        return None
    table = pa.Table.from_batches(scan.batches)
    final = spool_dir / "sealed" / stream / f"{segment_id}{FORMAT_EXTENSIONS[segment_format]}"
    tmp = final.with_name(final.name + _TMP_SUFFIX)
    codec = None if compression == "none" else compression
    try:
        if segment_format == "parquet":
            pq.write_table(table, tmp, compression=codec or "none")
        else:
            options = pa.ipc.IpcWriteOptions(compression=codec)
            with (
                pa.OSFile(str(tmp), "wb") as sink,
                pa.ipc.new_file(sink, table.schema, options=options) as writer,
            ):
                writer.write_table(table)
        with open(tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    open_path.unlink(missing_ok=True)
    fsync_dir(open_path.parent)
    return SealedSegment(
        stream, segment_id, final, final.stat().st_size, table.num_rows, segment_format
    )


def quarantine(spool_dir: Path, stream: str, path: Path) -> Path:
    target = spool_dir / "quarantine" / stream / path.name
    os.replace(path, target)
    fsync_dir(target.parent)
    return target


def sealed_segment_from_path(stream: str, path: Path) -> SealedSegment | None:
    """A sealed file found at start; None for leftovers of an interrupted seal."""
    if path.name.endswith(_TMP_SUFFIX):
        path.unlink(missing_ok=True)
        return None
    segment_id, _, ext = path.name.partition(".")
    segment_format = "parquet" if ext == "parquet" else "arrow"
    return SealedSegment(stream, segment_id, path, path.stat().st_size, -1, segment_format)
