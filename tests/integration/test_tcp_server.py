"""The raw TCP listener over real loopback sockets, against a small in-memory pipeline,
with the pure and the native protobuf paths.

What a user relies on: every whole line/frame sent lands exactly once, in order, whatever
the segmentation; bad input is skipped (ndjson) or closes only its own connection (protobuf);
a half frame at disconnect is dropped and counted; a full spool stops reads (TCP
backpressure) instead of dropping. The daemon-level tests (real spool and store) are in
test_tcp_daemon.py.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec
import pyarrow as pa
import pytest
import trio

from gravixd import native
from gravixd.core.decode import ProtobufDecoder, decode_protobuf_pure
from gravixd.core.framing import encode_varint
from gravixd.errors import DurabilityError, SpoolFullError
from gravixd.eventgen import EventGenerator
from gravixd.metrics import Metrics
from gravixd.proto.gravix.v1 import events_pb2
from gravixd.runtime.pipeline import Pipeline
from gravixd.runtime.tcp_server import TcpDrain, serve_tcp_listener

NOW_NS = 1_800_000_000_000_000_000


class FakePipeline:
    """The Pipeline surface the TCP server uses, in memory, with switchable faults."""

    def __init__(self) -> None:
        self.protobuf_decoder: ProtobufDecoder = decode_protobuf_pure
        self.metrics = Metrics()
        self.batches: list[tuple[str, pa.RecordBatch, str]] = []
        self.writable = trio.Event()
        self.writable.set()
        self.spool_full_errors = 0  # ingest raises SpoolFullError this many more times
        self.durability_errors = 0
        self.wait_calls = 0

    async def ingest(self, stream: str, batch: pa.RecordBatch, source: str) -> None:
        await trio.sleep(0)  # a real ingest waits for the group commit
        if self.spool_full_errors:
            self.spool_full_errors -= 1
            raise SpoolFullError("spool above max_spool_bytes")
        if self.durability_errors:
            self.durability_errors -= 1
            raise DurabilityError("fsync failed: ENOSPC")
        self.batches.append((stream, batch, source))
        self.metrics.events_accepted.labels(stream, source).inc(batch.num_rows)  # as Pipeline does

    async def wait_writable(self) -> None:
        self.wait_calls += 1
        await self.writable.wait()

    def now_unix_nano(self) -> int:
        return NOW_NS

    unknown_keys = Pipeline.unknown_keys  # as Pipeline does (unknown_fields = attributes)
    count_unknown = Pipeline.count_unknown
    unknown_fields = "attributes"

    def rows(self, stream: str = "facts") -> list[dict[str, Any]]:
        batches = [b for s, b, _ in self.batches if s == stream]
        if not batches:
            return []
        table = pa.Table.from_batches(batches)
        # Nanosecond timestamps do not fit datetime: compare them as ints.
        nanos = table.column("timestamp").cast(pa.int64())
        return table.set_column(0, "timestamp", nanos).to_pylist()

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


Start = Callable[..., Any]


@pytest.fixture(params=["pure", "native"])
def pipeline(request: pytest.FixtureRequest) -> FakePipeline:
    # Each test runs on both protobuf paths: ProtobufFramer + the pure decoder, and the C
    # stream entry point the daemon uses when the native decoder is built.
    fake = FakePipeline()
    if request.param == "native":
        fake.protobuf_decoder = native.decode_protobuf
    return fake


@pytest.fixture
async def start(nursery: trio.Nursery, pipeline: FakePipeline) -> Start:
    async def start_listener(
        stream: str = "facts",
        framing: str = "ndjson",
        max_frame_bytes: int = 1 << 20,
        max_connections: int = 256,
    ) -> int:
        port: int = await nursery.start(
            partial(
                serve_tcp_listener,
                pipeline,
                ("127.0.0.1", 0),
                stream,
                framing,
                max_frame_bytes,
                max_connections,
            )
        )
        return port

    return start_listener


async def send(port: int, *pieces: bytes, pause: bool = False) -> None:
    """Send `pieces` (pausing between them if asked), close our side, wait for the server
    to finish with the connection (it closes after ingesting everything)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    async with stream:
        for piece in pieces:
            await stream.send_all(piece)
            if pause:
                await trio.sleep(0.002)
        await stream.send_eof()
        with trio.fail_after(10):
            assert await stream.receive_some() == b""


def facts(count: int, seed: int = 1) -> list[dict[str, Any]]:
    return EventGenerator("facts", seed).generate(count, NOW_NS)


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return b"".join(msgspec.json.encode(item) + b"\n" for item in items)


def frames(stream: str, items: list[dict[str, Any]]) -> bytes:
    cls = events_pb2.RequestFact if stream == "facts" else events_pb2.ServiceEvent
    out = []
    for item in items:
        if "severity" in item:
            item = {**item, "severity": f"SEVERITY_{item['severity']}"}
        message = cls(**item).SerializeToString()
        out.append(encode_varint(len(message)) + message)
    return b"".join(out)


def comparable(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(row["trace_id"], row["service"]) for row in rows]


def sent(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(item["trace_id"], item["service"]) for item in items]


# --- both framings land what was sent ---------------------------------------------------------


async def test_ndjson_rows_equal_what_was_sent(start: Start, pipeline: FakePipeline) -> None:
    port = await start()
    items = facts(3000)
    await send(port, ndjson(items))
    rows = pipeline.rows()
    assert comparable(rows) == sent(items)
    assert rows[0]["duration_ms"] == items[0]["duration_ms"]
    assert rows[0]["timestamp"] == items[0]["timestamp_unix_nano"]
    assert rows[0]["attributes"] == sorted(items[0]["attributes"].items())
    assert pipeline.sample("ingestion_events_accepted_total", stream="facts", source="tcp") == 3000
    assert pipeline.sample("ingestion_received_bytes_total", source="tcp") == len(ndjson(items))
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="eof") == 1
    assert {source for _, _, source in pipeline.batches} == {"tcp"}


@pytest.mark.parametrize("stream", ["facts", "events"])
async def test_protobuf_rows_equal_what_was_sent(
    start: Start, pipeline: FakePipeline, stream: str
) -> None:
    port = await start(stream=stream, framing="protobuf")
    items = EventGenerator(stream, 2).generate(2500, NOW_NS)
    await send(port, frames(stream, items))
    rows = pipeline.rows(stream)
    assert comparable(rows) == sent(items)
    if stream == "events":
        assert [r["severity"] for r in rows] == [i["severity"] for i in items]
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="eof") == 1


async def test_events_stream_over_ndjson(start: Start, pipeline: FakePipeline) -> None:
    port = await start(stream="events")
    items = EventGenerator("events", 3).generate(100, NOW_NS)
    await send(port, ndjson(items))
    assert comparable(pipeline.rows("events")) == sent(items)


async def test_many_connections_at_once(start: Start, pipeline: FakePipeline) -> None:
    nd_port = await start()
    pb_port = await start(framing="protobuf")
    per_connection = {i: facts(150, seed=i) for i in range(60)}
    async with trio.open_nursery() as nursery:
        for i, items in per_connection.items():
            if i % 2:
                nursery.start_soon(send, nd_port, ndjson(items))
            else:
                nursery.start_soon(send, pb_port, frames("facts", items))
    got = comparable(pipeline.rows())
    assert sorted(got) == sorted(x for items in per_connection.values() for x in sent(items))
    # Each connection's events keep their order.
    for items in per_connection.values():
        mine = set(sent(items))
        assert [x for x in got if x in mine] == sent(items)
    assert pipeline.sample("ingestion_connections_open", source="tcp") == 0


@pytest.mark.parametrize("framing", ["ndjson", "protobuf"])
async def test_split_at_every_byte_boundary(
    start: Start, pipeline: FakePipeline, framing: str
) -> None:
    port = await start(framing=framing)
    items = facts(2)
    data = ndjson(items) if framing == "ndjson" else frames("facts", items)
    async with trio.open_nursery() as nursery:
        for cut in range(1, len(data)):
            nursery.start_soon(partial(send, port, data[:cut], data[cut:], pause=True))
    rows = comparable(pipeline.rows())
    assert len(rows) == 2 * (len(data) - 1)
    assert sorted(set(rows)) == sorted(sent(items))
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="eof") == len(data) - 1


# --- bad input ------------------------------------------------------------------------------


async def test_malformed_line_in_the_middle_is_skipped(
    start: Start, pipeline: FakePipeline, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start()
    before, after = facts(50, seed=5), facts(50, seed=6)
    bad = b'{"service": "x", "status_code": "oops"}\n{not json}\n'
    head = ndjson(before)
    with caplog.at_level(logging.WARNING, logger="gravixd.tcp"):
        await send(port, head, bad, ndjson(after), pause=True)
    assert comparable(pipeline.rows()) == sent(before) + sent(after)
    assert (
        pipeline.sample(
            "ingestion_events_rejected_total", stream="facts", source="tcp", reason="validation"
        )
        == 1
    )
    assert (
        pipeline.sample(
            "ingestion_events_rejected_total", stream="facts", source="tcp", reason="invalid_json"
        )
        == 1
    )
    records = [r for r in caplog.records if getattr(r, "event", "") == "tcp_malformed_line"]
    assert [(r.line, r.byte_offset) for r in records] == [  # type: ignore[attr-defined]
        (51, len(head)),
        (52, len(head) + bad.index(b"\n") + 1),
    ]
    assert "Expected `int`" in records[0].error  # type: ignore[attr-defined]
    assert records[0].peer.startswith("127.0.0.1:")  # type: ignore[attr-defined]
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="eof") == 1


async def test_oversize_line_is_skipped(
    start: Start, pipeline: FakePipeline, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start(max_frame_bytes=1000)
    good = facts(3)
    huge = b'{"service": "' + b"x" * 5000 + b'"}\n'
    with caplog.at_level(logging.WARNING, logger="gravixd.tcp"):
        await send(port, ndjson(good[:1]), huge[:3000], huge[3000:], ndjson(good[1:]), pause=True)
    assert comparable(pipeline.rows()) == sent(good)
    assert (
        pipeline.sample(
            "ingestion_events_rejected_total", stream="facts", source="tcp", reason="oversize"
        )
        == 1
    )
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "tcp_oversize_line"]
    assert record.line == 2  # type: ignore[attr-defined]
    assert record.byte_offset == len(ndjson(good[:1]))  # type: ignore[attr-defined]


async def test_last_line_without_newline_is_accepted(start: Start, pipeline: FakePipeline) -> None:
    port = await start()
    items = facts(3)
    await send(port, ndjson(items).rstrip(b"\n"))
    assert comparable(pipeline.rows()) == sent(items)
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="eof") == 1


async def test_half_written_last_line_is_dropped_and_counted(
    start: Start, pipeline: FakePipeline
) -> None:
    port = await start()
    items = facts(3)
    await send(port, ndjson(items) + b'{"service": "half", "rou')
    assert comparable(pipeline.rows()) == sent(items)
    assert (
        pipeline.sample(
            "ingestion_events_rejected_total", stream="facts", source="tcp", reason="truncated"
        )
        == 1
    )
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="truncated") == 1


async def test_half_frame_at_disconnect_is_dropped_and_counted(
    start: Start, pipeline: FakePipeline, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start(framing="protobuf")
    items = facts(10)
    data = frames("facts", items)
    last = frames("facts", facts(1, seed=9))
    with caplog.at_level(logging.WARNING, logger="gravixd.tcp"):
        await send(port, data + last[:-3])
    assert comparable(pipeline.rows()) == sent(items)
    assert (
        pipeline.sample(
            "ingestion_events_rejected_total", stream="facts", source="tcp", reason="truncated"
        )
        == 1
    )
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="truncated") == 1
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "tcp_truncated_frame"]
    assert record.byte_offset == len(data)  # type: ignore[attr-defined]


async def test_connection_reset_keeps_whole_frames(start: Start, pipeline: FakePipeline) -> None:
    port = await start(framing="protobuf")
    items = facts(20)
    data = frames("facts", items) + frames("facts", facts(1, seed=4))[:5]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(data)
    # SO_LINGER 0: close sends RST, the abrupt disconnect of a crashed emitter.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.sleep(0.05)
    sock.close()
    with trio.fail_after(5):
        while pipeline.sample("ingestion_connections_open", source="tcp") or not (
            pipeline.sample("ingestion_tcp_closed_connections_total", reason="truncated")
            + pipeline.sample("ingestion_tcp_closed_connections_total", reason="error")
        ):
            await trio.sleep(0.01)
    assert comparable(pipeline.rows()) == sent(items)


async def test_malformed_frame_closes_only_its_connection(
    start: Start, pipeline: FakePipeline, caplog: pytest.LogCaptureFixture
) -> None:
    port = await start(framing="protobuf")
    good_before, good_after, other = facts(30, 1), facts(30, 2), facts(40, 3)
    garbage = b"\xff\xff\xff\xff\xff"  # a valid prefix is the next 5 bytes: not a message
    bad = encode_varint(len(garbage)) + garbage
    head = frames("facts", good_before)
    with caplog.at_level(logging.WARNING, logger="gravixd.tcp"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, port, head + bad + frames("facts", good_after))
            nursery.start_soon(send, port, frames("facts", other))
    got = comparable(pipeline.rows())
    assert sorted(got) == sorted(sent(good_before) + sent(other))
    assert (
        pipeline.sample(
            "ingestion_events_rejected_total",
            stream="facts",
            source="tcp",
            reason="invalid_protobuf",
        )
        == 1
    )
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="malformed_frame") == 1
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="eof") == 1
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "tcp_malformed_frame"]
    assert record.byte_offset == len(head)  # type: ignore[attr-defined]


async def test_well_formed_invalid_frame_is_skipped(start: Start, pipeline: FakePipeline) -> None:
    port = await start(framing="protobuf")
    before, after = facts(5, 1), facts(5, 2)
    invalid = events_pb2.RequestFact(service="", route="/x").SerializeToString()
    await send(port, frames("facts", before) + encode_varint(len(invalid)) + invalid
               + frames("facts", after))  # fmt: skip
    assert comparable(pipeline.rows()) == sent(before) + sent(after)
    assert (
        pipeline.sample(
            "ingestion_events_rejected_total", stream="facts", source="tcp", reason="validation"
        )
        == 1
    )


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [(encode_varint(5000), "frame_too_large"), (b"\xff" * 10, "varint_too_long")],
)
async def test_oversize_frame_closes_the_connection(
    start: Start, pipeline: FakePipeline, prefix: bytes, reason: str
) -> None:
    port = await start(framing="protobuf", max_frame_bytes=4096)
    before = facts(7)
    await send(port, frames("facts", before) + prefix + b"x" * 100)
    assert comparable(pipeline.rows()) == sent(before)
    assert (
        pipeline.sample(
            "ingestion_events_rejected_total", stream="facts", source="tcp", reason=reason
        )
        == 1
    )
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="malformed_frame") == 1


# --- load and faults ---------------------------------------------------------------------------


async def test_full_spool_stops_reads_then_resumes(start: Start, pipeline: FakePipeline) -> None:
    port = await start()
    pipeline.writable = trio.Event()  # full
    items = facts(2000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, port, ndjson(items))
        await trio.sleep(0.2)
        assert pipeline.batches == []
        assert pipeline.sample("ingestion_received_bytes_total", source="tcp") == 0
        pipeline.writable.set()
    assert comparable(pipeline.rows()) == sent(items)


async def test_spool_full_at_ingest_is_retried_not_dropped(
    start: Start, pipeline: FakePipeline
) -> None:
    port = await start(framing="protobuf")
    pipeline.spool_full_errors = 3
    items = facts(100)
    await send(port, frames("facts", items))
    assert comparable(pipeline.rows()) == sent(items)
    assert pipeline.spool_full_errors == 0


async def test_durability_error_closes_the_connection(start: Start, pipeline: FakePipeline) -> None:
    port = await start()
    pipeline.durability_errors = 1
    await send(port, ndjson(facts(10)))
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="durability") == 1
    # The listener still serves.
    items = facts(4, seed=8)
    await send(port, ndjson(items))
    assert comparable(pipeline.rows())[-4:] == sent(items)


async def test_connection_limit(start: Start, pipeline: FakePipeline) -> None:
    port = await start(max_connections=1)
    first = await trio.open_tcp_stream("127.0.0.1", port)
    await first.send_all(ndjson(facts(1)))
    with trio.fail_after(5):
        while not pipeline.batches:
            await trio.sleep(0.01)
    second = await trio.open_tcp_stream("127.0.0.1", port)
    with trio.fail_after(5):
        assert await second.receive_some() == b""  # closed at once
    assert pipeline.sample("ingestion_connections_rejected_total", source="tcp") == 1
    assert pipeline.sample("ingestion_connections_open", source="tcp") == 1
    await first.aclose()
    await second.aclose()


async def test_bad_arguments_are_refused(pipeline: FakePipeline) -> None:
    with pytest.raises(ValueError, match="framing"):
        await serve_tcp_listener(pipeline, ("127.0.0.1", 0), "facts", "csv", 10, 1)
    with pytest.raises(ValueError, match="stream"):
        await serve_tcp_listener(pipeline, ("127.0.0.1", 0), "logs", "ndjson", 10, 1)


async def test_a_drain_stops_reading_but_ingests_what_was_read(
    nursery: trio.Nursery, pipeline: FakePipeline
) -> None:
    drain = TcpDrain()
    entered, release = trio.Event(), trio.Event()
    real_ingest = pipeline.ingest

    async def slow_ingest(stream: str, batch: pa.RecordBatch, source: str) -> None:
        entered.set()  # the connection has read and decoded the lines
        await release.wait()  # ... and is waiting for the spool when the drain starts
        await real_ingest(stream, batch, source)

    pipeline.ingest = slow_ingest  # type: ignore[method-assign]
    port = await nursery.start(
        partial(
            serve_tcp_listener,
            pipeline,
            ("127.0.0.1", 0),
            "facts",
            "ndjson",
            1 << 20,
            16,
            handler_nursery=nursery,
            drain=drain,
        )
    )
    items = [{"service": "drain", "trace_id": f"d{i}"} for i in range(100)]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    async with client:
        await client.send_all(ndjson(items))
        with trio.fail_after(10):
            await entered.wait()
        drain.start()
        release.set()
        with trio.fail_after(10):
            await drain.wait_idle()  # the connection closed by itself
            assert await client.receive_some(10) == b""
    assert [r["trace_id"] for r in pipeline.rows()] == [i["trace_id"] for i in items]
    assert pipeline.sample("ingestion_tcp_closed_connections_total", reason="drain") == 1
