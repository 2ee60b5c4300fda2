"""`gravixd spool check`: report what the spool holds, changing nothing.

For each segment: open (being appended, or left by a crash: whole batches, torn tail),
sealed (waiting for upload) or quarantined. Exit status 0 when every open segment is
readable, 1 when some would be quarantined at the next start.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from .core.segment import OPEN_EXTENSION
from .runtime.segment_files import read_segment
from .schema import STREAMS


class SegmentReport(msgspec.Struct):
    area: str
    stream: str
    name: str
    bytes: int
    rows: int | None = None
    torn_bytes: int = 0
    error: str | None = None


def inspect_spool(spool_dir: str | Path) -> list[SegmentReport]:
    root = Path(spool_dir)
    reports = []
    for stream in STREAMS:
        for path in sorted((root / "open" / stream).glob(f"*{OPEN_EXTENSION}")):
            scan = read_segment(stream, path)
            reports.append(
                SegmentReport(
                    "open",
                    stream,
                    path.name,
                    scan.total_bytes,
                    rows=scan.rows if scan.readable else None,
                    torn_bytes=scan.total_bytes - scan.good_bytes if scan.readable else 0,
                    error=scan.error,
                )
            )
        for area in ("sealed", "quarantine"):
            for path in sorted((root / area / stream).glob("*")):
                reports.append(SegmentReport(area, stream, path.name, path.stat().st_size))
    return reports


def check_spool(spool_dir: str | Path, fmt: str = "text") -> int:
    reports = inspect_spool(spool_dir)
    unreadable = [r for r in reports if r.area == "open" and r.rows is None]
    if fmt == "json":
        print(msgspec.json.encode({"spool_dir": str(spool_dir), "segments": reports}).decode())
    else:
        print(f"spool {spool_dir}: {len(reports)} segment(s)")
        for r in reports:
            detail = f"{r.rows} rows" if r.rows is not None else "unreadable"
            if r.torn_bytes:
                detail += f", torn tail of {r.torn_bytes} bytes"
            if r.error and r.rows is None:
                detail += f" ({r.error})"
            shown = detail if r.area == "open" else ""
            print(f"  {r.area:10} {r.stream:6} {r.name}  {r.bytes} bytes  {shown}")
    return 1 if unreadable else 0
