"""Orphaned spools handed to a live one before it starts: nothing a past run left is lost.

With `workers = N` worker `i` spools in `{spool_dir}/worker-{i}`; a single process (`workers =
1`) spools in `spool_dir` itself. After a change of N, or from 1 to more and back, some of
those spools have no process of their own any more: `worker-{j}` for j >= N, or the top
level. Before any worker starts, whoever owns the whole `spool_dir` (the supervisor, or the
single process) moves their segment files into a live spool, whose own recovery then seals,
uploads and quarantines them as it does its own. Files are only renamed (segment ids are
unique, so names never clash), each rename followed by an fsync of both directories, so a
crash leaves every file in one spool or the other, complete.

It must never run while a process may write the spool it takes from (its lock is taken
first, and a held lock leaves that spool alone until a later start), never overwrite a file,
and never delete one: an orphan's directories are removed only when empty.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..errors import StartupError
from ..fsutil import fsync_dir, make_dirs_durable
from .spool_lock import LOCK_FILE_NAME, SpoolLock

__all__ = ["WORKER_DIR_PREFIX", "adopt_orphans", "worker_spool_dir"]

log = logging.getLogger("gravixd.spool_adopt")

WORKER_DIR_PREFIX: Final = "worker-"
_WORKER_DIR: Final = re.compile(r"^worker-(\d+)$")
# The spool's folders holding files (segment_files.py's layout): open/, sealed/, quarantine/,
# each with one folder a stream.
_LAYOUT_DIRS: Final = ("open", "sealed", "quarantine")


def worker_spool_dir(spool_dir: Path, index: int) -> Path:
    return spool_dir / f"{WORKER_DIR_PREFIX}{index}"


@dataclass(frozen=True)
class Adopted:
    """What one orphan spool handed over."""

    orphan: Path
    adopter: Path
    files: int
    kept: int  # files left in place (a name already taken in the adopter: never overwritten)


def adopt_orphans(spool_dir: Path, workers: int) -> list[Adopted]:
    """Move every orphan spool's files into a live spool of a run with `workers` processes.

    `workers == 1`: the live spool is `spool_dir` and every `worker-*` is an orphan.
    Else worker `j >= workers` goes to worker `j % workers`, the top level to worker 0.
    The caller holds the lock of `spool_dir` (no worker of this spool runs yet). Blocking.
    """
    spool_dir = Path(spool_dir)
    if not spool_dir.is_dir():
        return []
    pairs: list[tuple[Path, Path]] = []
    for entry in sorted(spool_dir.iterdir()):
        match = _WORKER_DIR.match(entry.name)
        if match is None or not entry.is_dir():
            continue
        j = int(match.group(1))
        if workers == 1:
            pairs.append((entry, spool_dir))
        elif j >= workers:
            pairs.append((entry, worker_spool_dir(spool_dir, j % workers)))
    if workers > 1 and any((spool_dir / name).is_dir() for name in _LAYOUT_DIRS):
        pairs.append((spool_dir, worker_spool_dir(spool_dir, 0)))
    done = []
    for orphan, adopter in pairs:
        try:
            adopted = _adopt_one(orphan, adopter, own_lock=orphan != spool_dir)
        except OSError as exc:  # what was moved is in the adopter; the rest waits in place
            log.error(
                f"spool {orphan} not fully adopted: {exc}; the rest stays for the next start",
                extra={"event": "spool_adopt_failed", "orphan": str(orphan), "error": str(exc)},
            )
            continue
        if adopted is not None and adopted.files + adopted.kept:
            log.info(
                f"spool {orphan} left by an earlier run handed to {adopter}",
                extra={
                    "event": "spool_adopted",
                    "orphan": str(orphan),
                    "adopter": str(adopter),
                    "files": adopted.files,
                    "kept": adopted.kept,
                },
            )
            done.append(adopted)
    return done


def _adopt_one(orphan: Path, adopter: Path, *, own_lock: bool) -> Adopted | None:
    try:
        # The top level is covered by the caller's lock; a worker spool has its own, and a
        # worker of an earlier supervisor may still be draining it.
        orphan_lock = SpoolLock.acquire(orphan) if own_lock else None
    except StartupError as exc:
        log.warning(
            f"spool {orphan} not adopted now: {exc}",
            extra={"event": "spool_adopt_skipped", "orphan": str(orphan)},
        )
        return None
    try:
        try:
            adopter_lock = SpoolLock.acquire(adopter) if adopter != orphan.parent else None
        except StartupError as exc:
            log.warning(
                f"spool {orphan} not adopted now: {exc}",
                extra={"event": "spool_adopt_skipped", "orphan": str(orphan)},
            )
            return None
        try:
            moved = kept = 0
            for layout in _LAYOUT_DIRS:
                source_root = orphan / layout
                if not source_root.is_dir():
                    continue
                for stream_dir in sorted(p for p in source_root.iterdir() if p.is_dir()):
                    target_dir = adopter / layout / stream_dir.name
                    make_dirs_durable(target_dir)
                    m, k = _move_files(stream_dir, target_dir)
                    moved, kept = moved + m, kept + k
            if own_lock and not kept:
                _remove_empty_tree(orphan)
            return Adopted(orphan, adopter, moved, kept)
        finally:
            if adopter_lock is not None:
                adopter_lock.release()
    finally:
        if orphan_lock is not None:
            orphan_lock.release()


def _move_files(source: Path, target: Path) -> tuple[int, int]:
    moved = kept = 0
    for path in sorted(source.iterdir()):
        if not path.is_file() or path.is_symlink():
            kept += 1
            continue
        destination = target / path.name
        try:
            # link + unlink: fails with EEXIST instead of replacing a file of the same name.
            os.link(path, destination)
        except FileExistsError:
            kept += 1
            continue
        fsync_dir(target)
        path.unlink()
        moved += 1
    if moved:
        fsync_dir(source)
    return moved, kept


def _remove_empty_tree(orphan: Path) -> None:
    """Remove `orphan` if nothing but empty folders and its lock file is left in it."""
    for root, _dirs, names in os.walk(orphan):
        if any(name != LOCK_FILE_NAME or Path(root) != orphan for name in names):
            return
    for root, dirs, _names in os.walk(orphan, topdown=False):
        for name in dirs:
            (Path(root) / name).rmdir()
    (orphan / LOCK_FILE_NAME).unlink(missing_ok=True)
    orphan.rmdir()
    fsync_dir(orphan.parent)
