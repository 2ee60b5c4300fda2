"""The HTTP server's clocks, directly: idle keep-alive close, the 408 for a slow request,
the deadline on each response's send and on the TLS handshake, and the lingering close.

Each connection is `HttpServer`'s own handler on an in-memory stream (`memory_stream_pair`,
or `lockstep_stream_pair` where the client must not read), and trio's MockClock jumps
through the timeouts: no sleeps, no sockets, the same answer at any speed.
"""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from gravixd.core.decode import decode_protobuf_pure
from gravixd.core.http import HttpLimits
from gravixd.metrics import Metrics
from gravixd.runtime.http_server import HttpServer, HttpSettings
from gravixd.runtime.pipeline import Pipeline
from gravixd.runtime.spool import Spool, SpoolSettings

sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
from test_auth_tls import self_signed_cert  # noqa: E402

IDLE_SECONDS = 20.0
REQUEST_SECONDS = 7.0


def make_server(tmp_path: Path, ssl_context: ssl.SSLContext | None = None) -> HttpServer:
    metrics = Metrics()
    settings = SpoolSettings(
        segment_max_bytes=1 << 20,
        segment_max_events=1000,
        segment_max_age_seconds=60,
        segment_format="arrow",
        segment_compression="lz4",
        max_spool_bytes=1 << 30,
    )
    spool = Spool(tmp_path, settings, metrics, clock_unix_ms=lambda: 1_800_000_000_000)
    pipeline = Pipeline(spool, metrics, ack="durable", protobuf_decoder=decode_protobuf_pure)
    http = HttpSettings(
        limits=HttpLimits(1 << 20, 16 * 1024),
        request_timeout_seconds=REQUEST_SECONDS,
        idle_timeout_seconds=IDLE_SECONDS,
    )
    return HttpServer(pipeline, metrics, http, ssl_context)


def sample(server: HttpServer, name: str, **labels: str) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


async def read_all(client: trio.abc.Stream) -> bytes:
    data = b""
    while chunk := await client.receive_some():
        data += chunk
    return data


GET_404 = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"


async def test_an_idle_keep_alive_connection_closes_after_the_idle_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = make_server(tmp_path)
    client, conn = trio.testing.memory_stream_pair()
    nursery.start_soon(server._connection, conn)
    await client.send_all(GET_404)
    started = trio.current_time()
    answer = await read_all(client)  # the 404, then the close once idle
    assert answer.startswith(b"HTTP/1.1 404 Not Found")
    assert trio.current_time() - started == pytest.approx(IDLE_SECONDS, abs=0.01)
    assert server.load.connections == 0


async def test_a_request_that_stops_half_way_gets_408_after_the_request_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = make_server(tmp_path)
    client, conn = trio.testing.memory_stream_pair()
    nursery.start_soon(server._connection, conn)
    started = trio.current_time()
    await client.send_all(
        b"POST /v1/facts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    answer = await read_all(client)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
    assert trio.current_time() - started == pytest.approx(REQUEST_SECONDS, abs=0.01)
    assert server.load.in_flight_bytes == 0


async def test_a_client_that_never_reads_its_answers_is_closed_and_its_bytes_given_back(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    server = make_server(tmp_path)
    # Lockstep: a send completes only when the other side receives, like a full socket.
    client, conn = trio.testing.lockstep_stream_pair()
    nursery.start_soon(server._connection, conn)
    await client.send_all(GET_404)
    await trio.testing.wait_all_tasks_blocked()
    assert server.load.connections == 1 and server.load.in_flight_bytes > 0
    await trio.sleep(REQUEST_SECONDS + 1)  # the client never reads
    assert server.load.connections == 0  # it used to hold the slot for ever
    assert server.load.in_flight_bytes == 0
    assert sample(server, "ingestion_edge_timeouts_total", edge="send") == 1


async def test_a_tls_handshake_that_never_ends_closes_the_connection(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    cert, key = self_signed_cert(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = make_server(tmp_path / "spool", context)
    client, conn = trio.testing.memory_stream_pair()
    nursery.start_soon(server._connection, conn)
    started = trio.current_time()
    await client.send_all(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
    await read_all(client)
    # Closed at the handshake's deadline; it used to go on into the connection loop and
    # wait there for the idle timeout as well.
    assert trio.current_time() - started == pytest.approx(REQUEST_SECONDS, abs=0.01)
    assert server.load.connections == 0
    assert sample(server, "ingestion_edge_timeouts_total", edge="tls_handshake") == 1


async def test_after_an_error_that_closes_the_server_lingers_then_closes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """413: the server half-closes and reads on for a while (so the client gets the answer
    rather than a reset), then closes even if the client keeps its side open."""
    server = make_server(tmp_path)
    client, conn = trio.testing.memory_stream_pair()
    nursery.start_soon(server._connection, conn)
    await client.send_all(
        b"POST /v1/facts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 99999999\r\n\r\n"
    )
    answer = await read_all(client)  # EOF: the half-close comes at once
    assert answer.startswith(b"HTTP/1.1 413")
    half_closed = trio.current_time()
    await client.send_all(b"x" * 1000)  # still read and dropped while lingering
    while server.load.connections:
        await trio.sleep(0.1)
    assert 1.0 < trio.current_time() - half_closed < 3.0  # the linger's 2 s, not longer
