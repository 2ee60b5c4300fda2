"""Spool recovery at start: what a previous run left, made ready to deliver.

`recover_spool` runs once, before any ingest connection and before the spool's tasks
start, and returns a value: the sealed segments ready for upload, the open segments whose
seal failed now (a full disk) for each stream's sealer to retry, and the bytes all of that
holds. The spool takes it from there; nothing here reaches into the spool's state, and
nothing here awaits (it runs in a worker thread).

Each open segment is checked batch by batch (checksums): a torn tail is cut (the cut bytes
kept in quarantine), damage is cut out after the original was quarantined, a segment that
can't be read at all is quarantined whole; all counted and logged. It must never raise for
what it finds in the spool: a bad file would make the daemon crash-loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..core.segment import OPEN_EXTENSION, Block, segment_created_at
from ..metrics import Metrics
from ..schema import STREAMS
from . import segment_files as files
from .segment_files import SealedSegment, SealReport
from .segment_reports import report_segment

__all__ = ["Recovered", "ToSeal", "is_segment_id", "recover_spool"]

log = logging.getLogger("gravixd.spool")


@dataclass(frozen=True, slots=True)
class ToSeal:
    """A closed open segment waiting for its sealer: `expected` are the blocks this process
    wrote to it (None for one a previous run left, which is scanned as found)."""

    segment_id: str
    path: Path
    size_bytes: int
    expected: list[Block] | None


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a spool holds at start.

    Attributes:
        ready: sealed segments, oldest first per stream: queue them for upload.
        unsealed: per stream, open segments that could not be sealed now (disk full).
        used_bytes: bytes `ready` and `unsealed` hold: the ledger's starting count.
    """

    ready: list[SealedSegment] = field(default_factory=list)
    unsealed: dict[str, list[ToSeal]] = field(default_factory=dict)
    used_bytes: int = 0


def is_segment_id(name: str) -> bool:
    try:
        segment_created_at(name)
    except ValueError:
        return False
    return True


def recover_spool(
    spool_dir: Path, segment_format: str, metrics: Metrics, *, timestamp_unit: str = "ns"
) -> Recovered:
    """Seal what a previous run left open and list every sealed segment (blocking).
    `timestamp_unit` is that of Parquet segments ("us" for Iceberg tables)."""
    files.make_dirs(spool_dir, list(STREAMS))
    ready: list[SealedSegment] = []
    unsealed: dict[str, list[ToSeal]] = {name: [] for name in STREAMS}
    used = 0
    for stream in STREAMS:
        sealed_ids = set()
        for path in sorted((spool_dir / "sealed" / stream).iterdir()):
            segment = files.sealed_segment_from_path(stream, path)
            if segment is None:
                continue
            if not is_segment_id(segment.segment_id):
                # A stray file: its key can't be derived, so the uploader would fail on it.
                _quarantine_stray(spool_dir, stream, path, metrics)
            elif not path.is_file():
                # A directory (or worse) can never be uploaded: retrying it would pin a worker.
                report = SealReport(
                    "not_a_file",
                    quarantined=files.quarantine(spool_dir, stream, path),
                    error=f"Expected a segment file, got a directory at {path}",
                )
                report_segment(metrics, stream, segment.segment_id, "recovery", report)
            else:
                ready.append(segment)
                sealed_ids.add(segment.segment_id)
                used += segment.size_bytes
        for path in sorted((spool_dir / "open" / stream).glob(f"*{OPEN_EXTENSION}")):
            segment_id = path.name.removesuffix(OPEN_EXTENSION)
            if not is_segment_id(segment_id):
                _quarantine_stray(spool_dir, stream, path, metrics)
                continue
            if segment_id in sealed_ids:
                path.unlink()  # sealed before the crash, not yet removed
                continue
            try:
                report = files.seal_sync(
                    spool_dir,
                    stream,
                    segment_id,
                    path,
                    segment_format,
                    timestamp_unit=timestamp_unit,
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
                metrics.rotation_errors.labels(stream).inc()
                unsealed[stream].append(ToSeal(segment_id, path, size, None))
                used += size
                continue
            report_segment(metrics, stream, segment_id, "recovery", report)
            if report.sealed is not None:
                ready.append(report.sealed)
                used += report.sealed.size_bytes
    return Recovered(ready, unsealed, used)


def _quarantine_stray(spool_dir: Path, stream: str, path: Path, metrics: Metrics) -> None:
    target = files.quarantine(spool_dir, stream, path)
    log.error(
        "stray file in the spool quarantined",
        extra={
            "event": "spool_segment_quarantined",
            "stream": stream,
            "path": str(target),
            "error": f"Expected a file named <segment id>.<ext>, got {path.name!r}",
        },
    )
    metrics.segments_quarantined.labels("unreadable").inc()
