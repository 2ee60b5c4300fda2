"""`gravixd spool requeue`: hand quarantined segments back for delivery, once the cause
(a store that refused them, a permission, a bucket policy) is fixed.

What may go back: a whole, intact segment, exactly as the daemon would have uploaded it
(every batch's checksum holds; a sealed file's footer too). It moves to `sealed/` (or
`open/` when its footer is missing, so that the next start seals it), and the next start
of the daemon delivers it under the same object key as before: never twice.

What must never go back, and stays where it is, said why: the damaged original of a
salvaged segment (its intact batches were delivered when it was salvaged; sending them
again could count them twice once rolled up), a torn tail (nothing acknowledged is in it),
and whatever cannot be read. It never runs beside a daemon: it takes the spool's lock, and
it never overwrites a file.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from .core.segment import OPEN_EXTENSION, SEGMENT_ID_LENGTH, segment_created_at
from .fsutil import fsync_dir, make_dirs_durable
from .runtime.segment_files import read_segment
from .schema import STREAMS

# `<segment id>.<ext>`, and the `.N` suffix quarantine adds when the name was taken.
_NAME: Final = re.compile(
    rf"^(?P<id>[0-9A-Z]{{{SEGMENT_ID_LENGTH}}})\.(?P<ext>arrows|arrow|parquet)(?:\.\d+)?$"
)


@dataclass(frozen=True, slots=True)
class QuarantinePlan:
    """What requeue would do with one quarantined file: `target` (relative to the spool)
    when it goes back for delivery, else None and `reason` says why it stays."""

    stream: str
    path: Path
    rows: int | None
    target: Path | None
    reason: str


def plan_file(stream: str, path: Path) -> QuarantinePlan:
    """Decide, by reading the file as the daemon would, whether it can go back."""

    def keep(reason: str, rows: int | None = None) -> QuarantinePlan:
        return QuarantinePlan(stream, path, rows, None, reason)

    match = _NAME.match(path.name)
    if ".torn-at-" in path.name:
        return keep("torn tail: bytes a crash cut short, nothing acknowledged in them")
    if match is None or not path.is_file():
        return keep("not a segment file")
    segment_id, ext = match["id"], match["ext"]
    try:
        segment_created_at(segment_id)
    except ValueError:
        return keep("not a segment id")
    if ext == "parquet":
        try:
            table = pq.ParquetFile(path, page_checksum_verification=True).read()
            table.validate(full=True)
        except (OSError, pa.ArrowException) as exc:
            return keep(f"unreadable: {exc}")
        return QuarantinePlan(
            stream, path, table.num_rows, Path("sealed", stream, f"{segment_id}.parquet"), ""
        )
    try:
        scan = read_segment(stream, path)
    except OSError as exc:
        return keep(f"unreadable: {exc.strerror or exc}")
    if not scan.readable:
        return keep(f"unreadable: {scan.error}")
    if scan.damaged:
        return keep(
            f"damaged original ({scan.error}); its intact batches were delivered when it "
            "was salvaged",
            scan.rows,
        )
    if not scan.blocks:
        return keep("holds no events", 0)
    if scan.sealed:
        target = Path("sealed", stream, f"{segment_id}.arrow")
    else:
        target = Path("open", stream, f"{segment_id}{OPEN_EXTENSION}")  # sealed at start
    return QuarantinePlan(stream, path, scan.rows, target, "")


def plan_spool(spool_dir: Path) -> list[QuarantinePlan]:
    plans = []
    for stream in STREAMS:
        folder = spool_dir / "quarantine" / stream
        if folder.is_dir():
            plans += [plan_file(stream, p) for p in sorted(folder.iterdir())]
    return plans


def _hand_back(spool_dir: Path, plan: QuarantinePlan) -> str | None:
    """Move one file back; returns why not when its place is taken (never overwritten)."""
    assert plan.target is not None
    target = spool_dir / plan.target
    make_dirs_durable(target.parent)
    segment_id = target.name.split(".")[0]
    places = [
        spool_dir / "sealed" / plan.stream / f"{segment_id}.arrow",
        spool_dir / "sealed" / plan.stream / f"{segment_id}.parquet",
        spool_dir / "open" / plan.stream / f"{segment_id}{OPEN_EXTENSION}",
    ]
    taken = [p for p in places if p.exists()]
    if taken:
        return f"{taken[0].relative_to(spool_dir)} exists (the same segment is still there)"
    try:
        os.link(plan.path, target)  # fails on an existing name: never overwrites
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return f"{plan.target} exists"
        raise
    fsync_dir(target.parent)
    plan.path.unlink()
    fsync_dir(plan.path.parent)
    return None


def requeue_spool(spool_dir: str | Path) -> int:
    """The command: lock the spool, move back what can go, say what stays and why.

    Returns the exit status: 0, or 1 when the spool is in use by a running daemon or
    does not exist.
    """
    from .errors import StartupError
    from .runtime.spool_lock import SpoolLock

    root = Path(spool_dir)
    if not root.is_dir():  # a mistyped path: say so, don't create a spool there
        print(f"gravixd spool requeue: spool_dir {root}: no such directory", flush=True)
        return 1
    try:
        lock = SpoolLock.acquire(root)
    except StartupError as exc:
        print(f"gravixd spool requeue: {exc}; stop it first", flush=True)
        return 1
    try:
        plans = plan_spool(root)
        moved = 0
        for plan in plans:
            name = plan.path.relative_to(root)
            why = plan.reason if plan.target is None else _hand_back(root, plan)
            if why is None:
                moved += 1
                print(f"  requeued {name} -> {plan.target} ({plan.rows} events)")
            else:
                print(f"  kept     {name}: {why}")
        print(
            f"spool {root}: {moved} of {len(plans)} quarantined file(s) requeued;"
            " the next start of gravixd delivers them"
        )
    finally:
        lock.release()
    return 0
