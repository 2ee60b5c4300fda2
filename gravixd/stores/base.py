"""The ObjectStore interface: the seed plan's four operations, async, chosen by URL.

Stores know nothing of HTTP, streams or segments: they move bytes under keys. Keys are
'/'-separated relative paths (``facts/dt=2026-11-25/hour=20/01J....arrow``); a store URL's own
prefix (``s3://bucket/prefix``) is applied inside the driver, never by callers.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TypeAlias

# A body is either bytes in memory or a local file to stream from (drivers may then use
# multipart uploads without reading the whole file into memory).
Body: TypeAlias = bytes | memoryview | Path


class ObjectStore(abc.ABC):
    """Async object store. Implementations must be safe to call from several trio tasks.

    Errors: `ObjectNotFound` for a missing key on `get`; `PermanentStoreError` for errors a
    retry will not fix; `StoreError` for the rest (retryable). `delete` of a missing key is
    not an error (idempotent, as in S3).
    """

    url: str

    @abc.abstractmethod
    async def put(self, key: str, body: Body) -> None:
        """Store `body` under `key` atomically: readers see the old object or the whole new
        one, never a part. Overwrites an existing key."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes:
        """Return the whole object stored under `key`."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove `key`; no error if it does not exist."""

    @abc.abstractmethod
    async def list(self, prefix: str = "") -> list[str]:
        """Return every key that starts with `prefix`, sorted."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Release connections and worker threads."""


def validate_key(key: str) -> str:
    """Reject keys that could escape a store's root or are not portable across drivers."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"Expected a relative object key, got {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"Expected a key without empty, '.' or '..' parts, got {key!r}")
    return key
