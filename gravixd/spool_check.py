"""`gravixd spool check`: report what the spool holds, changing nothing.

For each segment: open (being appended, or left by a crash: whole batches, torn tail),
sealed (waiting for upload) or quarantined (with what `gravixd spool requeue` would do:
hand it back, or why it stays). Open and sealed segments are checked as the
daemon checks them (every batch's checksum, the framing, the footer). Exit status 0 when
everything would be delivered as it is, 1 when something is damaged or unreadable (the next
start or upload would quarantine it, keeping what is intact).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from .core.segment import OPEN_EXTENSION, ScanResult
from .runtime.segment_files import read_segment
from .schema import STREAMS
from .spool_requeue import plan_file


class SegmentReport(msgspec.Struct):
    area: str
    stream: str
    name: str
    bytes: int
    rows: int | None = None
    torn_bytes: int = 0
    damaged_bytes: int = 0
    error: str | None = None
    # Quarantine only: where `gravixd spool requeue` would hand it back, or why it stays.
    requeue_to: str | None = None
    stays_because: str | None = None

    @property
    def bad(self) -> bool:
        return self.area != "quarantine" and (self.rows is None or self.damaged_bytes > 0)


def _report(area: str, stream: str, path: Path) -> SegmentReport:
    size = path.stat().st_size if path.is_file() else 0
    if area == "quarantine":
        plan = plan_file(stream, path)
        if plan.target is not None:
            return SegmentReport(
                area, stream, path.name, size, rows=plan.rows, requeue_to=str(plan.target)
            )
        return SegmentReport(
            area, stream, path.name, size, rows=plan.rows, stays_because=plan.reason
        )
    try:
        if path.suffix == ".parquet":
            table = pq.ParquetFile(path, page_checksum_verification=True).read()
            table.validate(full=True)
            return SegmentReport(area, stream, path.name, size, rows=table.num_rows)
        scan: ScanResult = read_segment(stream, path)
    except (OSError, pa.ArrowException) as exc:
        return SegmentReport(area, stream, path.name, size, error=str(exc))
    if not scan.readable:
        return SegmentReport(area, stream, path.name, size, error=scan.error)
    torn = scan.total_bytes - scan.good_bytes if scan.torn else 0
    if area == "sealed" and not scan.sealed and not scan.damaged:
        # A sealed file must end with its footer: anything else is damage to it.
        scan.damaged.append((scan.good_bytes, scan.total_bytes))
        scan.error = scan.error or "sealed segment without a valid footer"
        torn = 0
    return SegmentReport(
        area,
        stream,
        path.name,
        size,
        rows=scan.rows,
        torn_bytes=torn,
        damaged_bytes=max(scan.damaged_bytes, 1 if scan.damaged else 0),
        error=scan.error,
    )


def inspect_spool(spool_dir: str | Path) -> list[SegmentReport]:
    root = Path(spool_dir)
    reports = []
    for stream in STREAMS:
        for path in sorted((root / "open" / stream).glob(f"*{OPEN_EXTENSION}")):
            reports.append(_report("open", stream, path))
        for area in ("sealed", "quarantine"):
            for path in sorted((root / area / stream).glob("*")):
                reports.append(_report(area, stream, path))
    # With `workers`, each worker's spool is a folder of its own: its segments are named
    # `worker-N/<segment>`.
    for worker_dir in sorted(p for p in root.glob("worker-*") if p.is_dir()):
        for report in inspect_spool(worker_dir):
            reports.append(msgspec.structs.replace(report, name=f"{worker_dir.name}/{report.name}"))
    return reports


def check_spool(spool_dir: str | Path, fmt: str = "text") -> int:
    reports = inspect_spool(spool_dir)
    bad = [r for r in reports if r.bad]
    if fmt == "json":
        print(msgspec.json.encode({"spool_dir": str(spool_dir), "segments": reports}).decode())
    else:
        print(f"spool {spool_dir}: {len(reports)} segment(s), {len(bad)} damaged or unreadable")
        for r in reports:
            detail = ""
            if r.area != "quarantine":
                detail = f"{r.rows} intact rows" if r.rows is not None else "unreadable"
            if r.torn_bytes:
                detail += f", torn tail of {r.torn_bytes} bytes"
            if r.damaged_bytes:
                detail += f", DAMAGED: {r.damaged_bytes} bytes"
            if r.error and (r.rows is None or r.damaged_bytes):
                detail += f" ({r.error})"
            if r.requeue_to:
                detail += f"{r.rows} events: `gravixd spool requeue` hands it back"
            elif r.stays_because:
                detail += f"stays in quarantine: {r.stays_because}"
            print(f"  {r.area:10} {r.stream:6} {r.name}  {r.bytes} bytes  {detail}")
    return 1 if bad else 0
