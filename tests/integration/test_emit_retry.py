"""`gravixd emit` against a scripted HTTP server: 503 retried after Retry-After (bounded),
4xx not retried, bodies in each wire form decode to what was generated, options checked."""

from __future__ import annotations

import argparse
import gzip
from functools import partial
from typing import Any

import h11
import pytest
import trio

from gravixd import emit
from gravixd.core.decode import as_record_batch, decode
from gravixd.emit import Plan, Stats, plan_from_args, retry_after_seconds, run


class ScriptedServer:
    """Answers each POST with the next (status, headers) of `script`, then 202s."""

    def __init__(self, script: list[tuple[int, list[tuple[str, str]]]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[dict[str, str], bytes, float]] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                headers: dict[str, str] = {}
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Request):
                        headers = {k.decode(): v.decode() for k, v in event.headers}
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:  # ConnectionClosed
                        return
                self.requests.append((headers, body, trio.current_time()))
                status, extra = self.script.pop(0) if self.script else (202, [])
                payload = b'{"accepted": %d}' % body.count(b"trace_id") if status == 202 else b"{}"
                response = h11.Response(
                    status_code=status,
                    headers=[("Content-Length", str(len(payload))), *extra],
                )
                await stream.send_all(conn.send(response) + conn.send(h11.Data(data=payload)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                conn.start_next_cycle()


def make_plan(port: int, **changes: Any) -> Plan:
    parser = argparse.ArgumentParser()
    emit.add_arguments(parser)
    args = parser.parse_args(["--url", f"http://127.0.0.1:{port}", "--count", "10"])
    plan = plan_from_args(args)
    return Plan(**{**plan.__dict__, "concurrency": 1, "batch_size": 10, **changes})


async def serve(nursery: trio.Nursery, server: ScriptedServer) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_503_is_retried_after_retry_after(nursery: trio.Nursery) -> None:
    server = ScriptedServer([(503, [("Retry-After", "1")]), (503, [("Retry-After", "0")])])
    port = await serve(nursery, server)
    stats = Stats()
    await run(make_plan(port, token="s3cret"), stats)
    assert (stats.sent, stats.acknowledged, stats.failed, stats.retries) == (10, 10, 0, 2)
    times = [t for _, _, t in server.requests]
    assert times[1] - times[0] >= 0.95  # waited for Retry-After: 1
    assert all(h["authorization"] == "Bearer s3cret" for h, _, _ in server.requests)
    assert len({body for _, body, _ in server.requests}) == 1  # the same body each time


async def test_retries_are_bounded(nursery: trio.Nursery) -> None:
    server = ScriptedServer([(503, [("Retry-After", "0")])] * 10)
    port = await serve(nursery, server)
    stats = Stats()
    await run(make_plan(port, max_retries=2), stats)
    assert (stats.acknowledged, stats.failed, stats.retries) == (0, 10, 2)
    assert len(server.requests) == 3
    assert stats.status_codes == {"503": 3}


async def test_client_errors_are_not_retried(nursery: trio.Nursery) -> None:
    server = ScriptedServer([(400, [])])
    port = await serve(nursery, server)
    stats = Stats()
    await run(make_plan(port, count=20), stats)
    assert (stats.acknowledged, stats.failed, stats.retries) == (10, 10, 0)
    assert list(stats.errors) == ["400: {}"]


async def test_connection_refused_counts_failed() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: refused
        stats = Stats()
        await run(make_plan(port, count=30), stats)
    # Nothing left the machine: not "sent" (issue 12: no negative or made-up rates).
    assert (stats.sent, stats.acknowledged, stats.failed) == (0, 0, 30)
    result = emit.report(make_plan(port, count=30), stats)
    assert result["requests_failed"] == 3 and result["acknowledged"] == 0


@pytest.mark.parametrize("wire", ["json", "ndjson", "protobuf"])
@pytest.mark.parametrize("stream", ["facts", "events"])
@pytest.mark.parametrize("gz", [False, True])
async def test_bodies_decode_to_what_was_generated(
    nursery: trio.Nursery, wire: str, stream: str, gz: bool
) -> None:
    server = ScriptedServer([])
    port = await serve(nursery, server)
    plan = make_plan(port, wire_format=wire, stream=stream, gzip=gz, target=f"/v1/{stream}")
    await run(plan, Stats())
    [(headers, body, _)] = server.requests
    assert headers["content-type"] == emit.CONTENT_TYPES[wire]
    if gz:
        assert headers["content-encoding"] == "gzip"
        body = gzip.decompress(body)
    batch = as_record_batch(stream, decode(stream, emit.CONTENT_TYPES[wire], body, 1))
    assert batch.num_rows == 10
    assert len(set(batch.column("trace_id").to_pylist())) == 10


def test_retry_after_parsing() -> None:
    import random

    rng = random.Random(1)
    assert retry_after_seconds("2", 1, rng) == 2.0
    assert retry_after_seconds("86400", 1, rng) == 30.0  # capped
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", 1, rng) == 0.0  # in the past
    assert 0.025 <= retry_after_seconds(None, 1, rng) <= 0.075
    assert retry_after_seconds(None, 20, rng) <= 7.5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tcp", "127.0.0.1:1", "--format", "json"], "--framing"),
        (["--tcp", "127.0.0.1:1", "--gzip"], "--gzip"),
        (["--url", "ftp://x"], "--url"),
        (["--rate", "-1"], "--rate"),
        (["--duration", "0"], "--duration"),
        (["--tcp", "nohostport"], "host:port"),
    ],
)
def test_bad_options_are_named(argv: list[str], message: str) -> None:
    parser = argparse.ArgumentParser()
    emit.add_arguments(parser)
    with pytest.raises(ValueError, match=message):
        plan_from_args(parser.parse_args(argv))


def test_url_forms() -> None:
    parser = argparse.ArgumentParser()
    emit.add_arguments(parser)
    plan = plan_from_args(parser.parse_args(["--url", "http://h:81/base/", "--stream", "events"]))
    assert (plan.host, plan.port, plan.target) == ("h", 81, "/base/v1/events")
    plan = plan_from_args(parser.parse_args(["--url", "https://h/v1/facts"]))
    assert (plan.port, plan.target, plan.tls) == (443, "/v1/facts", True)
