"""The side port: GET /metrics (Prometheus text format), /livez and /readyz.

Kept apart from the ingest port so that scrapes and probes still answer while ingest sheds
load, and so that ingest auth never applies to them. Probes must keep answering whatever
idle or slow connections others hold here (a liveness probe that fails restarts a healthy
pod): each connection gets short deadlines (a request within `_REQUEST_SECONDS`, an answer
sent within `_SEND_SECONDS`), and when the port's connection budget is full a new
connection takes the place of the one that has waited longest for a request. A probe's
request comes with its connection, so it is served before its turn to be closed comes.

`serve_side_port` serves what it is given (metrics, readiness): a supervisor of several
workers serves its own with the same function.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..metrics import Metrics
from .listeners import ConnectionBudget, accept_loop

log = logging.getLogger("gravixd.side_port")

# Probes and scrapes are tiny; anything bigger is not a client of this port.
_MAX_REQUEST_BYTES = 8 * 1024
# A kubelet probe sends its request at once and gives up after 1 s (timeoutSeconds), a
# Prometheus scrape after 10 s; between scrapes a keep-alive connection waits here for its
# next request, and is closed after this long (the scraper reconnects: cheap).
_REQUEST_SECONDS = 5.0
# Answers are at most a few hundred KiB (/metrics): a client that does not read them in this
# long is not a scraper.
_SEND_SECONDS = 5.0
# Prometheus, a kubelet's probes and an operator's curl are a handful of clients; 32 leaves
# room for several scrapers with keep-alive and still costs few descriptors.
MAX_CONNECTIONS = 32


async def serve_side_port(
    listeners: list[trio.SocketListener],
    metrics: Metrics,
    readiness: Callable[[], str | None],
    *,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve on the bound `listeners` until cancelled. `readiness()` returns None when
    ready, else why not. At most `max_connections` are open at once (its own budget: a
    flood of ingest clients never locks out the scrape, nor a flood of scrapers ingest)."""

    waiting = WaitingConnections()

    async def handle(stream: trio.abc.Stream) -> None:
        try:
            await _serve_one_connection(stream, metrics, readiness, waiting)
        except (trio.BrokenResourceError, h11.ProtocolError, OSError):
            pass
        except Exception:
            log.exception("side port handler failed", extra={"event": "side_port_error"})

    budget = ConnectionBudget(max_connections)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(
                partial(
                    accept_loop,
                    listener,
                    "side_port",
                    handle,
                    nursery,
                    budget,
                    metrics,
                    make_room=waiting.close_oldest,
                )
            )


class WaitingConnections:
    """Connections waiting for (the rest of) a request, longest-waiting first: the ones to
    close when the budget is full. Only `waiting_for_request` adds and removes them."""

    def __init__(self) -> None:
        self._scopes: dict[int, trio.CancelScope] = {}  # insertion order = waiting since
        self._ids = itertools.count()

    def __len__(self) -> int:
        return len(self._scopes)

    @contextmanager
    def waiting_for_request(self) -> Iterator[trio.CancelScope]:
        """A scope around one wait for request bytes: its deadline, and `close_oldest`'s
        way to end it."""
        key = next(self._ids)
        with trio.move_on_after(_REQUEST_SECONDS) as scope:
            self._scopes[key] = scope
            try:
                yield scope
            finally:
                self._scopes.pop(key, None)

    def close_oldest(self) -> bool:
        """Tell the connection that has waited longest to close; False when none waits."""
        for key, scope in self._scopes.items():
            del self._scopes[key]
            scope.cancel()
            return True
        return False


async def _serve_one_connection(
    stream: trio.abc.Stream,
    metrics: Metrics,
    readiness: Callable[[], str | None],
    waiting: WaitingConnections,
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_BYTES)
    while True:
        event: object = h11.NEED_DATA
        with waiting.waiting_for_request():  # idle, or a request not yet whole
            while (event := conn.next_event()) is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(_MAX_REQUEST_BYTES)))
        if not isinstance(event, h11.Request):
            return  # closed, timed out, made room for another, or not a request
        status, content_type, body = _route(event, metrics, readiness)
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        data = conn.send(h11.Response(status_code=status, headers=headers))
        data += conn.send(h11.Data(data=body)) if event.method != b"HEAD" else b""
        data += conn.send(h11.EndOfMessage())
        with trio.move_on_after(_SEND_SECONDS) as sending:
            await stream.send_all(data)
        if sending.cancelled_caught:
            return
        with waiting.waiting_for_request():  # drain a (pointless) request body
            while conn.their_state is h11.SEND_BODY:
                if conn.next_event() is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(_MAX_REQUEST_BYTES)))
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


def _route(
    request: h11.Request, metrics: Metrics, readiness: Callable[[], str | None]
) -> tuple[int, bytes, bytes]:
    path = request.target.split(b"?", 1)[0]
    if request.method not in (b"GET", b"HEAD"):
        return 405, b"text/plain", b"Expected GET or HEAD\n"
    if path == b"/metrics":
        metrics.ready.set(0 if readiness() else 1)  # current on every scrape, not just probes
        return 200, CONTENT_TYPE_LATEST.encode(), generate_latest(metrics.registry)
    if path == b"/livez":
        return 200, b"text/plain", b"ok\n"
    if path == b"/readyz":
        reason = readiness()
        metrics.ready.set(0 if reason else 1)
        if reason is None:
            return 200, b"text/plain", b"ready\n"
        return 503, b"text/plain", f"not ready: {reason}\n".encode()
    return 404, b"text/plain", b"Expected /metrics, /livez or /readyz\n"
