"""Listening sockets: bound before the spool is touched, accepted from without ever dying.

`bind` opens one configured address and turns every failure into a `StartupError` of one
line that names the setting (`http_listen 127.0.0.1:8088: address in use`), so a port clash
stops the daemon before recovery and without a traceback. `accept_loop` is the one accept
loop of every listener (HTTP, raw TCP, side port): running out of file descriptors (EMFILE
and its kin) is logged, counted and backed off, as trio's own `serve_listeners` does, never
fatal; a `ConnectionBudget` caps how many connections are open at once, shared by the ingest
listeners (one `max_connections` for HTTP and raw TCP) and separate for the side port.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from ..config import parse_listen
from ..errors import StartupError
from ..metrics import Metrics

__all__ = ["ConnectionBudget", "accept_loop", "bind"]

log = logging.getLogger("gravixd.listeners")

# What accept(2) returns when the process or host is out of something, not the listener
# broken: the same set trio's serve_listeners retries on.
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
# Back off from 0.1 s (trio's serve_listeners) to at most 1 s while accept keeps failing: a
# closing connection frees its descriptor within that, and the loop costs next to nothing.
_BACKOFF_INITIAL_SECONDS: Final = 0.1
_BACKOFF_MAX_SECONDS: Final = 1.0
# The kernel's own cap (net.core.somaxconn) applies above this; trio uses the same.
_BACKLOG: Final = 0xFFFF

_BIND_ERRORS: Final = {
    errno.EADDRINUSE: "address in use",
    errno.EADDRNOTAVAIL: "address not available on this host",
    errno.EACCES: "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)",
}


async def bind(
    setting: str, address: str, *, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """Listen on `address` (host:port; port 0 picks a free one) for the key `setting`.

    A host that resolves to several addresses gets one socket each, all on the same port.
    `reuse_port` sets SO_REUSEPORT, so that several processes share the address and the
    kernel spreads connections between them.

    Raises:
        StartupError: one line naming `setting` and `address` and what went wrong.
    """
    host, port = parse_listen(address)
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
        )
    except OSError as exc:
        raise StartupError(f"{setting} {address}: cannot resolve {host!r}: {exc}") from None
    listeners: list[trio.SocketListener] = []
    try:
        for family, type_, proto, _, sockaddr in infos:
            if port == 0 and listeners:  # one port for all of the host's addresses
                sockaddr = (sockaddr[0], listeners[0].socket.getsockname()[1], *sockaddr[2:])
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
                if reuse_port:
                    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
                if family == trio.socket.AF_INET6:
                    sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
                await sock.bind(sockaddr)
                sock.listen(_BACKLOG)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except OSError as exc:
        for listener in listeners:
            listener.socket.close()
        what = _BIND_ERRORS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()
        raise StartupError(f"{setting} {address}: {what}") from None
    return listeners


class ConnectionBudget:
    """How many connections may be open at once across the listeners that share it.

    `limit` may change at runtime (SIGHUP); lowering it closes no open connection, it only
    turns new ones away until enough have closed.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.full_logged = False  # one warning each time the budget runs out, not one a refusal

    def try_acquire(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def acquire_in_place_of_one_closing(self) -> None:
        """Admit one over the limit while a connection just told to close is on its way out
        (its `release` brings the count back)."""
        self.open += 1

    def release(self) -> None:
        self.open -= 1
        if self.open < self.limit:
            self.full_logged = False


async def accept_loop(
    listener: trio.SocketListener,
    source: str,
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    handler_nursery: trio.Nursery,
    budget: ConnectionBudget,
    metrics: Metrics,
    *,
    make_room: Callable[[], bool] | None = None,
) -> None:
    """Accept on `listener` until cancelled; run `handler(stream)` in `handler_nursery`.

    Over budget, `make_room()` may tell an open connection to close (the side port closes
    its oldest idle one) and return True: the new one is then admitted in its place.
    Otherwise it is closed at once. Either way one connection is counted in
    `ingestion_connections_rejected_total{source}`. Out of descriptors (or kernel memory),
    accept is retried after a growing pause and counted in
    `ingestion_accept_errors_total{source,error}`; a handler always closes its stream.
    """
    rejected = metrics.connections_rejected.labels(source)
    backoff = _BACKOFF_INITIAL_SECONDS
    failures = 0  # accept failures in the current streak
    address = _address(listener)
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRNOS:
                    raise
                code = errno.errorcode[exc.errno]
                metrics.accept_errors.labels(source, code).inc()
                if not failures:  # one line a streak, not ten a second
                    log.error(
                        f"cannot accept on {address}: {os.strerror(exc.errno)}; retrying",
                        extra={
                            "event": "accept_failed",
                            "source": source,
                            "listen": address,
                            "error": code,
                            "open_connections": budget.open,
                            "retry_seconds": backoff,
                        },
                    )
                failures += 1
                await trio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_SECONDS)
                continue
            if failures:
                log.warning(
                    f"accepting on {address} again",
                    extra={
                        "event": "accept_recovered",
                        "source": source,
                        "listen": address,
                        "failed_accepts": failures,
                    },
                )
                failures, backoff = 0, _BACKOFF_INITIAL_SECONDS
            if not budget.try_acquire():
                if make_room is not None and make_room():
                    rejected.inc()  # one was closed for the cap all the same
                    budget.acquire_in_place_of_one_closing()
                    handler_nursery.start_soon(_run, handler, stream, budget)
                    continue
                rejected.inc()
                if not budget.full_logged:
                    budget.full_logged = True
                    log.warning(
                        f"connection refused on {address}: {budget.open} connections open,"
                        f" the limit is {budget.limit}",
                        extra={
                            "event": "connection_limit_reached",
                            "source": source,
                            "listen": address,
                            "limit": budget.limit,
                        },
                    )
                await trio.aclose_forcefully(stream)
                continue
            handler_nursery.start_soon(_run, handler, stream, budget)


async def _run(
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    stream: trio.SocketStream,
    budget: ConnectionBudget,
) -> None:
    try:
        await handler(stream)
    finally:
        budget.release()
        await trio.aclose_forcefully(stream)


def _address(listener: trio.SocketListener) -> str:
    host, port, *_ = listener.socket.getsockname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
