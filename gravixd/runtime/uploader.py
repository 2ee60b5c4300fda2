"""Uploads sealed segments to the object store, then removes them from the spool.

Each segment is verified again just before its upload (checksums, framing, footer): what was
damaged while it waited is salvaged or quarantined, never stored as-is; a file that vanished
or is not a file is counted and dropped from the queue, never retried.
A segment leaves the spool only after `put` returned: a crash between the two re-uploads
the same key (derived from the segment id), so the store never holds the events twice.
Retryable failures back off exponentially with full jitter; a permanent one (access
denied, missing bucket) moves the segment to quarantine: counted and logged, never dropped.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from pathlib import Path

import trio

from ..core.segment import object_key
from ..errors import PermanentStoreError
from ..metrics import Metrics
from ..stores.base import ObjectStore
from . import segment_files as files
from .ledger import SpoolLedger
from .segment_files import SealedSegment
from .segment_reports import report_segment

log = logging.getLogger("gravixd.uploader")


class Uploader:
    def __init__(
        self,
        store: ObjectStore,
        sealed: trio.MemoryReceiveChannel[SealedSegment],
        ledger: SpoolLedger,
        spool_dir: Path,
        metrics: Metrics,
        *,
        concurrency: int,
        retry_initial_seconds: float,
        retry_max_seconds: float,
        clock_unix_seconds: Callable[[], float],
        after_upload: Callable[[SealedSegment, str], bool] | None = None,
    ) -> None:
        self.store = store
        # Returns True when it takes the uploaded segment over (the Iceberg committer, which
        # deletes the spool copy after its commit); otherwise it is deleted here.
        self.after_upload = after_upload
        # Sealed segments come from the spool through `sealed`; the uploader owns them from
        # then on, and gives their bytes back to the spool's ledger once they left.
        self._sealed = sealed
        self.ledger = ledger
        self.spool_dir = spool_dir
        self.metrics = metrics
        self.concurrency = concurrency
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self.clock_unix_seconds = clock_unix_seconds
        self._in_progress = 0
        self._drained = trio.Event()
        self.last_error: str | None = None
        metrics.register_gauges(
            "upload_queue_segments",
            "Sealed segments waiting for or in upload.",
            lambda: self.backlog,
        )

    @property
    def backlog(self) -> int:
        """Segments queued (or waiting to be queued) for upload, and being uploaded."""
        queued = self._sealed.statistics()
        return queued.current_buffer_used + queued.tasks_waiting_send + self._in_progress

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.concurrency):
                nursery.start_soon(self._worker)
            task_status.started()

    async def wait_drained(self) -> None:
        """Return once every submitted segment is uploaded or quarantined."""
        while self.backlog:
            await self._drained.wait()

    async def _worker(self) -> None:
        while True:
            segment = await self._sealed.receive()
            self._in_progress += 1
            try:
                await self._upload(segment)
            finally:
                self._in_progress -= 1
                if not self.backlog:
                    self._drained.set()
                    self._drained = trio.Event()

    async def _upload(self, segment: SealedSegment) -> None:
        report = await self._verify(segment)
        self._report(segment.stream, segment.segment_id, "upload", report)
        checked = report.sealed
        self.ledger.reserve(checked.size_bytes if checked is not None else 0)
        self.ledger.release(segment.size_bytes)
        if checked is None:
            return
        segment = checked
        key = object_key(segment.stream, segment.segment_id, segment.segment_format)
        attempt = 0
        while True:
            started = trio.current_time()
            try:
                await self.store.put(key, segment.path)
            except PermanentStoreError as exc:
                self.metrics.upload_errors.labels("permanent").inc()
                self._quarantine(segment, key, exc)
                return
            except Exception as exc:  # noqa: BLE001 - every other failure is retried
                if not await trio.to_thread.run_sync(segment.path.is_file):
                    # Gone (removed by hand, another process): no retry can bring it back,
                    # and retrying would pin this worker forever.
                    report = files.SealReport("gone", error=f"{segment.path} vanished ({exc})")
                    self._report(segment.stream, segment.segment_id, "upload", report)
                    self.ledger.release(segment.size_bytes)
                    return
                self.metrics.upload_errors.labels("retryable").inc()
                self.last_error = str(exc)
                delay = random.uniform(
                    0, min(self.retry_max_seconds, self.retry_initial_seconds * 2**attempt)
                )
                log.warning(
                    "upload failed, retrying",
                    extra={
                        "event": "upload_retry",
                        "key": key,
                        "attempt": attempt + 1,
                        "retry_in_seconds": round(delay, 3),
                        "error": str(exc),
                    },
                )
                attempt += 1
                self.metrics.upload_retries.inc()
                await trio.sleep(delay)
                continue
            break
        self.last_error = None
        self.metrics.upload_duration.observe(trio.current_time() - started)
        self.metrics.segments_uploaded.labels(segment.stream).inc()
        self.metrics.upload_bytes.labels(segment.stream).inc(segment.size_bytes)
        self.metrics.last_upload_timestamp.set(self.clock_unix_seconds())
        if self.after_upload is not None and self.after_upload(segment, key):
            return
        await trio.to_thread.run_sync(segment.path.unlink, True)
        self.ledger.release(segment.size_bytes)
        log.debug(
            "segment uploaded",
            extra={"event": "upload_done", "key": key, "bytes": segment.size_bytes},
        )

    def _report(self, stream: str, segment_id: str, stage: str, report: files.SealReport) -> None:
        report_segment(self.metrics, stream, segment_id, stage, report)

    async def _verify(self, segment: SealedSegment) -> files.SealReport:
        """Check the file before it goes out; an I/O error doing so (not damage: EIO, a full
        disk while salvaging) is retried with backoff like a failed upload."""
        for attempt in itertools.count():
            try:
                return await trio.to_thread.run_sync(
                    files.verify_sealed_sync, self.spool_dir, segment
                )
            except OSError as exc:
                delay = min(self.retry_max_seconds, self.retry_initial_seconds * 2**attempt)
                log.warning(
                    "could not check segment before upload, retrying",
                    extra={
                        "event": "upload_verify_retry",
                        "segment": segment.segment_id,
                        "attempt": attempt + 1,
                        "retry_in_seconds": delay,
                        "error": str(exc),
                    },
                )
                await trio.sleep(delay)
        raise AssertionError("unreachable")

    def _quarantine(self, segment: SealedSegment, key: str, exc: Exception) -> None:
        try:
            target = files.quarantine(self.spool_dir, segment.stream, segment.path)
        except OSError as move_error:
            log.error(
                "could not quarantine segment",
                extra={"event": "upload_quarantine_failed", "key": key, "error": str(move_error)},
            )
            return
        self.metrics.segments_quarantined.labels("store_rejected").inc()
        self.ledger.release(segment.size_bytes)
        log.error(
            "store rejected segment; quarantined",
            extra={
                "event": "upload_quarantined",
                "key": key,
                "path": str(target),
                "error": str(exc),
            },
        )
