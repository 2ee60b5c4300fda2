"""`gravixd rollup`: compact each hour's small segments into large Parquet files for Trino,
DuckDB and Cube, idempotently, on any ObjectStore.

Layout (DESIGN §3; keys are relative to the store URL's prefix):

    {stream}/dt=YYYY-MM-DD/hour=HH/{segment_id}.arrow|.parquet       sources (the daemon's)
    rollup/{stream}/dt=YYYY-MM-DD/hour=HH/part-NNNNN.parquet         output (zstd Parquet)
    rollup/{stream}/dt=YYYY-MM-DD/hour=HH/_manifest-NNNNN.json       commit records
    rollup-commits/{stream}/dt=YYYY-MM-DD/hour=HH/batch-NNNNN.parquet the same, as a table

Protocol, per (stream, hour), one rollup process at a time:

1. Read every manifest of the hour. A manifest is the commit record of one *batch*: the source
   keys it consumed and the parts (key, rows, bytes, sha256) that hold their rows. Sources
   named by a manifest are *covered*; parts named by one are *committed*.
2. Delete parts no manifest names: leftovers of a run that crashed after writing parts and
   before its manifest. Their rows are still in the sources, so they are written again.
3. List the hour's sources. Covered ones are deleted (unless `keep_sources`): this finishes
   a run that crashed between its manifest and its deletes, and removes a segment the daemon
   uploaded again after a crash (same segment id, same key) - manifests are tombstones.
4. Uncovered sources (all of them on a first run; late arrivals later) form a new batch: they
   are read in segment-id order and streamed into parts numbered after the last committed
   part. Each part is uploaded, read back and checked (sha256 of the bytes, Parquet row count)
   before the next step.
5. Write the batch's manifest (`_manifest-NNNNN.json`, one put: atomic). This is the commit
   point: before it the batch does not exist, after it the sources are redundant.
5b. Write the batch's commit record (`rollup-commits/…/batch-NNNNN.parquet`, schema
   `COMMITS_SCHEMA`): the manifest's sources and parts as rows, for query engines. The views
   that count every event once (`facts_all`, docs/query.md) read parts it names and segments
   it does not name, so it must exist before any source it names is deleted: step 3 writes
   a missing one (a crash between 5 and 5b, or manifests older than commit records) before
   deleting covered sources.
6. Delete the batch's sources (unless `keep_sources`).

A crash anywhere leaves the hour in a state that the next run completes without duplicate or
lost rows: before 5, the sources are intact and the orphan parts are removed (2); after 5,
the covered sources are deleted (3). Re-running after success finds nothing uncovered.
Readers of `rollup/` may briefly see orphan parts of a crashed run beside the committed ones
only when a run crashed; files named `_*` are hidden from Hive, Trino, pyarrow and DuckDB
globs of `*.parquet`. Two rollups of the same store at once are not safe (S3 offers no lock):
run it as one CronJob with `concurrencyPolicy: Forbid`, or inside one daemon.

Heavy work (decoding Arrow, encoding Parquet, hashing) runs in worker threads; this module
must never block the event loop, and never deletes a source before its rows are committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import trio

from .errors import GravixdError, StoreError
from .schema import COMMITS_SCHEMA, STREAMS
from .stores import ObjectStore

__all__ = [
    "HourReport",
    "RollupError",
    "RollupReport",
    "main",
    "rollup",
    "run_rollup_schedule",
]

log = logging.getLogger(__name__)

ROLLUP_PREFIX = "rollup"
COMMITS_PREFIX = "rollup-commits"
# An empty object at rollup/{stream}/ and rollup-commits/{stream}/ so that those locations
# exist before the first commit: Trino's CREATE TABLE refuses an external location that does
# not exist. Names starting with "_" are hidden from Trino, Hive, pyarrow and *.parquet globs.
LAYOUT_MARKER = "_gravixd"
_LAYOUT_MARKER_BODY = b"gravixd rollup: keeps this table location in existence for query engines\n"
MANIFEST_VERSION = 1
# Uncompressed bytes buffered before they are written as one Parquet row group: large row
# groups make scans fast (Trino and DuckDB read a row group per split/thread); 128 MiB is
# the size Parquet's own docs and Spark use, and bounds this process's memory.
MAX_ROW_GROUP_BYTES = 128 * 1024 * 1024

_SOURCE_KEY = re.compile(
    r"^(?P<stream>[a-z]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"(?P<segment_id>[^/]+)\.(?P<ext>arrow|parquet)$"
)
_PART_NAME = re.compile(r"^part-(\d{5,})\.parquet$")
_MANIFEST_NAME = re.compile(r"^_manifest-(\d{5,})\.json$")
_MANIFEST_KEY = re.compile(
    r"^" + ROLLUP_PREFIX + r"/(?P<stream>[a-z]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"_manifest-(?P<batch>\d{5,})\.json$"
)


class RollupError(GravixdError):
    """An hour could not be rolled up (unreadable segment, wrong schema, failed check)."""


class PartEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: str
    rows: int
    bytes: int
    sha256: str


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    stream: str
    dt: str
    hour: int
    batch: int
    sources: list[str]
    source_rows: int
    parts: list[PartEntry]


_manifest_decoder = msgspec.json.Decoder(Manifest)


@dataclass(frozen=True, order=True)
class Hour:
    """One partition: a stream and a UTC hour."""

    stream: str
    start: datetime

    @property
    def partition(self) -> str:
        return f"dt={self.start:%Y-%m-%d}/hour={self.start:%H}"

    @property
    def source_prefix(self) -> str:
        return f"{self.stream}/{self.partition}/"

    @property
    def rollup_prefix(self) -> str:
        return f"{ROLLUP_PREFIX}/{self.stream}/{self.partition}/"

    @property
    def commits_prefix(self) -> str:
        return f"{COMMITS_PREFIX}/{self.stream}/{self.partition}/"


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
        go on; nothing of a failed hour is deleted beyond what step 2/3 of the protocol allow.

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

    open_hour_start = _hour_floor(now)
    report = RollupReport()
    for stream in streams:
        await _ensure_layout_markers(store, stream)
        hours = set(await _hours_with_sources(store, stream))
        hours |= await _hours_missing_commit_records(store, stream)
        for hour in sorted(hours):
            if since is not None and hour.start < _hour_floor(since):
                continue
            if until is not None and hour.start >= until:
                continue
            if hour.start >= open_hour_start and not include_current_hour:
                report.hours_skipped_open += 1
                continue
            report.hours.append(
                await _rollup_hour_reporting(store, hour, target_file_bytes, keep_sources, tmp_dir)
            )
    return report


async def _hours_with_sources(store: ObjectStore, stream: str) -> list[Hour]:
    hours: set[Hour] = set()
    for key in await store.list(f"{stream}/"):
        match = _SOURCE_KEY.match(key)
        if match is None or match["stream"] != stream:
            continue
        try:
            start = datetime.strptime(f"{match['dt']} {match['hour']}", "%Y-%m-%d %H")
        except ValueError:
            log.warning("Skipping key %r: expected dt=YYYY-MM-DD/hour=HH, got a bad date", key)
            continue
        hours.add(Hour(stream, start.replace(tzinfo=UTC)))
    return sorted(hours)


async def _ensure_layout_markers(store: ObjectStore, stream: str) -> None:
    for prefix in (ROLLUP_PREFIX, COMMITS_PREFIX):
        key = f"{prefix}/{stream}/{LAYOUT_MARKER}"
        if key not in await store.list(key):
            await store.put(key, _LAYOUT_MARKER_BODY)


async def _hours_missing_commit_records(store: ObjectStore, stream: str) -> set[Hour]:
    """Hours with a manifest whose commit record is missing: a run crashed between steps 5
    and 5b, or the hour was rolled up before commit records existed (step 3 writes it)."""
    recorded = set(await store.list(f"{COMMITS_PREFIX}/{stream}/"))
    hours: set[Hour] = set()
    for key in await store.list(f"{ROLLUP_PREFIX}/{stream}/"):
        match = _MANIFEST_KEY.match(key)
        if match is None or match["stream"] != stream:
            continue
        hour = Hour(
            stream,
            datetime.strptime(f"{match['dt']} {match['hour']}", "%Y-%m-%d %H").replace(tzinfo=UTC),
        )
        if _commit_record_key(hour, int(match["batch"])) not in recorded:
            hours.add(hour)
    return hours


def _commit_record_key(hour: Hour, batch: int) -> str:
    return f"{hour.commits_prefix}batch-{batch:05d}.parquet"


def _commit_record_bytes(manifest: Manifest) -> bytes:
    """The manifest as rows of COMMITS_SCHEMA, zstd Parquet (a few KiB)."""
    names = [key.rsplit("/", 1)[-1] for key in manifest.sources]
    parts = [part.key.rsplit("/", 1)[-1] for part in manifest.parts]
    table = pa.table(
        {
            "batch": [manifest.batch] * (len(names) + len(parts)),
            "role": ["source"] * len(names) + ["part"] * len(parts),
            "file": names + parts,
        },
        schema=COMMITS_SCHEMA,
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


async def _write_commit_record(store: ObjectStore, hour: Hour, manifest: Manifest) -> None:
    data = await trio.to_thread.run_sync(_commit_record_bytes, manifest)
    await store.put(_commit_record_key(hour, manifest.batch), data)


async def _rollup_hour_reporting(
    store: ObjectStore, hour: Hour, target_file_bytes: int, keep_sources: bool, tmp_dir: Path | None
) -> HourReport:
    report = HourReport(stream=hour.stream, dt=f"{hour.start:%Y-%m-%d}", hour=hour.start.hour)
    started = trio.current_time()
    try:
        await _rollup_hour(store, hour, target_file_bytes, keep_sources, tmp_dir, report)
    except (StoreError, RollupError) as exc:
        report.status = "failed"
        report.error = str(exc)
        log.error("Rollup of %s %s failed: %s", hour.stream, hour.partition, exc)
    report.seconds = round(trio.current_time() - started, 3)
    return report


async def _rollup_hour(
    store: ObjectStore,
    hour: Hour,
    target_file_bytes: int,
    keep_sources: bool,
    tmp_dir: Path | None,
    report: HourReport,
) -> None:
    # 1. What earlier runs committed.
    existing = await store.list(hour.rollup_prefix)
    manifests: list[Manifest] = []
    for key in existing:
        if _MANIFEST_NAME.match(key.rsplit("/", 1)[-1]):
            manifests.append(await _read_manifest(store, key))
    covered = {source for m in manifests for source in m.sources}
    committed = {part.key for m in manifests for part in m.parts}
    if manifests:
        # 5b of an earlier run, if it did not happen: before any covered source is deleted.
        recorded = set(await store.list(hour.commits_prefix))
        for m in manifests:
            if _commit_record_key(hour, m.batch) not in recorded:
                await _write_commit_record(store, hour, m)
                report.commit_records_written += 1

    # 2. Orphan parts of a run that crashed before its manifest.
    for key in existing:
        if _PART_NAME.match(key.rsplit("/", 1)[-1]) and key not in committed:
            await store.delete(key)
            report.orphan_parts_removed += 1

    # 3. Sources an earlier batch already holds.
    sources = [k for k in await store.list(hour.source_prefix) if _is_source_of(k, hour)]
    if not keep_sources:
        for key in sources:
            if key in covered:
                await store.delete(key)
                report.sources_deleted += 1
    if report.orphan_parts_removed or report.sources_deleted or report.commit_records_written:
        report.status = "finished"

    # 4. A new batch of the uncovered sources, in segment-id order.
    new_sources = sorted(k for k in sources if k not in covered)
    if not new_sources:
        return
    batch = max((m.batch for m in manifests), default=-1) + 1
    first_part = max((_part_number(k) for k in committed), default=-1) + 1
    report.batch = batch
    staging = Path(
        await trio.to_thread.run_sync(
            lambda: tempfile.mkdtemp(prefix="gravixd-rollup-", dir=tmp_dir)
        )
    )
    try:
        parts, source_rows = await _write_parts(
            store, hour, new_sources, target_file_bytes, first_part, staging, report
        )
    finally:
        await trio.to_thread.run_sync(shutil.rmtree, staging, True)
    part_rows = sum(p.rows for p in parts)
    if part_rows != source_rows:  # a bug, never expected; do not commit
        raise RollupError(
            f"Expected {source_rows} rows in the parts of {hour.rollup_prefix}, got {part_rows}"
        )

    # 5. Commit.
    manifest = Manifest(
        version=MANIFEST_VERSION,
        stream=hour.stream,
        dt=f"{hour.start:%Y-%m-%d}",
        hour=hour.start.hour,
        batch=batch,
        sources=new_sources,
        source_rows=source_rows,
        parts=parts,
    )
    await store.put(
        f"{hour.rollup_prefix}_manifest-{batch:05d}.json", msgspec.json.encode(manifest)
    )
    report.status = "rolled"
    report.segments_rolled = len(new_sources)
    report.rows = source_rows
    # 5b. The same commit, readable by query engines (before 6: the views rely on it).
    await _write_commit_record(store, hour, manifest)
    report.commit_records_written += 1

    # 6. The sources are redundant now.
    if not keep_sources:
        for key in new_sources:
            await store.delete(key)
            report.sources_deleted += 1


async def _read_manifest(store: ObjectStore, key: str) -> Manifest:
    data = await store.get(key)
    try:
        return _manifest_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise RollupError(f"Expected a rollup manifest at {key!r}, got: {exc}") from exc


def _is_source_of(key: str, hour: Hour) -> bool:
    match = _SOURCE_KEY.match(key)
    return match is not None and key.startswith(hour.source_prefix)


def _part_number(key: str) -> int:
    match = _PART_NAME.match(key.rsplit("/", 1)[-1])
    assert match is not None, key
    return int(match[1])


async def _write_parts(
    store: ObjectStore,
    hour: Hour,
    sources: list[str],
    target_file_bytes: int,
    first_part: int,
    staging: Path,
    report: HourReport,
) -> tuple[list[PartEntry], int]:
    writer = _PartWriter(STREAMS[hour.stream], target_file_bytes, staging, first_part)
    parts: list[PartEntry] = []
    source_rows = 0

    async def ship(done: list[_StagedPart]) -> None:
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


async def _verify_part(store: ObjectStore, key: str, staged: _StagedPart) -> None:
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


# --- the sync part writer (runs in worker threads) -------------------------------------


@dataclass(frozen=True)
class _StagedPart:
    path: Path
    rows: int
    size_bytes: int
    sha256: str


class _PartWriter:
    """Streams record batches into zstd Parquet files of about `target_file_bytes`.

    Batches are buffered up to one row group; after each row group the file's size is
    known exactly (Parquet writes row groups whole), and the part is closed once it reaches
    the target. Called from one worker thread at a time, never concurrently.
    """

    def __init__(self, schema: pa.Schema, target_file_bytes: int, directory: Path, first: int):
        self.schema = schema
        self.target_file_bytes = target_file_bytes
        self.row_group_bytes = min(target_file_bytes, MAX_ROW_GROUP_BYTES)
        self.directory = directory
        self.next_number = first
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._rows = 0

    def add_segment(self, key: str, data: bytes) -> tuple[int, list[_StagedPart]]:
        table = _read_segment(key, data)
        if not table.schema.equals(self.schema, check_metadata=False):
            raise RollupError(
                f"Expected segment {key!r} to have the {self.schema.names} schema of its "
                f"stream, got {table.schema.names} with types "
                f"{[str(t) for t in table.schema.types]}"
            )
        done: list[_StagedPart] = []
        for batch in table.to_batches():
            if batch.num_rows == 0:
                continue
            self._pending.append(batch)
            self._pending_bytes += batch.nbytes
            if self._pending_bytes >= self.row_group_bytes:
                done += self._flush_row_group()
        return table.num_rows, done

    def finish(self) -> list[_StagedPart]:
        done = self._flush_row_group() if self._pending else []
        if self._writer is not None:
            done.append(self._close_part())
        return done

    def close(self) -> None:
        """Release an open file after a failure (the staging directory is removed anyway)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _flush_row_group(self) -> list[_StagedPart]:
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._pending, self._pending_bytes = [], 0
        if self._writer is None:
            self._path = self.directory / f"part-{self.next_number:05d}.parquet"
            self.next_number += 1
            self._sink = pa.OSFile(str(self._path), "wb")
            self._writer = pq.ParquetWriter(
                self._sink, self.schema, compression="zstd", write_statistics=True
            )
            self._rows = 0
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._rows += table.num_rows
        assert self._sink is not None
        if self._sink.tell() >= self.target_file_bytes:
            return [self._close_part()]
        return []

    def _close_part(self) -> _StagedPart:
        assert self._writer is not None and self._sink is not None and self._path is not None
        self._writer.close()
        self._sink.close()
        self._writer = self._sink = None
        digest = hashlib.sha256()
        with open(self._path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return _StagedPart(self._path, self._rows, self._path.stat().st_size, digest.hexdigest())


def _read_segment(key: str, data: bytes) -> pa.Table:
    """Decode one segment: Arrow IPC file (or stream) format, or Parquet."""
    try:
        if key.endswith(".parquet"):
            return pq.read_table(pa.BufferReader(data))
        if data[:6] == b"ARROW1":
            return pa.ipc.open_file(pa.BufferReader(data)).read_all()
        return pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise RollupError(f"Expected segment {key!r} to be readable, got: {exc}") from exc


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


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


# --- the command line ------------------------------------------------------------------


def _parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time; no offset means UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Expected an ISO 8601 time like 2026-11-25T20:00Z, got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# The settings rollup reads: where the store is and how to reach it, and its file size.
ROLLUP_KEYS = (
    "store_url",
    "s3_endpoint_url",
    "s3_region",
    "s3_path_style",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_sse",
    "s3_sse_kms_key_id",
    "rollup_target_file_bytes",
)


class UsageError(Exception):
    """A bad command line; main() reports it as text or, with --json, as JSON."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from . import config

    parser = _Parser(
        prog="gravixd rollup",
        description="Compact each closed hour's segments into large Parquet files at "
        "rollup/{stream}/dt=YYYY-MM-DD/hour=HH/part-NNNNN.parquet; idempotent.",
    )
    rollup_args = parser.add_argument_group("rollup")
    rollup_args.add_argument(
        "--stream",
        action="append",
        choices=sorted(STREAMS),
        help="stream (repeatable; default all)",
    )
    rollup_args.add_argument("--since", type=_parse_time, help="first hour (ISO 8601, UTC)")
    rollup_args.add_argument("--until", type=_parse_time, help="end, exclusive (ISO 8601, UTC)")
    rollup_args.add_argument("--keep-sources", action="store_true", help="do not delete segments")
    rollup_args.add_argument(
        "--include-current-hour", action="store_true", help="also roll up the open hour"
    )
    rollup_args.add_argument(
        "--json", action="store_true", help="print the report (or the error) as JSON"
    )
    config.add_arguments(parser, keys=ROLLUP_KEYS)
    return parser


def store_options(cfg: Any) -> dict[str, Any]:
    """The `s3_*` keys of a config, for `open_store` (other schemes take none)."""
    if not str(cfg.store_url).startswith("s3://"):
        return {}
    return {name: getattr(cfg, name) for name in ROLLUP_KEYS if name.startswith("s3_")}


def main(argv: list[str]) -> int:
    """`gravixd rollup [flags]`. Returns 0 when every hour succeeded, 1 when some failed,
    2 on a usage or configuration error."""
    from . import config
    from .stores import open_store

    as_json = "--json" in argv  # known before parsing, so that usage errors obey it too

    def fail(message: str, code: int) -> int:
        if as_json:
            print(json.dumps({"ok": False, "error": message, "exit_code": code}))
        else:
            print(f"gravixd rollup: {message}", file=sys.stderr)
        return code

    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except UsageError as exc:
        if not as_json:
            parser.print_usage(sys.stderr)
        return fail(str(exc), 2)
    if ns.since is not None and ns.until is not None and ns.since >= ns.until:
        return fail(
            f"--since must be before --until (--until is exclusive), got --since"
            f" {ns.since.isoformat()} and --until {ns.until.isoformat()}",
            2,
        )
    try:
        cfg = config.load(vars(ns), os.environ).config
        store = open_store(cfg.store_url, **store_options(cfg))
    except (GravixdError, ValueError) as exc:
        return fail(str(exc), 2)

    async def run() -> RollupReport:
        try:
            return await rollup(
                store,
                streams=tuple(ns.stream or ("facts", "events")),
                since=ns.since,
                until=ns.until,
                target_file_bytes=cfg.rollup_target_file_bytes,
                keep_sources=ns.keep_sources,
                include_current_hour=ns.include_current_hour,
                now=datetime.now(UTC),
            )
        finally:
            await store.aclose()

    try:
        report = trio.run(run)
    except StoreError as exc:  # listing failed: the store itself is unreachable
        return fail(str(exc), 1)
    if ns.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
        if report.hours_skipped_open and not ns.include_current_hour:
            print(
                f"hint: {report.hours_skipped_open} open hour(s) skipped: an hour is rolled up"
                " once it has closed; --include-current-hour rolls it up now",
                file=sys.stderr,
            )
    return 0 if report.ok else 1


def format_report(report: RollupReport) -> str:
    lines = [
        f"{'stream':<7} {'dt':<10} {'hour':>4} {'status':<10} {'segments':>8} "
        f"{'rows':>10} {'parts':>5} {'bytes':>12} {'deleted':>7}"
    ]
    for h in report.hours:
        lines.append(
            f"{h.stream:<7} {h.dt:<10} {h.hour:>4} {h.status:<10} {h.segments_rolled:>8} "
            f"{h.rows:>10} {len(h.parts_written):>5} {h.bytes_written:>12} {h.sources_deleted:>7}"
        )
    lines.append(
        f"total: {report.rows} rows, {report.parts_written} parts, {report.bytes_written} bytes, "
        f"{report.sources_deleted} sources deleted, {report.hours_skipped_open} open hours "
        f"skipped, {len(report.errors)} errors"
    )
    lines += [f"error: {e}" for e in report.errors]
    return "\n".join(lines)
