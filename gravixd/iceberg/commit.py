"""Add segments to an Iceberg table exactly once.

A commit is one snapshot that appends the data files of a list of segments and names them
in its summary (`gravixd.segments`). Before each attempt the table is reloaded and every
segment already named by a snapshot in the table's history is left out: a retry after a
crash, a re-upload, or a second committer never adds a segment twice. History, not the
current file list, answers "is it committed?": after compaction replaces a segment's file,
the segment is no longer among the current files, but its commit stays in the history.
Snapshot expiry (`gravixd rollup`) keeps `iceberg_snapshot_retention_seconds` of history,
and a committer refuses a segment older than that (see `too_old`), so expiry can never make
a segment look new again.

A conflict (another writer committed first: CommitFailedException) is retried on the fresh
table, history checked again, a few times with jitter (pyiceberg's own retry, which would
re-add the same files without that check, is turned off); other failures go back to the
caller, which retries later. Blocking (pyiceberg); the runtime runs it in a worker thread.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.segment import segment_created_at
from . import SEGMENTS_PROPERTY
from .datafiles import data_file

MAX_CONFLICT_RETRIES = 10
# Jitter between conflicting commits: up to this many seconds, doubling per attempt.
CONFLICT_BACKOFF_SECONDS = 0.05


@dataclass(frozen=True)
class SegmentFiles:
    """One segment's data files: (local Parquet path, absolute location in the store)."""

    segment_id: str
    files: tuple[tuple[Path, str], ...]


@dataclass
class CommitResult:
    added: list[str] = field(default_factory=list)  # segment ids this commit added
    already: list[str] = field(default_factory=list)  # committed before (a retry, a re-upload)
    files: int = 0
    rows: int = 0
    conflicts: int = 0
    snapshot_id: int | None = None


def committed_segment_ids(table_metadata: Any) -> set[str]:
    """Every segment id named by a snapshot the table still keeps."""
    ids: set[str] = set()
    for snapshot in table_metadata.snapshots:
        named = snapshot.summary[SEGMENTS_PROPERTY] if snapshot.summary is not None else None
        if named:
            ids.update(named.split(","))
    return ids


def commit_segments(
    table: Any,
    segments: Sequence[SegmentFiles],
    *,
    sleep: Callable[[float], None] = time.sleep,
    extra_properties: dict[str, str] | None = None,
) -> CommitResult:
    """Append the segments not yet committed, in one snapshot.

    Raises:
        CommitFailedException: still conflicting after MAX_CONFLICT_RETRIES attempts.
        Exception: whatever the catalog or FileIO raise (unreachable, refused): retry later.
    """
    from pyiceberg.exceptions import CommitFailedException

    result = CommitResult()
    for attempt in range(MAX_CONFLICT_RETRIES + 1):
        refresh_without_auto_retry(table)
        try:
            _commit_once(table, segments, result, extra_properties or {})
            return result
        except CommitFailedException:
            result.conflicts += 1
            if attempt == MAX_CONFLICT_RETRIES:
                raise
            sleep(random.uniform(0, CONFLICT_BACKOFF_SECONDS * 2**attempt))
    raise AssertionError("unreachable")


def refresh_without_auto_retry(table: Any) -> None:
    """Reload the table, with pyiceberg's own commit retry turned off for this process.

    On a conflict pyiceberg re-applies the same appends to the fresh table by itself: that
    would add a segment another committer added meanwhile a second time. gravixd retries
    instead (`commit_segments`), re-checking the history first. Only the in-memory copy of
    the properties changes: catalogs commit against the metadata they load themselves.
    """
    from pyiceberg.table import TableProperties

    table.refresh()
    properties = {**table.metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}
    table.metadata = table.metadata.model_copy(update={"properties": properties})


def _commit_once(
    table: Any, segments: Sequence[SegmentFiles], result: CommitResult, extra: dict[str, str]
) -> None:
    committed = committed_segment_ids(table.metadata)
    todo: dict[str, SegmentFiles] = {}
    already: list[str] = []
    for segment in segments:
        if segment.segment_id in committed:
            already.append(segment.segment_id)
        else:
            todo.setdefault(segment.segment_id, segment)
    result.added, result.already, result.files, result.rows = [], already, 0, 0
    if not todo:
        return
    with table.transaction() as transaction:
        metadata = transaction.table_metadata
        _ensure_name_mapping(transaction, metadata)
        properties = {SEGMENTS_PROPERTY: ",".join(todo), **extra}
        snapshot = transaction.update_snapshot(snapshot_properties=properties)
        with snapshot.fast_append() as append:
            for segment in todo.values():
                for local_path, location in segment.files:
                    file = data_file(metadata, local_path, location)
                    append.append_data_file(file)
                    result.files += 1
                    result.rows += file.record_count
    result.added = list(todo)
    current = table.current_snapshot()
    result.snapshot_id = current.snapshot_id if current is not None else None


def _ensure_name_mapping(transaction: Any, metadata: Any) -> None:
    """The files gravixd writes carry column names, not Iceberg field ids: readers (pyiceberg,
    Trino, Spark) map them by the table's default name mapping."""
    if metadata.name_mapping() is None:
        from pyiceberg.table import TableProperties

        mapping = metadata.schema().name_mapping.model_dump_json()
        transaction.set_properties(**{TableProperties.DEFAULT_NAME_MAPPING: mapping})


# Hosts' clocks may disagree: a segment counts as too old this long before the retention.
CLOCK_MARGIN_SECONDS = 3600.0


def too_old(segment_id: str, now_unix_seconds: float, retention_seconds: float) -> bool:
    """Whether a segment is (nearly) older than the kept history: its commit, if any, may
    have been expired, so committing it could add it twice. Left to an operator instead."""
    age = now_unix_seconds - segment_created_at(segment_id).timestamp()
    return age > retention_seconds - CLOCK_MARGIN_SECONDS


def all_ids(results: Iterable[CommitResult]) -> list[str]:
    return [i for r in results for i in (*r.added, *r.already)]
