"""Iceberg table upkeep on one host, without Trino: what `gravixd rollup` does when
`iceberg_catalog_uri` is set.

Per table, in order:
1. `commit_new_segments` (`iceberg_commit = "rollup"` only): every Parquet segment in the
   store that no kept snapshot names is added, all in one snapshot (one committer per
   table, however many daemons upload).
2. `compact_closed_hours`: each closed event hour with several data files becomes a few
   large zstd Parquet files, in ONE atomic replace (an overwrite snapshot that deletes
   exactly the files it read and adds their rows): a reader sees the old files or the new
   ones, never both. A concurrent commit makes the replace conflict; it is retried on the
   fresh table, so files added meanwhile are left as they are.
3. `expire_snapshots`: snapshots older than `iceberg_snapshot_retention_seconds` go, and
   with them the files only they read (replaced segments, old parts, their manifests).
4. `remove_orphans`: files under the table's `data/` that no kept snapshot reads and that
   were written longer ago than the retention (a crashed run's parts).

Readers of a snapshot younger than the retention keep working: nothing they read is deleted.
pyiceberg calls run in worker threads; store I/O is awaited.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from ..iceberg.catalog import CatalogSettings
from ..stores import ObjectStore
from .plan import (
    SOURCE_KEY,
    TableFile,
    compacted_part_name,
    orphans,
    plan_compaction,
)

log = logging.getLogger("gravixd.rollup.tables")

COMPACTED_HOUR_PROPERTY = "gravixd.compacted-hour"


@dataclass
class TableReport:
    table: str
    segments_committed: int = 0
    rows_committed: int = 0
    hours_compacted: int = 0
    files_replaced: int = 0
    files_written: int = 0
    rows_compacted: int = 0
    snapshots_expired: int = 0
    files_removed: int = 0
    seconds: float = 0.0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TablesReport:
    tables: list[TableReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(t.error for t in self.tables)


async def upkeep_tables(
    store: ObjectStore,
    settings: CatalogSettings,
    *,
    streams: Sequence[str] = ("facts", "events"),
    commit_new: bool,
    now_unix_seconds: float,
    retention_seconds: float,
    target_file_bytes: int,
    tmp_dir: Path | None = None,
) -> TablesReport:
    """Steps 1-4 for each stream's table; a failing table is reported, the others go on."""
    from ..iceberg.catalog import open_catalog

    report = TablesReport()
    catalog = await trio.to_thread.run_sync(open_catalog, settings)
    for stream in streams:
        table_report = TableReport(table=f"{settings.namespace}.{stream}")
        report.tables.append(table_report)
        started = trio.current_time()
        staging = Path(
            await trio.to_thread.run_sync(
                lambda: tempfile.mkdtemp(prefix="gravixd-tables-", dir=tmp_dir)
            )
        )
        try:
            table = await trio.to_thread.run_sync(_open_table, catalog, store, settings, stream)
            if commit_new:
                await commit_new_segments(
                    store, table, settings.namespace, stream, now_unix_seconds,
                    retention_seconds, staging, table_report,
                )  # fmt: skip
            await compact_closed_hours(
                store, table, now_unix_seconds, target_file_bytes, staging, table_report
            )
            await expire_snapshots(store, table, now_unix_seconds, retention_seconds, table_report)
            await remove_orphans(
                store, table, settings.namespace, stream, now_unix_seconds, retention_seconds,
                table_report,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - reported; the next run tries again
            table_report.error = f"{type(exc).__name__}: {exc}"
            log.error("Table upkeep of %s failed: %s", table_report.table, table_report.error)
        finally:
            await trio.to_thread.run_sync(shutil.rmtree, staging, True)
        table_report.seconds = round(trio.current_time() - started, 3)
    return report


def _open_table(catalog: Any, store: ObjectStore, settings: CatalogSettings, stream: str) -> Any:
    from ..iceberg.tables import ensure_table, table_location

    location = table_location(store, settings.namespace, stream)
    return ensure_table(catalog, settings.namespace, stream, location)


# --- 1. commit ---------------------------------------------------------------------------


async def commit_new_segments(
    store: ObjectStore,
    table: Any,
    namespace: str,
    stream: str,
    now_unix_seconds: float,
    retention_seconds: float,
    staging: Path,
    report: TableReport,
) -> None:
    """Add every uploaded Parquet segment no kept snapshot names, in one snapshot."""
    from ..iceberg.commit import (
        SegmentFiles,
        commit_segments,
        committed_segment_ids,
        refresh_without_auto_retry,
        too_old,
    )
    from ..iceberg.datafiles import plan_segment_files
    from ..iceberg.tables import object_location

    await trio.to_thread.run_sync(refresh_without_auto_retry, table)
    committed = committed_segment_ids(table.metadata)
    segments: list[SegmentFiles] = []
    for key in await store.list(f"{stream}/"):
        match = SOURCE_KEY.match(key)
        if match is None or match["ext"] != "parquet" or match["stream"] != stream:
            continue
        segment_id = match["segment_id"]
        if segment_id in committed:
            continue
        if too_old(segment_id, now_unix_seconds, retention_seconds):
            log.warning(
                "Segment %s is older than the snapshot retention: not committed (was it"
                " committed and its snapshot expired? check before adding it by hand)",
                key,
            )
            continue
        local = staging / f"{segment_id}.parquet"
        data = await store.get(key)
        await trio.to_thread.run_sync(local.write_bytes, data)
        del data
        planned = await trio.to_thread.run_sync(
            plan_segment_files, local, key, namespace, stream, segment_id, staging
        )
        for file in planned:
            if file.needs_upload:
                await store.put(file.key, file.local_path)
        segments.append(
            SegmentFiles(
                segment_id, tuple((f.local_path, object_location(store, f.key)) for f in planned)
            )
        )
    if not segments:
        return
    result = await trio.to_thread.run_sync(functools.partial(commit_segments, table, segments))
    report.segments_committed = len(result.added)
    report.rows_committed = result.rows


# --- 2. compact --------------------------------------------------------------------------


def _current_files(table: Any) -> list[TableFile]:
    from ..iceberg.commit import refresh_without_auto_retry

    refresh_without_auto_retry(table)
    return [
        TableFile(
            hour=int(task.file.partition[0]),
            location=task.file.file_path,
            size_bytes=task.file.file_size_in_bytes,
            rows=task.file.record_count,
        )
        for task in table.scan().plan_files()
    ]


async def compact_closed_hours(
    store: ObjectStore,
    table: Any,
    now_unix_seconds: float,
    target_file_bytes: int,
    staging: Path,
    report: TableReport,
) -> None:
    plan = plan_compaction(
        await trio.to_thread.run_sync(_current_files, table), now_unix_seconds=now_unix_seconds
    )
    for hour, inputs in plan.items():
        await _compact_hour(
            store, table, hour, inputs, int(now_unix_seconds), target_file_bytes, staging, report
        )


async def _compact_hour(
    store: ObjectStore,
    table: Any,
    hour: int,
    inputs: list[TableFile],
    run_unix_seconds: int,
    target_file_bytes: int,
    staging: Path,
    report: TableReport,
) -> None:
    from ..iceberg.datafiles import hour_label
    from ..iceberg.tables import PARTITION_FIELD, key_of, object_location

    locations = [f.location for f in inputs]
    prefix = table.location().rstrip("/") + f"/data/{PARTITION_FIELD}={hour_label(hour)}/"
    writer = _CompactWriter(staging, target_file_bytes, run_unix_seconds, locations)
    try:
        for file in inputs:
            key = key_of(store, file.location)
            if key is not None:
                data = await store.get(key)
            else:  # a file outside gravixd's store (added by another tool): read through FileIO
                data = await trio.to_thread.run_sync(_read_io, table, file.location)
            await trio.to_thread.run_sync(writer.add, data)
            del data
        parts = await trio.to_thread.run_sync(writer.finish)
    finally:
        await trio.to_thread.run_sync(writer.close)
    rows = sum(r for _, r in parts)
    if rows != sum(f.rows for f in inputs):  # a bug, never expected: do not replace
        raise RuntimeError(f"compaction of hour {hour_label(hour)} read {rows} rows, expected "
                           f"{sum(f.rows for f in inputs)}")  # fmt: skip
    written = []
    for path, _ in parts:
        location = prefix + path.name
        key = key_of(store, location)
        assert key is not None, location
        await store.put(key, path)
        written.append((path, object_location(store, key)))
    replaced = await trio.to_thread.run_sync(
        functools.partial(_replace, table, set(locations), written, hour_label(hour))
    )
    if replaced:
        report.hours_compacted += 1
        report.files_replaced += len(inputs)
        report.files_written += len(written)
        report.rows_compacted += rows


def _read_io(table: Any, location: str) -> bytes:
    with table.io.new_input(location).open() as stream:
        data: bytes = stream.read()
        return data


class _CompactWriter:
    """Streams data files into zstd Parquet parts of about `target_file_bytes` (blocking)."""

    def __init__(
        self, directory: Path, target_file_bytes: int, run_unix_seconds: int, inputs: list[str]
    ) -> None:
        self.directory = directory
        self.target_file_bytes = target_file_bytes
        self.run_unix_seconds = run_unix_seconds
        self.inputs = inputs
        self.parts: list[tuple[Path, int]] = []
        self._writer: Any = None
        self._path: Path | None = None
        self._rows = 0

    def add(self, data: bytes) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..iceberg.tables import TABLE_TIMESTAMP_TYPE

        table = pq.read_table(pa.BufferReader(data))
        index = table.schema.get_field_index("timestamp")
        schema = table.schema.set(index, pa.field("timestamp", TABLE_TIMESTAMP_TYPE))
        table = table.cast(schema, safe=False)
        if self._writer is None:
            self._path = self.directory / compacted_part_name(
                self.run_unix_seconds, self.inputs, len(self.parts)
            )
            self._writer = pq.ParquetWriter(
                self._path, schema, compression="zstd", write_page_checksum=True
            )
            self._rows = 0
        self._writer.write_table(table)
        self._rows += table.num_rows
        assert self._path is not None
        if self._path.stat().st_size >= self.target_file_bytes:
            self._close_part()

    def _close_part(self) -> None:
        import os

        assert self._writer is not None and self._path is not None
        self._writer.close()
        self._writer = None
        with open(self._path, "rb+") as written:
            os.fsync(written.fileno())
        self.parts.append((self._path, self._rows))

    def finish(self) -> list[tuple[Path, int]]:
        if self._writer is not None:
            self._close_part()
        return self.parts

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _replace(table: Any, inputs: set[str], written: list[tuple[Path, str]], label: str) -> bool:
    """One overwrite snapshot: delete exactly `inputs`, add `written`. False when the
    inputs are no longer all current (someone else compacted): nothing is changed."""
    from pyiceberg.exceptions import CommitFailedException

    from ..iceberg.commit import MAX_CONFLICT_RETRIES, refresh_without_auto_retry
    from ..iceberg.datafiles import data_file

    for attempt in range(MAX_CONFLICT_RETRIES + 1):
        refresh_without_auto_retry(table)
        current = {t.file.file_path: t.file for t in table.scan().plan_files()}
        if not inputs <= current.keys():
            return False
        try:
            with table.transaction() as transaction:
                metadata = transaction.table_metadata
                snapshot = transaction.update_snapshot(
                    snapshot_properties={COMPACTED_HOUR_PROPERTY: label}
                )
                with snapshot.overwrite() as overwrite:
                    for location in sorted(inputs):
                        overwrite.delete_data_file(current[location])
                    for local_path, location in written:
                        overwrite.append_data_file(data_file(metadata, local_path, location))
            return True
        except CommitFailedException:
            if attempt == MAX_CONFLICT_RETRIES:
                raise
    return False


# --- 3. expire, 4. orphans ---------------------------------------------------------------


def _reachable(table: Any, snapshot: Any) -> set[str]:
    """Every file a snapshot reads: its manifest list, manifests and live data files."""
    io = table.io
    paths = {snapshot.manifest_list}
    for manifest in snapshot.manifests(io):
        paths.add(manifest.manifest_path)
        for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
            paths.add(entry.data_file.file_path)
    return paths


def _expire(table: Any, now_unix_seconds: float, retention_seconds: float) -> tuple[int, set[str]]:
    from ..iceberg.commit import refresh_without_auto_retry

    refresh_without_auto_retry(table)
    metadata = table.metadata
    cutoff_ms = (now_unix_seconds - retention_seconds) * 1000
    referenced = {ref.snapshot_id for ref in metadata.refs.values()}
    expired = [
        s
        for s in metadata.snapshots
        if s.timestamp_ms < cutoff_ms and s.snapshot_id not in referenced
    ]
    if not expired:
        return 0, set()
    kept = [s for s in metadata.snapshots if s not in expired]
    gone: set[str] = set()
    for snapshot in expired:
        gone |= _reachable(table, snapshot)
    for snapshot in kept:
        gone -= _reachable(table, snapshot)
    table.maintenance.expire_snapshots().by_ids([s.snapshot_id for s in expired]).commit()
    return len(expired), gone


async def expire_snapshots(
    store: ObjectStore,
    table: Any,
    now_unix_seconds: float,
    retention_seconds: float,
    report: TableReport,
) -> None:
    from ..iceberg.tables import key_of

    expired, unreachable = await trio.to_thread.run_sync(
        _expire, table, now_unix_seconds, retention_seconds
    )
    report.snapshots_expired += expired
    for location in sorted(unreachable):
        key = key_of(store, location)
        if key is not None:  # never delete what lies outside gravixd's store
            await store.delete(key)
            report.files_removed += 1


async def remove_orphans(
    store: ObjectStore,
    table: Any,
    namespace: str,
    stream: str,
    now_unix_seconds: float,
    retention_seconds: float,
    report: TableReport,
) -> None:
    from ..iceberg.commit import refresh_without_auto_retry
    from ..iceberg.tables import key_of, table_prefix

    def referenced_keys() -> set[str]:
        refresh_without_auto_retry(table)
        keys: set[str] = set()
        for snapshot in table.metadata.snapshots:
            for location in _reachable(table, snapshot):
                key = key_of(store, location)
                if key is not None:
                    keys.add(key)
        return keys

    referenced = await trio.to_thread.run_sync(referenced_keys)
    data_keys = await store.list(f"{table_prefix(namespace, stream)}/data/")
    for key in orphans(
        data_keys,
        referenced,
        now_unix_seconds=now_unix_seconds,
        retention_seconds=retention_seconds,
    ):
        await store.delete(key)
        report.files_removed += 1


async def run_tables_schedule(
    store: ObjectStore,
    settings: CatalogSettings,
    interval_seconds: float,
    *,
    commit_new: bool,
    retention_seconds: float,
    target_file_bytes: int,
    clock_unix_seconds: Any = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`rollup_interval_seconds` inside `serve` with a catalog: the table upkeep every
    interval, until cancelled. A failing run is logged and the next tries again."""
    import time

    clock = clock_unix_seconds or time.time
    task_status.started()
    while True:
        await trio.sleep(interval_seconds)
        try:
            report = await upkeep_tables(
                store,
                settings,
                commit_new=commit_new,
                now_unix_seconds=clock(),
                retention_seconds=retention_seconds,
                target_file_bytes=target_file_bytes,
            )
        except Exception:
            log.exception("Scheduled table upkeep failed; retrying in %s s", interval_seconds)
            continue
        for table in report.tables:
            log.info(
                "Table upkeep of %s: %d segments committed, %d hours compacted, %d snapshots"
                " expired, %d files removed%s",
                table.table,
                table.segments_committed,
                table.hours_compacted,
                table.snapshots_expired,
                table.files_removed,
                f"; error: {table.error}" if table.error else "",
            )
