"""The side port: GET /metrics (Prometheus text format), /livez and /readyz.

Kept apart from the ingest port so that scrapes and probes still answer while ingest sheds
load, and so that ingest auth never applies to them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..metrics import Metrics
from .listeners import ConnectionBudget, accept_loop

log = logging.getLogger("gravixd.side_port")

# Probes and scrapes are tiny; anything bigger is not a client of this port.
_MAX_REQUEST_BYTES = 8 * 1024
_TIMEOUT_SECONDS = 10.0
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

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.fail_after(_TIMEOUT_SECONDS):
                await _serve_one_connection(stream, metrics, readiness)
        except (trio.TooSlowError, trio.BrokenResourceError, h11.ProtocolError, OSError):
            pass
        except Exception:
            log.exception("side port handler failed", extra={"event": "side_port_error"})

    budget = ConnectionBudget(max_connections)
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_loop, listener, "side_port", handle, nursery, budget, metrics)


async def _serve_one_connection(
    stream: trio.SocketStream, metrics: Metrics, readiness: Callable[[], str | None]
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_BYTES)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(_MAX_REQUEST_BYTES)
            conn.receive_data(data)
            continue
        if not isinstance(event, h11.Request):
            return
        status, content_type, body = _route(event, metrics, readiness)
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        data = conn.send(h11.Response(status_code=status, headers=headers))
        data += conn.send(h11.Data(data=body)) if event.method != b"HEAD" else b""
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        while conn.their_state is h11.SEND_BODY:  # drain a (pointless) request body
            more = conn.next_event()
            if more is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(_MAX_REQUEST_BYTES))
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
