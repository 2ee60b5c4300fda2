"""Object store drivers, chosen by URL scheme: `file://` (default), `s3://`, `memory://`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .base import Body, ObjectStore

__all__ = ["Body", "ObjectStore", "open_store"]


def open_store(url: str, **options: Any) -> ObjectStore:
    """Open the store a URL names.

    `file://./rel/path` and `file:///abs/path` name directories; `s3://bucket/prefix` an S3
    bucket (options: the `s3_*` config keys); `memory://` a process-local dict.

    Raises:
        ValueError: unknown scheme or malformed URL.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        from .local import LocalStore

        # file://./x is relative to the working directory (netloc "."), file:///x absolute.
        path = (parts.netloc + parts.path) if parts.netloc in (".", "..") else parts.path
        if parts.netloc not in ("", ".", "..", "localhost"):
            raise ValueError(f"Expected file:///path or file://./path, got {url!r}")
        if not path:
            raise ValueError(f"Expected a directory in the file:// URL, got {url!r}")
        return LocalStore(path, url=url)
    if parts.scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(url)
    if parts.scheme == "s3":
        from .s3 import S3Store  # type: ignore[import-not-found,unused-ignore]

        return S3Store.from_url(url, **options)  # type: ignore[no-any-return,unused-ignore]
    raise ValueError(f"Expected a store URL with scheme file://, s3:// or memory://, got {url!r}")
