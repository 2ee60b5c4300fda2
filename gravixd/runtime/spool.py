"""The write-ahead spool: append, group commit, rotate, seal, recover.

Each stream has one open segment and one committer task, its only writer. Appenders put
record batches on a pending list and wait for the round that carries them: the committer
takes everything pending, writes it with one writev and hands it to the stream's fsync
thread (one long-lived thread, fsync_thread.py), which makes it durable with one fdatasync
and wakes the whole round back on the event loop. Concurrency thus widens each
fsync instead of queueing behind it (group commit). Rotation (bytes, events, age, UTC hour)
closes the segment and hands it to the sealer task. A segment is written in the format it
is stored in (compressed Arrow IPC file, a checksum per batch), so sealing only verifies it,
appends the footer and renames it (segment_files.py); nothing is written twice.
"""

from __future__ import annotations

import collections
import functools
import itertools
import logging
import math
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import trio

from ..core.decode import Decoded, Rows, rows_to_batch
from ..core.segment import (
    OPEN_EXTENSION,
    Block,
    hour_of_unix_ms,
    new_segment_id,
    segment_created_at,
)
from ..errors import DurabilityError
from ..metrics import Metrics
from ..schema import STREAMS
from . import segment_files as files
from .fsync_thread import FsyncThread
from .ledger import SpoolLedger
from .segment_files import OpenSegment, SealedSegment, SealReport
from .segment_reports import report_segment

log = logging.getLogger("gravixd.spool")

# In ack=received mode appends don't wait for the fsync; past this many pending bytes they do,
# so a fast client can't grow memory without bound.
_RECEIVED_MODE_MAX_PENDING_BYTES: Final = 64 * 1024 * 1024
# Many tiny batches (single-event requests) are merged before writing: one IPC message costs
# ~300 bytes of metadata, which would otherwise dwarf a 200-byte event.
_MERGE_BELOW_ROWS_PER_BATCH: Final = 64
# A seal fails only for lack of space or an I/O error; it is cheap to retry (the footer),
# and a full disk that heals should be noticed within seconds.
_SEAL_RETRY_MAX_SECONDS: Final = 5.0
# The share of the spool's filesystem that max_spool_bytes may use: the rest is headroom for
# footers, quarantine and whatever else lives there, so shedding (503) starts before ENOSPC.
_DISK_SHARE: Final = 0.9
_DISK_CHECK_SECONDS: Final = 2.0
# Sealed segments queued for upload. Beyond it the spool sheds load as when full of bytes:
# many small segments (age rotation) could otherwise outgrow memory before max_spool_bytes.
_UPLOAD_QUEUE_SEGMENTS: Final = 4096
# Group commits written and waiting for their fsync at once; beyond it the committer waits.
_MAX_SYNCS_IN_FLIGHT: Final = 4
# Sealed segments waiting for the sealer per stream; beyond it the committer waits.
_SEAL_QUEUE_DEPTH: Final = 16


@dataclass(slots=True, kw_only=True)
class SpoolSettings:
    """The spool's share of the configuration (SIGHUP may change the limits)."""

    segment_max_bytes: int
    segment_max_events: int
    segment_max_age_seconds: float
    segment_format: str
    segment_compression: str
    max_spool_bytes: int
    # "us" with an Iceberg catalog: the tables' timestamps are microseconds (docs/iceberg.md).
    parquet_timestamp_unit: str = "ns"


@dataclass(frozen=True, slots=True)
class _ToSeal:
    """A closed open segment waiting for its sealer: `expected` are the blocks this process
    wrote to it (None for one a previous run left, which is scanned as found)."""

    segment_id: str
    path: Path
    size_bytes: int
    expected: list[Block] | None


class _Round:
    """The batches one fsync makes durable; their appenders wait on `done`."""

    __slots__ = ("batches", "done", "error", "segment", "started", "synced")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: DurabilityError | None = None
        self.segment: OpenSegment | None = None
        self.synced = False
        self.batches = 0
        self.started = 0.0

    @property
    def target(self) -> OpenSegment:
        assert self.segment is not None
        return self.segment


class Spool:
    """All streams' segments under one directory, and the byte count that bounds them."""

    def __init__(
        self,
        spool_dir: Path,
        settings: SpoolSettings,
        metrics: Metrics,
        clock_unix_ms: Callable[[], int],
        *,
        upload_queue_segments: int = _UPLOAD_QUEUE_SEGMENTS,
    ) -> None:
        self.dir = Path(spool_dir)
        self.settings = settings
        self.metrics = metrics
        # Sealed segments go to the uploader through this bounded channel (the spool's one
        # way out); when it is full the spool counts as full: shed load, as for bytes.
        self._sealed_send, self.sealed_segments = trio.open_memory_channel[SealedSegment](
            upload_queue_segments
        )
        self._recovered: list[SealedSegment] = []
        self.clock_unix_ms = clock_unix_ms
        # What the spool's filesystem can hold (set at start): max_spool_bytes is clamped to it.
        self.disk_limit_bytes: int | None = None
        self._clamped = False
        self.ledger = SpoolLedger(self._limit_bytes)
        self.streams = {name: StreamSpool(self, name) for name in STREAMS}
        # Open segments a previous run left that could not be sealed at start (disk full):
        # their stream's sealer retries them.
        self._unsealed: dict[str, list[_ToSeal]] = {name: [] for name in STREAMS}
        metrics.register_gauges(
            "spool_bytes", "Bytes held in the local spool.", lambda: self.ledger.used_bytes
        )
        metrics.register_gauges(
            "spool_limit_bytes",
            "Spool bytes above which load is shed: max_spool_bytes, clamped to the disk.",
            self._limit_bytes,
        )

    def _limit_bytes(self) -> int:
        limit = self.settings.max_spool_bytes
        return limit if self.disk_limit_bytes is None else min(limit, self.disk_limit_bytes)

    def segments_left(self) -> int:
        """Segment files really in the spool now (blocking: a directory listing)."""
        return files.count_segments(self.dir, list(STREAMS))

    def _check_disk_sync(self, used_bytes: int) -> None:
        """Clamp max_spool_bytes to what the filesystem can hold: a limit above it would
        never shed load, the disk would fill instead (every write then a 503 not_durable)."""
        stats = os.statvfs(self.dir)
        disk_bytes = used_bytes + stats.f_bavail * stats.f_frsize
        was_clamped = self._clamped
        self.disk_limit_bytes = int(disk_bytes * _DISK_SHARE)
        self._clamped = self.settings.max_spool_bytes > self.disk_limit_bytes
        if self._clamped and not was_clamped:
            log.warning(
                "max_spool_bytes exceeds what the spool's filesystem can hold; clamped",
                extra={
                    "event": "spool_max_bytes_clamped",
                    "max_spool_bytes": self.settings.max_spool_bytes,
                    "disk_bytes": disk_bytes,
                    "clamped_to_bytes": self.disk_limit_bytes,
                    "spool_dir": str(self.dir),
                },
            )

    @property
    def bytes_used(self) -> int:
        return self.ledger.used_bytes

    @property
    def full(self) -> bool:
        queued = self._sealed_send.statistics()
        return self.ledger.full or queued.current_buffer_used >= queued.max_buffer_size

    def release(self, size_bytes: int) -> None:
        """Bytes left the spool (uploaded or quarantined)."""
        self.ledger.release(size_bytes)

    async def wait_not_full(self) -> None:
        await self.ledger.wait_not_full()

    def recover_sync(self) -> list[SealedSegment]:
        """At start: seal what a previous run left open, and return every sealed segment.

        Each open segment is checked batch by batch (checksums): a torn tail is cut (the cut
        bytes kept in quarantine), damage is cut out after the original was quarantined, a
        segment that can't be read at all is quarantined whole; all counted and logged, so
        that nothing makes the daemon crash-loop. A seal that fails now (disk full) is left
        to the stream's sealer, which retries it once running.
        """
        files.make_dirs(self.dir, list(STREAMS))
        ready: list[SealedSegment] = []
        used = 0
        for stream in STREAMS:
            sealed_dir = self.dir / "sealed" / stream
            sealed_ids = set()
            for path in sorted(sealed_dir.iterdir()):
                segment = files.sealed_segment_from_path(stream, path)
                if segment is None:
                    continue
                if not _is_segment_id(segment.segment_id):
                    # A stray file: its key can't be derived, so the uploader would fail on it.
                    self._quarantine_stray_sync(stream, path)
                elif not path.is_file():
                    # A directory (or worse) can never be uploaded: retrying it would pin a worker.
                    self.report(
                        stream,
                        segment.segment_id,
                        "recovery",
                        SealReport(
                            "not_a_file",
                            quarantined=files.quarantine(self.dir, stream, path),
                            error=f"Expected a segment file, got a directory at {path}",
                        ),
                    )
                else:
                    ready.append(segment)
                    sealed_ids.add(segment.segment_id)
                    used += segment.size_bytes
            for path in sorted((self.dir / "open" / stream).glob(f"*{OPEN_EXTENSION}")):
                segment_id = path.name.removesuffix(OPEN_EXTENSION)
                if not _is_segment_id(segment_id):
                    self._quarantine_stray_sync(stream, path)
                    continue
                if segment_id in sealed_ids:
                    path.unlink()  # sealed before the crash, not yet removed
                    continue
                try:
                    report = files.seal_sync(
                        self.dir,
                        stream,
                        segment_id,
                        path,
                        self.settings.segment_format,
                        timestamp_unit=self.settings.parquet_timestamp_unit,
                    )
                except OSError as exc:
                    size = path.stat().st_size if path.exists() else 0
                    log.error(
                        "segment could not be sealed at start; retrying once running",
                        extra={
                            "event": "spool_seal_failed",
                            "segment": segment_id,
                            "stream": stream,
                            "error": repr(exc),
                        },
                    )
                    self.metrics.rotation_errors.labels(stream).inc()
                    self._unsealed[stream].append(_ToSeal(segment_id, path, size, None))
                    used += size
                    continue
                self.report(stream, segment_id, "recovery", report)
                if report.sealed is not None:
                    ready.append(report.sealed)
                    used += report.sealed.size_bytes
        self.ledger.reserve(used - self.ledger.used_bytes)  # what a previous run left
        self._check_disk_sync(used)
        self._recovered = list(ready)  # `run` queues them for upload
        return ready

    def report(self, stream: str, segment_id: str, stage: str, report: SealReport) -> None:
        """Log and count what sealing, recovering or verifying a segment found."""
        report_segment(self.metrics, stream, segment_id, stage, report)

    def _quarantine_stray_sync(self, stream: str, path: Path) -> None:
        target = files.quarantine(self.dir, stream, path)
        log.error(
            "stray file in the spool quarantined",
            extra={
                "event": "spool_segment_quarantined",
                "stream": stream,
                "path": str(target),
                "error": f"Expected a file named <segment id>.<ext>, got {path.name!r}",
            },
        )
        self.metrics.segments_quarantined.labels("unreadable").inc()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for stream_spool in self.streams.values():
                await nursery.start(stream_spool.run)
            nursery.start_soon(self._watch_disk)
            nursery.start_soon(self._queue_recovered)
            task_status.started()

    async def _queue_recovered(self) -> None:
        recovered, self._recovered = self._recovered, []
        for segment in recovered:
            await self._sealed_send.send(segment)

    async def _watch_disk(self) -> None:
        """Re-read the disk's free space now and then: space freed outside gravixd (a
        deleted ballast file) raises the limit again without a restart."""
        while True:
            await trio.sleep(_DISK_CHECK_SECONDS)
            await trio.to_thread.run_sync(self._check_disk_sync, self.ledger.used_bytes)
            self.ledger.release(0)  # wakes waiters if the limit rose

    async def seal_all(self) -> None:
        """Seal every open segment now (shutdown); returns when all are sealed."""
        for stream_spool in self.streams.values():
            await stream_spool.seal_now()


class StreamSpool:
    def __init__(self, spool: Spool, stream: str) -> None:
        self.spool = spool
        self.stream = stream
        self._segment: OpenSegment | None = None
        self._pending: list[Decoded] = []
        self._pending_bytes = 0
        self._round = _Round()
        self._wakeup = trio.Event()
        self._seal_send, self._seal_receive = trio.open_memory_channel[_ToSeal](_SEAL_QUEUE_DEPTH)
        self._idle = trio.Event()  # set when nothing is pending or being sealed
        self._sealing = 0
        # The open segment has one writer at a time: the committer, or a shutdown's seal_now.
        self._writer_lock = trio.Lock()
        self._in_flight: collections.deque[_Round] = collections.deque()  # written, syncing
        self._synced = trio.Event()  # set whenever _in_flight becomes empty
        self._fsync = FsyncThread[_Round](f"gravixd-fsync-{stream}", self._synced_round)

    async def append(self, batch: Decoded, wait_durable: bool) -> None:
        """Add a batch to the next group commit.

        Raises:
            DurabilityError: the commit carrying this batch failed (nothing of it is durable).
        """
        self._pending.append(batch)
        self._pending_bytes += (
            batch.nbytes if isinstance(batch, pa.RecordBatch) else 512 * batch.num_rows
        )
        round_ = self._round
        self._wakeup.set()
        if wait_durable or self._pending_bytes > _RECEIVED_MODE_MAX_PENDING_BYTES:
            await round_.done.wait()
            if round_.error is not None and wait_durable:
                raise round_.error

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sealer)
            for left in self.spool._unsealed[self.stream]:
                self._sealing += 1
                self._seal_send.send_nowait(left)  # before any rotation: the channel is empty
            self.spool._unsealed[self.stream] = []
            self._fsync.start()
            try:
                task_status.started()
                await self._committer()
            finally:
                self._fsync.stop()

    async def _committer(self) -> None:
        while True:
            with trio.move_on_at(self._age_deadline()):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            async with self._writer_lock:
                if self._pending:
                    await self._commit_round()
                if self._segment is not None and (self._segment.failed or self._rotation_due()):
                    await self._rotate()

    def _age_deadline(self) -> float:
        if self._segment is None:
            return math.inf
        age_ms = self.spool.clock_unix_ms() - self._segment.created_unix_ms
        hour_end_ms = (hour_of_unix_ms(self._segment.created_unix_ms) + 1) * 3_600_000
        left_ms = min(
            self.spool.settings.segment_max_age_seconds * 1000 - age_ms,
            hour_end_ms - self.spool.clock_unix_ms(),
        )
        return trio.current_time() + max(left_ms, 0) / 1000

    def _rotation_due(self) -> bool:
        segment, s = self._segment, self.spool.settings
        assert segment is not None
        now_ms = self.spool.clock_unix_ms()
        return (
            segment.size_bytes >= s.segment_max_bytes
            or segment.rows >= s.segment_max_events
            or now_ms - segment.created_unix_ms >= s.segment_max_age_seconds * 1000
            or hour_of_unix_ms(now_ms) != hour_of_unix_ms(segment.created_unix_ms)
        )

    async def _commit_round(self) -> None:
        """Write the pending batches now and start their fsync; the round completes when
        it does. Rounds overlap (a new one is written while earlier fsyncs run), up to
        _MAX_SYNCS_IN_FLIGHT, and complete in order."""
        while len(self._in_flight) >= _MAX_SYNCS_IN_FLIGHT:
            await self._in_flight[0].done.wait()
        batches, round_ = self._pending, self._round
        self._pending, self._pending_bytes, self._round = [], 0, _Round()
        now_ms = self.spool.clock_unix_ms()
        try:
            if self._segment is not None and (
                self._segment.failed
                # never let a segment straddle two hour partitions
                or hour_of_unix_ms(now_ms) != hour_of_unix_ms(self._segment.created_unix_ms)
            ):
                await self._rotate()
            if self._segment is None:
                segment_id = new_segment_id(now_ms, secrets.randbits(80))
                self._segment = await trio.to_thread.run_sync(
                    OpenSegment.create, self.spool.dir, self.stream, segment_id, now_ms
                )
                self.spool.ledger.reserve(self._segment.size_bytes)
            segment = self._segment
            messages = self._serialize(batches)
            # Into the page cache, on the event loop: writes stay in order without a lock.
            self.spool.ledger.reserve(segment.write(messages))
        except DurabilityError as exc:
            self._write_failed(round_, len(batches), exc)
            round_.done.set()
            if self._segment is not None:
                await self._rotate()  # the next round starts a fresh segment
            return
        round_.segment = segment
        round_.batches, round_.started = len(batches), trio.current_time()
        self._in_flight.append(round_)
        self.spool.metrics.group_commit_batches.observe(len(batches))
        self._fsync.submit(round_)

    def _synced_round(self, round_: _Round, error: DurabilityError | None) -> None:
        """The fsync thread is done with `round_` (runs on the event loop)."""
        if error is not None:
            self._write_failed(round_, round_.batches, error)
        self.spool.metrics.fsync_latency.labels(self.stream).observe(
            trio.current_time() - round_.started
        )
        round_.synced = True
        # In order: a later fsync that returned first may not have seen an earlier one's
        # error (the kernel reports a writeback error once), so it waits for the earlier.
        while self._in_flight and self._in_flight[0].synced:
            done = self._in_flight.popleft()
            if done.error is None and done.segment is not None and done.segment.failed:
                done.error = DurabilityError(
                    f"an earlier fsync of {done.segment.path.name} failed; not acknowledged"
                )
            done.done.set()
        if not self._in_flight:
            self._synced.set()
            self._synced = trio.Event()

    def _write_failed(self, round_: _Round, batches: int, exc: DurabilityError) -> None:
        self.spool.metrics.spool_write_errors.labels(self.stream).inc()
        log.error(
            "spool write failed",
            extra={
                "event": "spool_write_failed",
                "stream": self.stream,
                "batches": batches,
                "error": str(exc),
            },
        )
        round_.error = exc
        if round_.segment is not None:
            round_.segment.failed = True

    def _serialize(self, pending: list[Decoded]) -> list[tuple[bytearray, int]]:
        """One round's appends as compressed, checksummed IPC messages, built here on the
        event loop: a worker thread running Python would wait for the GIL behind it."""
        try:
            batches = _record_batches(self.stream, pending)
            return files.encode_batches(
                self.stream, self.spool.settings.segment_compression, batches
            )
        except Exception as exc:  # noqa: BLE001 - never expected: Rows are validated
            raise DurabilityError(f"Could not build a record batch ({exc!r})") from exc

    async def _rotate(self) -> None:
        if self._segment is None:
            return
        while self._in_flight:  # close only once no fsync uses the file
            await self._synced.wait()
        segment, self._segment = self._segment, None
        if segment is None:
            return
        segment.close()  # the footer is written by the sealer, after checking the file
        self._sealing += 1
        await self._seal_send.send(
            _ToSeal(segment.segment_id, segment.path, segment.size_bytes, list(segment.blocks))
        )

    async def seal_now(self) -> None:
        """Commit what is pending, rotate the open segment and wait until sealing is done."""
        async with self._writer_lock:
            if self._pending:
                await self._commit_round()
            await self._rotate()
        while self._sealing:
            await self._idle.wait()

    async def _sealer(self) -> None:
        async for item in self._seal_receive:
            report = await self._seal_with_retries(item)
            self.spool.report(self.stream, item.segment_id, "seal", report)
            sealed = report.sealed
            if report.outcome != "gone":
                self.spool.metrics.segments_sealed.labels(self.stream).inc()
            # The sealed file replaces the open one in the ledger (footer added, or damage
            # cut out); quarantined bytes leave it.
            self.spool.ledger.reserve(sealed.size_bytes if sealed else 0)
            self.spool.ledger.release(item.size_bytes)
            if sealed is not None:
                await self.spool._sealed_send.send(sealed)  # waits while uploads are behind
            self._sealing -= 1
            if not self._sealing:
                self._idle.set()
                self._idle = trio.Event()

    async def _seal_with_retries(self, item: _ToSeal) -> SealReport:
        """Seal, retrying with backoff: a full disk fails the seal until space returns, and
        the segment's events are durable in the open file meanwhile (a restart seals it too).
        What time will not heal (the file is gone, unreadable) is reported, never retried."""
        for attempt in itertools.count():
            try:
                return await trio.to_thread.run_sync(
                    functools.partial(
                        files.seal_sync,
                        self.spool.dir,
                        self.stream,
                        item.segment_id,
                        item.path,
                        self.spool.settings.segment_format,
                        item.expected,
                        timestamp_unit=self.spool.settings.parquet_timestamp_unit,
                    )
                )
            except Exception as exc:  # noqa: BLE001 - any failure is a rotation error
                delay = min(_SEAL_RETRY_MAX_SECONDS, 0.5 * 2**attempt)
                self.spool.metrics.rotation_errors.labels(self.stream).inc()
                log.error(
                    "segment seal failed; retrying",
                    extra={
                        "event": "spool_seal_failed",
                        "segment": item.segment_id,
                        "stream": self.stream,
                        "attempt": attempt + 1,
                        "retry_in_seconds": delay,
                        "error": repr(exc),
                    },
                )
                await trio.sleep(delay)
        raise AssertionError("unreachable")


def _is_segment_id(name: str) -> bool:
    try:
        segment_created_at(name)
    except ValueError:
        return False
    return True


def _record_batches(stream: str, pending: list[Decoded]) -> list[pa.RecordBatch]:
    """One round's appends as few record batches as possible: small requests' rows become
    one batch, and many small batches are merged."""
    rows = [p for p in pending if isinstance(p, Rows)]
    batches = [p for p in pending if not isinstance(p, Rows)]
    if rows:
        batches.append(rows_to_batch(stream, rows))
    if len(batches) < 2:
        return batches
    rows = sum(b.num_rows for b in batches)
    if rows / len(batches) >= _MERGE_BELOW_ROWS_PER_BATCH:
        return batches
    merged: list[pa.RecordBatch] = pa.Table.from_batches(batches).combine_chunks().to_batches()
    return merged
