"""Raw TCP obeys the limits HTTP does: an idle timeout, partial lines and frames counted in
`max_in_flight_bytes` (reads stop over the cap, the count is given back at close), and a
bounded log of bad lines. Each connection here is the real `handle_connection` on a
`memory_stream_pair`, with trio's MockClock jumping through the timeouts.
"""

from __future__ import annotations

import logging
from functools import partial

import pyarrow as pa
import pytest
import trio
import trio.testing

from gravixd.core.decode import ProtobufDecoder, decode_protobuf_pure
from gravixd.core.framing import encode_varint
from gravixd.metrics import Metrics
from gravixd.runtime.in_flight import InFlightBytes
from gravixd.runtime.pipeline import Pipeline as RealPipeline
from gravixd.runtime.tcp_server import TcpDrain, handle_connection

NOW_NS = 1_800_000_000_000_000_000
IDLE_SECONDS = 5.0


class Pipeline:
    """The surface the TCP server uses; ingest keeps what it is given."""

    def __init__(self) -> None:
        self.protobuf_decoder: ProtobufDecoder = decode_protobuf_pure
        self.metrics = Metrics()
        self.rows = 0
        self.writable = trio.Event()  # cleared: the spool is full
        self.writable.set()

    async def ingest(self, stream: str, batch: pa.RecordBatch, source: str) -> None:
        await trio.lowlevel.checkpoint()
        self.rows += batch.num_rows

    async def wait_writable(self) -> None:
        await trio.lowlevel.checkpoint()
        await self.writable.wait()

    def now_unix_nano(self) -> int:
        return NOW_NS

    unknown_keys = RealPipeline.unknown_keys  # as Pipeline does (unknown_fields = attributes)
    count_unknown = RealPipeline.count_unknown
    unknown_fields = "attributes"

    def closed(self, reason: str) -> float:
        sample = self.metrics.registry.get_sample_value(
            "ingestion_tcp_closed_connections_total", {"reason": reason}
        )
        return sample or 0.0


def open_connection(
    nursery: trio.Nursery,
    pipeline: Pipeline,
    in_flight: InFlightBytes,
    framing: str = "ndjson",
    max_frame_bytes: int = 1 << 20,
) -> trio.testing.MemoryStapledStream:  # type: ignore[name-defined]
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(
        partial(
            handle_connection,
            pipeline,
            "facts",
            framing,
            max_frame_bytes,
            TcpDrain(),
            in_flight,
            lambda: IDLE_SECONDS,
        ),
        server,
    )
    return client


async def wait_closed(client: trio.abc.Stream) -> None:
    """Read until the server closed its side."""
    while await client.receive_some():
        pass


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    pipeline = Pipeline()
    client = open_connection(nursery, pipeline, InFlightBytes(1 << 20))
    await client.send_all(b'{"service":"s"}\n')
    started = trio.current_time()
    await wait_closed(client)  # it used to wait forever
    assert trio.current_time() - started == pytest.approx(IDLE_SECONDS, abs=0.01)
    assert pipeline.rows == 1  # what came before is ingested
    assert pipeline.closed("idle_timeout") == 1


async def test_a_connection_that_keeps_sending_is_not_idle(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    pipeline = Pipeline()
    client = open_connection(nursery, pipeline, InFlightBytes(1 << 20))
    for _ in range(10):  # 10 lines over 40 s, each within the timeout
        await client.send_all(b'{"service":"s"}\n')
        await trio.sleep(IDLE_SECONDS - 1)
    await client.send_eof()
    await wait_closed(client)
    assert pipeline.rows == 10
    assert pipeline.closed("eof") == 1 and pipeline.closed("idle_timeout") == 0


@pytest.mark.parametrize("framing", ["ndjson", "protobuf"])
async def test_partial_lines_and_frames_are_counted_reads_stop_over_the_cap_and_close_frees(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, framing: str
) -> None:
    pipeline = Pipeline()
    cap = 1 << 20
    in_flight = InFlightBytes(cap)
    pipeline.metrics.in_flight_bytes.set_function(lambda: in_flight.used_bytes)
    # A partial line (no newline yet) or a frame whose length says 900 KB, 300 KB of it sent.
    partial_unit = b'{"service":"' + b"x" * 300_000 if framing == "ndjson" else b""
    if framing == "protobuf":
        partial_unit = encode_varint(900_000) + b"\x12" + encode_varint(899_990) + b"x" * 300_000
    clients = []
    for _ in range(6):  # 6 x 300 KB held against a 1 MiB cap
        client = open_connection(nursery, pipeline, in_flight, framing, 1 << 20)
        await client.send_all(partial_unit)
        clients.append(client)
        await trio.testing.wait_all_tasks_blocked()
    # The gauge shows what is held; past the cap the later connections read nothing more
    # than one connection's worth over it (they used to buffer everything, uncounted).
    held = pipeline.metrics.registry.get_sample_value("ingestion_in_flight_bytes")
    assert held == in_flight.used_bytes
    assert cap < in_flight.used_bytes <= cap + len(partial_unit)
    # Closing gives everything back; the stopped connections read on, up to the cap again.
    for client in clients[:3]:
        await client.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert in_flight.used_bytes == 3 * len(partial_unit)
    for client in clients[3:]:
        await client.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert in_flight.used_bytes == 0
    assert pipeline.closed("truncated") == 6


async def test_a_connection_stopped_by_the_cap_while_holding_memory_times_out(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """Holders that never finish their line cannot lock everyone out: each is closed once it
    has made no progress for the idle timeout, and the cap frees up."""
    pipeline = Pipeline()
    in_flight = InFlightBytes(100_000)
    clients = []
    for _ in range(3):
        client = open_connection(nursery, pipeline, in_flight)
        await client.send_all(b'{"service":"' + b"x" * 80_000)
        clients.append(client)
    await trio.testing.wait_all_tasks_blocked()
    assert in_flight.used_bytes > in_flight.limit_bytes
    for client in clients:
        await wait_closed(client)
    assert in_flight.used_bytes == 0
    assert pipeline.closed("idle_timeout") == 3


async def test_bad_lines_log_excerpts_within_a_per_connection_budget(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    pipeline = Pipeline()
    client = open_connection(nursery, pipeline, InFlightBytes(64 << 20))
    value = b"z" * 500_000  # an unparseable timestamp: echoed in the error message
    lines = 100
    with caplog.at_level(logging.INFO, logger="gravixd.tcp"):
        for _ in range(lines):
            await client.send_all(b'{"service":"s","timestamp":"' + value + b'"}\n')
        await client.send_eof()
        await wait_closed(client)
    logged = [r for r in caplog.records if r.name == "gravixd.tcp"]
    size = sum(len(r.getMessage()) + len(str(vars(r).get("error", ""))) for r in logged)
    # 20 detailed lines and one summary.
    assert size < 20 * 1024  # it was ~2 x 500 KB for each of the 20 lines: ~20 MB
    details = [r for r in logged if getattr(r, "event", "") == "tcp_malformed_line"]
    assert len(details) == 20
    # The value is an excerpt that says how long it was (the decoder cuts echoed values; the
    # log cuts whatever message is still long).
    assert "(500000 characters)" in details[0].error  # type: ignore[attr-defined]
    [summary] = [r for r in logged if getattr(r, "event", "") == "tcp_errors_not_logged"]
    assert summary.count == lines - 20  # type: ignore[attr-defined]
    rejected = pipeline.metrics.registry.get_sample_value(
        "ingestion_events_rejected_total",
        {"stream": "facts", "source": "tcp", "reason": "validation"},
    )
    assert rejected == lines


async def test_connections_all_stopped_by_the_cap_take_turns_and_see_their_peers_close(
    nursery: trio.Nursery,
) -> None:
    """Every connection holds half a line and waits for room: one at a time reads on past
    the cap, so each sees its sender close and gives its bytes back at once (not only at
    the idle timeout)."""
    pipeline = Pipeline()
    in_flight = InFlightBytes(100_000)
    clients = [open_connection(nursery, pipeline, in_flight) for _ in range(3)]
    for client in clients:
        await client.send_all(b'{"service":"' + b"x" * 40_000)
    await trio.testing.wait_all_tasks_blocked()
    assert in_flight.used_bytes > in_flight.limit_bytes  # 3 x 40 KB against 100 KB
    for client in clients:
        await client.send_all(b"x" * 1000)  # more of each line: each must wait for room
        await client.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert in_flight.used_bytes == 0
    assert pipeline.closed("truncated") == 3


async def test_a_full_spools_pause_is_not_idleness(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """A sender stopped by a full spool (a store outage) for longer than the idle timeout,
    half a line sent, is not closed: the pause is gravixd's, not the sender's."""
    pipeline = Pipeline()
    client = open_connection(nursery, pipeline, InFlightBytes(1 << 20))
    await client.send_all(b'{"service":')
    await trio.testing.wait_all_tasks_blocked()  # read: half a line is held
    pipeline.writable = trio.Event()  # the spool fills
    await client.send_all(b'"s')  # read too; the next read waits for the spool
    await trio.sleep(IDLE_SECONDS * 10)
    pipeline.writable.set()  # the store is back
    await client.send_all(b'"}\n')
    await client.send_eof()
    await wait_closed(client)
    assert pipeline.rows == 1
    assert pipeline.closed("eof") == 1 and pipeline.closed("idle_timeout") == 0
