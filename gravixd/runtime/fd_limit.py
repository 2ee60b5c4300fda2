"""File descriptors: raise the soft RLIMIT_NOFILE at start and fit the connection caps to it.

Every connection holds a descriptor, and so do the spool's segments, the store, the epoll
instance and the log. A default soft limit of 1024 with `max_connections = 1024` means the
connections alone can exhaust it; then opening a segment fails too. So at start the soft
limit goes up to the hard one (as nginx's `worker_rlimit_nofile` and systemd's services do),
and the connection budget is clamped to what is left after a reserve.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from typing import Final

log = logging.getLogger("gravixd")

# Descriptors kept back for everything that is not a client connection: two open segments,
# sealing and upload reads (upload_concurrency), listeners, epoll, trio's wakeup socket,
# worker threads' files, the log, the lock. Measured ~30 at rest; twice that, rounded up.
RESERVED_FDS: Final = 64
# Past this the soft limit is not raised further: a budget of a million connections is no
# longer about descriptors, and some hard limits are "unlimited".
_MAX_SOFT_LIMIT: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class FdPlan:
    soft_limit: int
    hard_limit: int
    max_connections: int  # the ingest budget (HTTP + raw TCP) that fits
    side_port_max_connections: int


def raise_soft_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE toward the hard limit; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _MAX_SOFT_LIMIT if hard == resource.RLIM_INFINITY else min(hard, _MAX_SOFT_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have; the plan below fits the caps to it
    return soft, hard


def plan(max_connections: int, side_port_max_connections: int) -> FdPlan:
    """The caps that fit the current soft limit: the side port's first (it is small and what
    operators need to see a problem), then the ingest budget with what is left."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = _MAX_SOFT_LIMIT if soft == resource.RLIM_INFINITY else soft
    room = max(limit - RESERVED_FDS, 2)
    side = max(1, min(side_port_max_connections, room // 4))
    ingest = max(1, min(max_connections, room - side))
    return FdPlan(soft, hard, ingest, side)
