"""Commits uploaded segments to the Iceberg tables (`iceberg_commit = "daemon"`).

The uploader hands each uploaded segment over (`submit`); from then on the committer owns
it: at most every `iceberg_commit_interval_seconds` it adds what is pending, per table, in
one snapshot, and only once that commit is durable in the catalog does it delete the spool
copy and give its bytes back to the spool's ledger. So a segment awaiting its commit is
counted as spool bytes like one awaiting upload: a catalog that is down, slow or refusing
commits fills the spool, and ingest sheds load (503) exactly as for a store outage, never
blocks. Failures retry with jittered exponential backoff, forever: the catalog coming back
is what clears the backlog. A crash at any point leaves the segment in the spool: the next
run uploads it again (same key) and the commit step skips it if the table's history already
names it (gravixd.iceberg.commit).

Blocking pyiceberg calls run in worker threads; this module never blocks the event loop and
never deletes a spool copy before its commit returned.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..iceberg.catalog import CatalogSettings
from ..metrics import Metrics
from ..stores.base import ObjectStore
from . import segment_files as files
from .ledger import SpoolLedger
from .segment_files import SealedSegment

log = logging.getLogger("gravixd.committer")


@dataclass(frozen=True)
class Uploaded:
    segment: SealedSegment
    key: str


class Committer:
    def __init__(
        self,
        settings: CatalogSettings,
        store: ObjectStore,
        ledger: SpoolLedger,
        spool_dir: Path,
        metrics: Metrics,
        *,
        interval_seconds: float,
        retention_seconds: float,
        retry_initial_seconds: float,
        retry_max_seconds: float,
        clock_unix_seconds: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.store = store
        self.ledger = ledger
        self.spool_dir = spool_dir
        self.metrics = metrics
        self.interval_seconds = interval_seconds
        self.retention_seconds = retention_seconds
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self.clock_unix_seconds = clock_unix_seconds
        self._pending: list[Uploaded] = []
        self._in_progress = 0
        self._changed = trio.Event()
        self._hurry = False  # draining: commit now, not at the next interval
        self._catalog: Any = None
        self._tables: dict[str, Any] = {}
        self.last_error: str | None = None
        metrics.register_gauges(
            "iceberg_commit_backlog_segments",
            "Uploaded segments waiting for their Iceberg commit (their spool copy is kept).",
            lambda: self.backlog,
        )

    @property
    def backlog(self) -> int:
        return len(self._pending) + self._in_progress

    def submit(self, segment: SealedSegment, key: str) -> None:
        """Take over an uploaded segment: it is committed, then its spool copy deleted."""
        self._pending.append(Uploaded(segment, key))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_drained(self) -> None:
        """Commit what is pending now (SIGTERM), and return once nothing is."""
        self._hurry = True
        self._wake()
        while self.backlog:
            await self._changed.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last_commit = -math.inf
        attempt = 0
        while True:
            while not self._pending:
                await self._changed.wait()
            # At most one commit per interval; a drain (SIGTERM) cuts the wait short.
            with trio.move_on_at(last_commit + self.interval_seconds):
                while not self._hurry:
                    await self._changed.wait()
            batch, self._pending = self._pending, []
            self._in_progress = len(batch)
            failed: list[Uploaded] = []
            try:
                for stream in sorted({u.segment.stream for u in batch}):
                    items = [u for u in batch if u.segment.stream == stream]
                    if not await self._commit_stream(stream, items):
                        failed += items
            finally:
                self._in_progress = 0
                self._pending = failed + self._pending
                self._wake()
            last_commit = trio.current_time()
            if failed:
                delay = random.uniform(
                    0, min(self.retry_max_seconds, self.retry_initial_seconds * 2**attempt)
                )
                attempt += 1
                await trio.sleep(delay)
            else:
                attempt = 0

    async def _commit_stream(self, stream: str, items: list[Uploaded]) -> bool:
        """One commit of a table; True when its segments are committed (or dropped)."""
        table_label = f"{self.settings.namespace}.{stream}"
        items = self._drop_too_old(stream, items)
        if not items:
            return True
        self.metrics.iceberg_commit_attempts.labels(table_label).inc()
        started = trio.current_time()
        work_dir = self.spool_dir / "iceberg" / stream
        try:
            table = await trio.to_thread.run_sync(self._table, stream)
            plans = await trio.to_thread.run_sync(
                functools.partial(_plan_all, items, self.settings.namespace, stream, work_dir)
            )
            for planned in plans.values():
                for file in planned:
                    if file.needs_upload:
                        await self.store.put(file.key, file.local_path)
            result = await trio.to_thread.run_sync(
                functools.partial(_commit, table, self.store, plans)
            )
        except Exception as exc:  # noqa: BLE001 - every failure is retried
            self.metrics.iceberg_commit_failures.labels(table_label).inc()
            self._tables.pop(stream, None)  # reload (and reconnect) on the next attempt
            self._catalog = None
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "Iceberg commit failed, retrying",
                extra={
                    "event": "iceberg_commit_retry",
                    "table": table_label,
                    "segments": len(items),
                    "error": self.last_error,
                },
            )
            return False
        self.last_error = None
        metrics = self.metrics
        metrics.iceberg_commit_conflicts.labels(table_label).inc(result.conflicts)
        metrics.iceberg_files_committed.labels(table_label).inc(result.files)
        metrics.iceberg_rows_committed.labels(table_label).inc(result.rows)
        metrics.iceberg_segments_already_committed.labels(table_label).inc(len(result.already))
        metrics.iceberg_last_commit_timestamp.labels(table_label).set(self.clock_unix_seconds())
        metrics.iceberg_commit_duration.observe(trio.current_time() - started)
        log.info(
            "committed to Iceberg",
            extra={
                "event": "iceberg_committed",
                "table": table_label,
                "segments": len(result.added),
                "already_committed": len(result.already),
                "files": result.files,
                "rows": result.rows,
                "snapshot_id": result.snapshot_id,
                "seconds": round(trio.current_time() - started, 4),
                "conflicts": result.conflicts,
            },
        )
        for item in items:
            try:
                await trio.to_thread.run_sync(item.segment.path.unlink, True)
            except OSError as exc:
                # Committed: the copy left behind is uploaded again at the next start and
                # found in the table's history; never worth stopping the daemon for.
                log.error(
                    "could not delete a committed segment's spool copy",
                    extra={"event": "iceberg_spool_delete_failed", "error": str(exc)},
                )
            self.ledger.release(item.segment.size_bytes)
        await trio.to_thread.run_sync(functools.partial(shutil.rmtree, work_dir, True))
        return True

    def _drop_too_old(self, stream: str, items: list[Uploaded]) -> list[Uploaded]:
        """Segments older than the kept history go to quarantine: whether they were
        committed before can no longer be told, and adding one twice is worse."""
        from ..iceberg.commit import too_old

        now = self.clock_unix_seconds()
        kept = []
        for item in items:
            if not too_old(item.segment.segment_id, now, self.retention_seconds):
                kept.append(item)
                continue
            try:
                target = files.quarantine(self.spool_dir, stream, item.segment.path)
            except OSError as exc:
                log.error(
                    "could not quarantine a segment too old to commit; kept in the spool",
                    extra={"event": "iceberg_quarantine_failed", "error": str(exc)},
                )
                continue
            self.ledger.release(item.segment.size_bytes)
            self.metrics.segments_quarantined.labels("older_than_iceberg_retention").inc()
            log.error(
                "segment older than the Iceberg snapshot retention: not committed, quarantined",
                extra={
                    "event": "iceberg_segment_too_old",
                    "segment": item.segment.segment_id,
                    "path": str(target),
                    "retention_seconds": self.retention_seconds,
                },
            )
        return kept

    def _table(self, stream: str) -> Any:
        """The stream's table, opening the catalog and creating the table as needed."""
        from ..iceberg.catalog import open_catalog
        from ..iceberg.tables import ensure_table, table_location

        table = self._tables.get(stream)
        if table is None:
            if self._catalog is None:
                self._catalog = open_catalog(self.settings)
            namespace = self.settings.namespace
            location = table_location(self.store, namespace, stream)
            table = ensure_table(self._catalog, namespace, stream, location)
            self._tables[stream] = table
        return table


def _plan_all(
    items: list[Uploaded], namespace: str, stream: str, work_dir: Path
) -> dict[str, list[Any]]:
    from ..iceberg.datafiles import plan_segment_files

    work_dir.mkdir(parents=True, exist_ok=True)
    return {
        u.segment.segment_id: plan_segment_files(
            u.segment.path, u.key, namespace, stream, u.segment.segment_id, work_dir
        )
        for u in items
    }


def _commit(table: Any, store: ObjectStore, plans: dict[str, list[Any]]) -> Any:
    from ..iceberg.commit import SegmentFiles, commit_segments
    from ..iceberg.tables import object_location

    segments = [
        SegmentFiles(
            segment_id,
            tuple((f.local_path, object_location(store, f.key)) for f in planned),
        )
        for segment_id, planned in plans.items()
    ]
    return commit_segments(table, segments)
