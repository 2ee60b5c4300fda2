"""The exception family of gravixd.

Each error that reaches a client or a log carries a message in msgspec's tone: what was
expected, what came, and where. `reason` is a short, bounded label for metrics (never the
message itself, which would explode label cardinality).
"""

from __future__ import annotations

import errno
from typing import Final

# What a store's disk or filesystem answers for a while and then stops answering: a chmod
# undone, a remount read-write again, a full disk freed, a flaky device replaced. Retried
# with backoff like an S3 outage, never quarantined (a quarantined segment waits for a human).
HEALABLE_ERRNOS: Final = frozenset(
    {errno.EPERM, errno.EACCES, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}
)


class GravixdError(Exception):
    """Base of every error gravixd raises on purpose."""


class ConfigError(GravixdError):
    """A configuration key is unknown or its value is invalid; the message names the key."""


class StartupError(GravixdError):
    """The daemon cannot start (a port in use, the spool locked by another daemon); the
    message is one line that names the setting and what is in the way. Exit code 1."""


class DecodeError(GravixdError):
    """A payload could not be decoded into events.

    Attributes:
        reason: bounded metric label, e.g. ``invalid_json``, ``invalid_protobuf``,
            ``validation``, ``invalid_utf8``.
    """

    def __init__(self, message: str, reason: str = "validation") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class StoreError(GravixdError):
    """An object store operation failed in a way that may succeed on retry."""


class PermanentStoreError(StoreError):
    """An object store operation failed in a way that retrying will not fix
    (access denied, bucket missing, invalid key)."""


def healable_cause(exc: BaseException) -> OSError | None:
    """The OSError with a HEALABLE_ERRNOS errno that `exc` is or was raised from, if any:
    whatever a store called its error, a fault that time can heal is retried."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in HEALABLE_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


class ObjectNotFound(StoreError):
    """`get` or `delete` named a key that does not exist."""


class SpoolFullError(GravixdError):
    """The spool is full; the caller should shed load (503). `limit` names what is full:
    `max_spool_bytes` or `upload_queue` (sealed segments waiting for upload)."""

    def __init__(self, message: str, limit: str = "max_spool_bytes") -> None:
        super().__init__(message)
        self.limit = limit


class DurabilityError(GravixdError):
    """Events could not be made durable (write or fsync failed, e.g. ENOSPC)."""
