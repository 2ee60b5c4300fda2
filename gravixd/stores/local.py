"""A directory as an object store (`file:///var/lib/gravixd/store`, the default).

Writes are atomic: a temporary file in the target directory is written, fsynced, renamed over
the key, and the directory is fsynced, so a crash leaves the old object or the new one, and a
reader never sees a partial object. A `Path` body on the same filesystem is hard-linked
instead of copied (the spool's sealed file is already the object, fsynced): the bytes are
written once. Every directory created on the way to a key is fsynced in its parent before
`put` returns, so the caller may delete its own copy. Blocking file calls run in threads.
"""

from __future__ import annotations

import builtins
import errno
import os
import shutil
import uuid
from pathlib import Path

import trio

from ..errors import ObjectNotFound, StoreError
from ..fsutil import fsync_dir, make_dirs_durable
from .base import Body, ObjectStore, validate_key

_TMP_SUFFIX = ".gravixd-tmp"


class LocalStore(ObjectStore):
    def __init__(self, root: str | Path, url: str | None = None) -> None:
        self.root = Path(root).absolute()
        self.url = url or f"file://{self.root}"
        # Bounded so a burst of uploads cannot take every worker thread.
        self._limiter = trio.CapacityLimiter(4)

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    async def put(self, key: str, body: Body) -> None:
        await trio.to_thread.run_sync(self._put_sync, self._path(key), body, limiter=self._limiter)

    def _put_sync(self, path: Path, body: Body) -> None:
        try:
            make_dirs_durable(path.parent)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
            try:
                if isinstance(body, Path) and _link(body, tmp):
                    pass  # same inode: its data was fsynced by whoever wrote it
                elif isinstance(body, Path):
                    # copyfile copies in the kernel (sendfile / copy_file_range), not
                    # through Python buffers: a 64 MiB segment costs no event-loop GIL time.
                    shutil.copyfile(body, tmp)
                    _fsync_file(tmp)
                else:
                    with open(tmp, "wb") as out:
                        out.write(body)
                        out.flush()
                        os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_dir(path.parent)
        except OSError as exc:
            # Retryable, whatever the errno: a permission, a read-only remount, a full disk
            # or an I/O error on the store's directory heals with time (or a human), and
            # the segment is intact meanwhile; quarantine would strand it.
            raise StoreError(f"Could not write {path}: {exc}") from exc

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await trio.to_thread.run_sync(path.read_bytes, limiter=self._limiter)
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"No object at key {key!r} in {self.url}") from exc
        except OSError as exc:
            raise StoreError(f"Could not read {path}: {exc}") from exc

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await trio.to_thread.run_sync(path.unlink, True, limiter=self._limiter)
        except OSError as exc:
            raise StoreError(f"Could not delete {path}: {exc}") from exc

    async def list(self, prefix: str = "") -> builtins.list[str]:
        return await trio.to_thread.run_sync(self._list_sync, prefix, limiter=self._limiter)

    def _list_sync(self, prefix: str) -> builtins.list[str]:
        # Walk only the deepest directory that the prefix names fully.
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir if base_dir else self.root
        keys = []
        for dirpath, _dirnames, filenames in os.walk(start):
            for name in filenames:
                if name.endswith(_TMP_SUFFIX):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return keys


def _link(source: Path, target: Path) -> bool:
    """Hard-link `source` to `target`; False where the filesystem can't (another device, no
    hard links): the caller copies instead."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    return True


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
