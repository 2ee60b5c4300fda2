"""The rollup's I/O: compact each closed hour's segments into large Parquet files, on any
ObjectStore, idempotently (the Hive layout, for DuckDB and pyarrow without a catalog); and,
with an Iceberg catalog, the table upkeep of `gravixd.rollup.tables`.

Per (stream, hour), one rollup process at a time, the steps of `plan.HourPlan`:

1. `read_manifests`: every manifest of the hour. A manifest is the commit record of one
   *batch*: the source keys it consumed and the parts (key, rows, bytes, sha256) that hold
   their rows. Sources named by a manifest are *covered*; parts named by one are *committed*.
2. `write_missing_commit_records`: the queryable form of a manifest (`rollup-commits/…`),
   if a crash left it out; before any covered source is deleted (the views rely on it).
3. `remove_orphan_parts`: parts no manifest names, left by a run that crashed before its
   manifest. Their rows are still in the sources, so they are written again.
4. `remove_covered_sources`: finishes a run that crashed between its manifest and its
   deletes, and removes a segment the daemon uploaded again after a crash (same key).
5. `write_batch`: the uncovered sources, in segment-id order, streamed into parts numbered
   after the last committed part; each part uploaded, read back and checked.
6. `commit_batch`: the manifest (one put: atomic, the commit point), then its record.
7. `remove_batch_sources`: the sources are redundant now (unless `keep_sources`).

A crash anywhere leaves the hour in a state the next run completes without duplicate or
lost rows. Two rollups of the same store at once are not safe (S3 offers no lock): run it as
one CronJob with `concurrencyPolicy: Forbid`, or inside one daemon.

Heavy work (decoding, encoding Parquet, hashing) runs in worker threads; this module never
blocks the event loop, and never deletes a source before its rows are committed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import trio

from ..errors import StoreError
from ..schema import STREAMS
from ..stores import ObjectStore
from .parts import PartWriter, RollupError, StagedPart
from .plan import (
    LAYOUT_MARKER,
    LAYOUT_MARKER_BODY,
    MANIFEST_VERSION,
    Hour,
    HourPlan,
    Manifest,
    PartEntry,
    commit_record_bytes,
    hours_missing_commit_records,
    manifest_keys,
    plan_hour,
    select_hours,
    source_hours,
)

log = logging.getLogger("gravixd.rollup")

_manifest_decoder = msgspec.json.Decoder(Manifest)


@dataclass
class HourReport:
    stream: str
    dt: str
    hour: int
    # rolled: a new batch was written; finished: only leftovers of an earlier run were
    # cleaned; up-to-date: nothing to do; failed: see error (nothing was deleted unsafely).
    status: str = "up-to-date"
    batch: int | None = None
    segments_rolled: int = 0
    rows: int = 0
    parts_written: list[str] = field(default_factory=list)
    bytes_written: int = 0
    sources_deleted: int = 0
    orphan_parts_removed: int = 0
    commit_records_written: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class RollupReport:
    hours: list[HourReport] = field(default_factory=list)
    hours_skipped_open: int = 0

    @property
    def rows(self) -> int:
        return sum(h.rows for h in self.hours)

    @property
    def parts_written(self) -> int:
        return sum(len(h.parts_written) for h in self.hours)

    @property
    def bytes_written(self) -> int:
        return sum(h.bytes_written for h in self.hours)

    @property
    def sources_deleted(self) -> int:
        return sum(h.sources_deleted for h in self.hours)

    @property
    def errors(self) -> list[str]:
        return [f"{h.stream} {h.dt} hour={h.hour:02d}: {h.error}" for h in self.hours if h.error]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "parts_written": self.parts_written,
            "bytes_written": self.bytes_written,
            "sources_deleted": self.sources_deleted,
            "hours_skipped_open": self.hours_skipped_open,
            "hours": [asdict(h) for h in self.hours],
        }


# --- the async driver ------------------------------------------------------------------


async def rollup(
    store: ObjectStore,
    *,
    streams: Sequence[str] = ("facts", "events"),
    since: datetime | None = None,
    until: datetime | None = None,
    target_file_bytes: int,
    keep_sources: bool = False,
    now: datetime,
    include_current_hour: bool = False,
    tmp_dir: Path | None = None,
) -> RollupReport:
    """Roll up every hour of `streams` that has source segments.

    Args:
        since: first hour to consider (the hour containing it); None = the oldest.
        until: hours starting at or after it are left alone; None = no bound.
        target_file_bytes: a part is closed at the first row group that brings it to this
            size (compressed), so parts are about this size, the last of a batch smaller.
        keep_sources: leave the source segments in place (covered by the manifest, so never
            rolled twice).
        now: the current time; the hour containing it is still being written and is skipped
            unless `include_current_hour`.
        tmp_dir: where parts are staged before upload (default: the system temp dir).

    Returns:
        What was done per hour. An hour that fails is reported (``error``) and the others
        go on; nothing of a failed hour is deleted beyond what steps 3 and 4 allow.

    Raises:
        ValueError: an unknown stream or a naive datetime.
    """
    for stream in streams:
        if stream not in STREAMS:
            raise ValueError(f"Expected a stream in {sorted(STREAMS)}, got {stream!r}")
    if target_file_bytes <= 0:
        raise ValueError(f"Expected target_file_bytes > 0, got {target_file_bytes}")
    for name, value in (("now", now), ("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise ValueError(f"Expected an aware datetime for {name}, got naive {value}")

    report = RollupReport()
    for stream in streams:
        await ensure_layout_markers(store, stream)
        hours, bad = source_hours(stream, await store.list(f"{stream}/"))
        for key in bad:
            log.warning("Skipping key %r: expected dt=YYYY-MM-DD/hour=HH, got a bad date", key)
        hours |= hours_missing_commit_records(
            stream,
            await store.list(f"rollup/{stream}/"),
            await store.list(f"rollup-commits/{stream}/"),
        )
        chosen, skipped_open = select_hours(
            hours, now=now, since=since, until=until, include_current_hour=include_current_hour
        )
        report.hours_skipped_open += skipped_open
        for hour in chosen:
            report.hours.append(
                await _rollup_hour_reporting(store, hour, target_file_bytes, keep_sources, tmp_dir)
            )
    return report


async def ensure_layout_markers(store: ObjectStore, stream: str) -> None:
    for prefix in ("rollup", "rollup-commits"):
        key = f"{prefix}/{stream}/{LAYOUT_MARKER}"
        if key not in await store.list(key):
            await store.put(key, LAYOUT_MARKER_BODY)


async def _rollup_hour_reporting(
    store: ObjectStore, hour: Hour, target_file_bytes: int, keep_sources: bool, tmp_dir: Path | None
) -> HourReport:
    report = HourReport(stream=hour.stream, dt=f"{hour.start:%Y-%m-%d}", hour=hour.start.hour)
    started = trio.current_time()
    try:
        await rollup_hour(store, hour, target_file_bytes, keep_sources, tmp_dir, report)
    except (StoreError, RollupError) as exc:
        report.status = "failed"
        report.error = str(exc)
        log.error("Rollup of %s %s failed: %s", hour.stream, hour.partition, exc)
    report.seconds = round(trio.current_time() - started, 3)
    return report


async def rollup_hour(
    store: ObjectStore,
    hour: Hour,
    target_file_bytes: int,
    keep_sources: bool,
    tmp_dir: Path | None,
    report: HourReport,
) -> None:
    """One hour's rollup: plan it from listings, then take its steps in order."""
    existing = await store.list(hour.rollup_prefix)
    manifests = await read_manifests(store, existing)
    plan = plan_hour(
        hour,
        existing,
        manifests,
        await store.list(hour.commits_prefix),
        await store.list(hour.source_prefix),
    )
    await write_missing_commit_records(store, hour, plan, report)
    await remove_orphan_parts(store, plan, report)
    if not keep_sources:
        await remove_covered_sources(store, plan, report)
    if report.orphan_parts_removed or report.sources_deleted or report.commit_records_written:
        report.status = "finished"
    if not plan.new_sources:
        return
    manifest = await write_batch(store, hour, plan, target_file_bytes, tmp_dir, report)
    await commit_batch(store, hour, manifest, report)
    if not keep_sources:
        await remove_batch_sources(store, manifest, report)


async def read_manifests(store: ObjectStore, existing: list[str]) -> list[Manifest]:
    return [await _read_manifest(store, key) for key in manifest_keys(existing)]


async def write_missing_commit_records(
    store: ObjectStore, hour: Hour, plan: HourPlan, report: HourReport
) -> None:
    for manifest in plan.missing_commit_records:
        await _write_commit_record(store, hour, manifest)
        report.commit_records_written += 1


async def remove_orphan_parts(store: ObjectStore, plan: HourPlan, report: HourReport) -> None:
    for key in plan.orphan_parts:
        await store.delete(key)
        report.orphan_parts_removed += 1


async def remove_covered_sources(store: ObjectStore, plan: HourPlan, report: HourReport) -> None:
    for key in plan.covered_sources:
        await store.delete(key)
        report.sources_deleted += 1


async def write_batch(
    store: ObjectStore,
    hour: Hour,
    plan: HourPlan,
    target_file_bytes: int,
    tmp_dir: Path | None,
    report: HourReport,
) -> Manifest:
    """Stream the new sources into parts, each uploaded and checked; the batch's manifest
    (not yet stored: that is the commit)."""
    report.batch = plan.batch
    staging = Path(
        await trio.to_thread.run_sync(
            lambda: tempfile.mkdtemp(prefix="gravixd-rollup-", dir=tmp_dir)
        )
    )
    try:
        parts, source_rows = await _write_parts(
            store, hour, plan.new_sources, target_file_bytes, plan.first_part, staging, report
        )
    finally:
        await trio.to_thread.run_sync(shutil.rmtree, staging, True)
    part_rows = sum(p.rows for p in parts)
    if part_rows != source_rows:  # a bug, never expected; do not commit
        raise RollupError(
            f"Expected {source_rows} rows in the parts of {hour.rollup_prefix}, got {part_rows}"
        )
    return Manifest(
        version=MANIFEST_VERSION,
        stream=hour.stream,
        dt=f"{hour.start:%Y-%m-%d}",
        hour=hour.start.hour,
        batch=plan.batch,
        sources=plan.new_sources,
        source_rows=source_rows,
        parts=parts,
    )


async def commit_batch(
    store: ObjectStore, hour: Hour, manifest: Manifest, report: HourReport
) -> None:
    """The manifest (one put: before it the batch does not exist, after it the sources are
    redundant), then the same commit as a record query engines read."""
    await store.put(hour.manifest_key(manifest.batch), msgspec.json.encode(manifest))
    report.status = "rolled"
    report.segments_rolled = len(manifest.sources)
    report.rows = manifest.source_rows
    await _write_commit_record(store, hour, manifest)
    report.commit_records_written += 1


async def remove_batch_sources(store: ObjectStore, manifest: Manifest, report: HourReport) -> None:
    for key in manifest.sources:
        await store.delete(key)
        report.sources_deleted += 1


async def _write_commit_record(store: ObjectStore, hour: Hour, manifest: Manifest) -> None:
    data = await trio.to_thread.run_sync(commit_record_bytes, manifest)
    await store.put(hour.commit_record_key(manifest.batch), data)


async def _read_manifest(store: ObjectStore, key: str) -> Manifest:
    data = await store.get(key)
    try:
        return _manifest_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RollupError(f"Expected a rollup manifest at {key!r}, got: {exc}") from exc


async def _write_parts(
    store: ObjectStore,
    hour: Hour,
    sources: list[str],
    target_file_bytes: int,
    first_part: int,
    staging: Path,
    report: HourReport,
) -> tuple[list[PartEntry], int]:
    writer = PartWriter(STREAMS[hour.stream], target_file_bytes, staging, first_part)
    parts: list[PartEntry] = []
    source_rows = 0

    async def ship(done: list[StagedPart]) -> None:
        for staged in done:
            key = f"{hour.rollup_prefix}{staged.path.name}"
            await store.put(key, staged.path)
            await _verify_part(store, key, staged)
            await trio.to_thread.run_sync(staged.path.unlink)
            parts.append(PartEntry(key, staged.rows, staged.size_bytes, staged.sha256))
            report.parts_written.append(key)
            report.bytes_written += staged.size_bytes

    try:
        for key in sources:
            data = await store.get(key)
            rows, done = await trio.to_thread.run_sync(writer.add_segment, key, data)
            source_rows += rows
            del data
            await ship(done)
        await ship(await trio.to_thread.run_sync(writer.finish))
    finally:
        await trio.to_thread.run_sync(writer.close)
    return parts, source_rows


async def _verify_part(store: ObjectStore, key: str, staged: StagedPart) -> None:
    """Read the part back from the store: same bytes, and a Parquet file of the right rows."""
    data = await store.get(key)

    def check() -> str | None:
        if len(data) != staged.size_bytes or hashlib.sha256(data).hexdigest() != staged.sha256:
            return (
                f"Expected {staged.size_bytes} bytes with sha256 {staged.sha256[:16]}..., "
                f"got {len(data)} bytes that differ"
            )
        rows = pq.read_metadata(pa.BufferReader(data)).num_rows
        if rows != staged.rows:
            return f"Expected {staged.rows} rows, got {rows}"
        return None

    problem = await trio.to_thread.run_sync(check)
    if problem is not None:
        await store.delete(key)
        raise RollupError(f"Read-back check of {key!r} failed: {problem}")


# --- the daemon's schedule -------------------------------------------------------------


async def run_rollup_schedule(
    store: ObjectStore,
    interval_seconds: float,
    *,
    target_file_bytes: int,
    streams: Sequence[str] = ("facts", "events"),
    keep_sources: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_report: Callable[[RollupReport], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `rollup` every `interval_seconds` (first run one interval after start, when the
    daemon's start-up recovery is over) until cancelled. A failing run is logged and the
    next one tries again: rollup is housekeeping, it never takes the daemon down.

    Start it in the daemon's nursery when `rollup_interval_seconds > 0`:
    `nursery.start_soon(partial(run_rollup_schedule, store, cfg.rollup_interval_seconds,
    target_file_bytes=cfg.rollup_target_file_bytes))`.
    """
    if not interval_seconds > 0:
        raise ValueError(f"Expected interval_seconds > 0, got {interval_seconds}")
    task_status.started()
    while True:
        await trio.sleep(interval_seconds)
        try:
            report = await rollup(
                store,
                streams=streams,
                target_file_bytes=target_file_bytes,
                keep_sources=keep_sources,
                now=clock(),
            )
        except Exception:
            log.exception("Scheduled rollup failed; retrying in %s s", interval_seconds)
            continue
        log.info(
            "Rollup: %d rows into %d parts (%d bytes), %d sources deleted, %d errors",
            report.rows,
            report.parts_written,
            report.bytes_written,
            report.sources_deleted,
            len(report.errors),
        )
        if on_report is not None:
            on_report(report)
