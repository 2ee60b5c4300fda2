"""One daemon per spool: an exclusive `flock` on `<spool_dir>/gravixd.lock`, start to exit.

Two daemons on one spool destroy acknowledged data: the second "recovers" the first one's
open segments, seals and deletes them while the first goes on appending to the deleted files.
The lock is taken before recovery touches anything and released only when the process is
done with the spool; the kernel drops it when the process dies (even by SIGKILL), so a stale
lock file never blocks a restart. The file holds the holder's PID, for the error message only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

from ..errors import StartupError

__all__ = ["LOCK_FILE_NAME", "SpoolLock"]

LOCK_FILE_NAME: Final = "gravixd.lock"


class SpoolLock:
    """The held lock of one spool directory; `release()` (or process exit) frees it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, spool_dir: Path) -> SpoolLock:
        """Take the lock, creating the spool directory if need be.

        Raises:
            StartupError: another process holds it (the message names the spool and its
                PID), or the directory cannot be created or the lock file opened.
        """
        path = Path(spool_dir) / LOCK_FILE_NAME
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(
                f"spool_dir {spool_dir}: cannot open lock file {path}: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StartupError(
                f"spool_dir {spool_dir}: in use by another gravixd (pid {holder});"
                " one daemon per spool: give each instance its own spool_dir"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StartupError(f"spool_dir {spool_dir}: cannot lock {path}: {exc}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None
