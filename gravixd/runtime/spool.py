"""The write-ahead spool: append, group commit, rotate, seal, recover.

Each stream has one open segment and one committer task, its only writer. Appenders put
record batches on a pending list and wait for the round that carries them: the committer
takes everything pending, writes it with one writev and makes it durable with one
fdatasync in a worker thread, then wakes the whole round. Concurrency thus widens each
fsync instead of queueing behind it (group commit). Rotation (bytes, events, age, UTC hour)
closes the segment and hands it to the sealer task, so compression never delays a commit.
"""

from __future__ import annotations

import collections
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
from ..core.segment import OPEN_EXTENSION, hour_of_unix_ms, new_segment_id, segment_created_at
from ..errors import DurabilityError
from ..metrics import Metrics
from ..schema import STREAMS
from . import segment_files as files
from .segment_files import OpenSegment, SealedSegment

log = logging.getLogger("gravixd.spool")

# In ack=received mode appends don't wait for the fsync; past this many pending bytes they do,
# so a fast client can't grow memory without bound.
_RECEIVED_MODE_MAX_PENDING_BYTES: Final = 64 * 1024 * 1024
# Many tiny batches (single-event requests) are merged before writing: one IPC message costs
# ~300 bytes of metadata, which would otherwise dwarf a 200-byte event.
_MERGE_BELOW_ROWS_PER_BATCH: Final = 64
_SEAL_RETRY_MAX_SECONDS: Final = 30.0
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


class _Round:
    """The batches one fsync makes durable; their appenders wait on `done`."""

    __slots__ = ("done", "error", "segment", "synced")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: DurabilityError | None = None
        self.segment: OpenSegment | None = None
        self.synced = False


class Spool:
    """All streams' segments under one directory, and the byte count that bounds them."""

    def __init__(
        self,
        spool_dir: Path,
        settings: SpoolSettings,
        metrics: Metrics,
        on_sealed: Callable[[SealedSegment], None],
        clock_unix_ms: Callable[[], int],
    ) -> None:
        self.dir = Path(spool_dir)
        self.settings = settings
        self.metrics = metrics
        self.on_sealed = on_sealed
        self.clock_unix_ms = clock_unix_ms
        self.bytes_used = 0
        self.streams = {name: StreamSpool(self, name) for name in STREAMS}
        self.space_freed = trio.Event()
        metrics.register_gauges(
            "spool_bytes", "Bytes held in the local spool.", lambda: self.bytes_used
        )

    @property
    def full(self) -> bool:
        return self.bytes_used >= self.settings.max_spool_bytes

    def release(self, size_bytes: int) -> None:
        """Bytes left the spool (uploaded or quarantined)."""
        self.bytes_used -= size_bytes
        if not self.full:
            self.space_freed.set()
            self.space_freed = trio.Event()

    async def wait_not_full(self) -> None:
        while self.full:
            await self.space_freed.wait()

    def recover_sync(self) -> list[SealedSegment]:
        """At start: seal what a previous run left open, and return every sealed segment.

        A torn tail is cut to the last whole batch; a segment that can't be read at all is
        quarantined (counted, logged) so that it can never make the daemon crash-loop.
        """
        files.make_dirs(self.dir, list(STREAMS))
        ready: list[SealedSegment] = []
        for stream in STREAMS:
            sealed_dir = self.dir / "sealed" / stream
            sealed_ids = set()
            for path in sorted(sealed_dir.iterdir()):
                segment = files.sealed_segment_from_path(stream, path)
                if segment is not None and not _is_segment_id(segment.segment_id):
                    # A stray file: its key can't be derived, so the uploader would fail on it.
                    self._quarantine_stray_sync(stream, path)
                elif segment is not None:
                    ready.append(segment)
                    sealed_ids.add(segment.segment_id)
            for path in sorted((self.dir / "open" / stream).glob(f"*{OPEN_EXTENSION}")):
                segment_id = path.name.removesuffix(OPEN_EXTENSION)
                if not _is_segment_id(segment_id):
                    self._quarantine_stray_sync(stream, path)
                    continue
                if segment_id in sealed_ids:
                    path.unlink()  # sealed before the crash, not yet removed
                    continue
                recovered = self._recover_open_sync(stream, segment_id, path)
                if recovered is not None:
                    ready.append(recovered)
        self.bytes_used = sum(s.size_bytes for s in ready)
        return ready

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

    def _recover_open_sync(self, stream: str, segment_id: str, path: Path) -> SealedSegment | None:
        try:
            scan = files.read_segment(stream, path)
        except OSError as exc:
            scan = None
            error = str(exc)
        if scan is None or not scan.readable:
            target = files.quarantine(self.dir, stream, path)
            reason = scan.error if scan is not None else error
            log.error(
                "segment quarantined",
                extra={
                    "event": "spool_segment_quarantined",
                    "segment": segment_id,
                    "stream": stream,
                    "path": str(target),
                    "error": reason,
                },
            )
            self.metrics.segments_recovered.labels("quarantined").inc()
            self.metrics.segments_quarantined.labels("unreadable").inc()
            return None
        if scan.torn:
            log.warning(
                "torn segment tail cut",
                extra={
                    "event": "spool_torn_tail_truncated",
                    "segment": segment_id,
                    "stream": stream,
                    "kept_bytes": scan.good_bytes,
                    "dropped_bytes": scan.total_bytes - scan.good_bytes,
                    "error": scan.error,
                },
            )
            os.truncate(path, scan.good_bytes)
            self.metrics.segments_recovered.labels("truncated").inc()
        else:
            self.metrics.segments_recovered.labels("sealed").inc()
        s = self.settings
        return files.seal_sync(
            self.dir, stream, segment_id, path, s.segment_format, s.segment_compression, scan
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for stream_spool in self.streams.values():
                await nursery.start(stream_spool.run)
            task_status.started()

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
        self._seal_send, self._seal_receive = trio.open_memory_channel[OpenSegment](
            _SEAL_QUEUE_DEPTH
        )
        self._idle = trio.Event()  # set when nothing is pending or being sealed
        self._sealing = 0
        # The open segment has one writer at a time: the committer, or a shutdown's seal_now.
        self._writer_lock = trio.Lock()
        self._in_flight: collections.deque[_Round] = collections.deque()  # written, syncing
        self._synced = trio.Event()  # set whenever _in_flight becomes empty
        self._syncs: trio.Nursery

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
            self._syncs = nursery
            task_status.started()
            await self._committer()

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
                self.spool.bytes_used += self._segment.size_bytes
            segment = self._segment
            messages, rows = self._serialize(batches)
            # Into the page cache, on the event loop: writes stay in order without a lock.
            self.spool.bytes_used += segment.write(messages, rows)
        except DurabilityError as exc:
            self._write_failed(round_, len(batches), exc)
            round_.done.set()
            if self._segment is not None:
                await self._rotate()  # the next round starts a fresh segment
            return
        round_.segment = segment
        self._in_flight.append(round_)
        self.spool.metrics.group_commit_batches.observe(len(batches))
        self._syncs.start_soon(self._sync, round_, len(batches), trio.current_time())

    async def _sync(self, round_: _Round, batches: int, started: float) -> None:
        segment = round_.segment
        assert segment is not None
        try:
            await trio.to_thread.run_sync(segment.sync)
        except DurabilityError as exc:
            self._write_failed(round_, batches, exc)
        self.spool.metrics.fsync_latency.labels(self.stream).observe(trio.current_time() - started)
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

    def _serialize(self, pending: list[Decoded]) -> tuple[list[pa.Buffer], int]:
        """One round's appends as IPC messages, built here on the event loop: a worker
        thread running Python would wait for the GIL behind it, for milliseconds."""
        try:
            batches = _record_batches(self.stream, pending)
            return [b.serialize() for b in batches], sum(b.num_rows for b in batches)
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
        size_before = segment.size_bytes
        try:
            await trio.to_thread.run_sync(segment.close_sync)
            self.spool.bytes_used += segment.size_bytes - size_before
        except OSError as exc:
            # The EOS marker is optional: a stream that ends on a batch boundary reads whole.
            log.warning(
                "segment close failed",
                extra={
                    "event": "spool_close_failed",
                    "segment": segment.segment_id,
                    "error": str(exc),
                },
            )
        self._sealing += 1
        await self._seal_send.send(segment)

    async def seal_now(self) -> None:
        """Commit what is pending, rotate the open segment and wait until sealing is done."""
        async with self._writer_lock:
            if self._pending:
                await self._commit_round()
            await self._rotate()
        while self._sealing:
            await self._idle.wait()

    async def _sealer(self) -> None:
        async for segment in self._seal_receive:
            sealed = await self._seal_with_retries(segment)
            self.spool.metrics.segments_sealed.labels(self.stream).inc()
            self.spool.bytes_used += (sealed.size_bytes if sealed else 0) - segment.size_bytes
            if sealed is not None:
                self.spool.on_sealed(sealed)
            else:
                self.spool.release(0)  # an empty segment freed its header's bytes
            self._sealing -= 1
            if not self._sealing:
                self._idle.set()
                self._idle = trio.Event()

    async def _seal_with_retries(self, segment: OpenSegment) -> SealedSegment | None:
        """Seal, retrying with backoff: a full disk fails the seal until space returns, and
        the segment's events are durable in the open file meanwhile (a restart seals it too)."""
        s = self.spool.settings
        for attempt in itertools.count():
            try:
                return await trio.to_thread.run_sync(
                    files.seal_sync,
                    self.spool.dir,
                    self.stream,
                    segment.segment_id,
                    segment.path,
                    s.segment_format,
                    s.segment_compression,
                )
            except Exception as exc:  # noqa: BLE001 - any failure is a rotation error
                delay = min(_SEAL_RETRY_MAX_SECONDS, 0.5 * 2**attempt)
                self.spool.metrics.rotation_errors.labels(self.stream).inc()
                log.error(
                    "segment seal failed; retrying",
                    extra={
                        "event": "spool_seal_failed",
                        "segment": segment.segment_id,
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
