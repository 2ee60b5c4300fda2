"""Raw TCP ingest listeners (DESIGN.md section 2): bytes -> framer -> decoder -> pipeline.

Each connection is a reader task (receive, frame, decode) and a writer task (hand record
batches to the pipeline, which spools them and waits per ack mode), joined by a small
channel so that decoding the next read overlaps the fsync of the previous one. There is no
reply channel: backpressure is TCP's own. Before every read the reader waits for the spool to
be writable, and the channel holds at most `_QUEUED_BATCHES`, so a full spool stops reads and
the sender's socket buffer fills. Nothing here drops events for load.

Raw TCP obeys the limits HTTP does. Memory: the read being framed and the partial line or
frame buffered until its end comes are held in the daemon's `max_in_flight_bytes` count
(in_flight.py), shared with HTTP; over the cap a connection stops reading, and everything
it held is given back when it closes. Time: a connection that sends nothing for
`idle_timeout_seconds` is closed, and so is one that holds a partial line or frame and has
made no progress for as long (whether the sender or a full in-flight cap stopped it; a
full spool's pause does not count), so idle senders can neither keep connection slots nor
pin memory.

What goes wrong is counted and logged with the connection and byte offset, and never touches
another connection: a malformed ndjson line is skipped; a malformed protobuf frame loses the
framing, so its connection is closed after accepting the good frames before it; a half frame
at disconnect is dropped. The log gets an excerpt of each message (a value may be a
megabyte) for the first few bad units of a connection, the rest only counted, so no sender
can grow the log without bound. A handler catches its own exceptions: one escaping would
take the listener (and the daemon) down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, Literal, Protocol, cast

import pyarrow as pa
import trio

from ..core.decode import (
    LineError,
    ProtobufDecoder,
    as_record_batch,
    decode_ndjson,
    decode_ndjson_lenient,
)
from ..core.frame_decode import DecodedFrames
from ..core.framing import (
    Lines,
    NdjsonFramer,
    OversizeLine,
    TrailingLine,
    TruncatedFrame,
)
from ..core.unknown_fields import UnknownFields
from ..errors import DecodeError, DurabilityError, SpoolFullError
from ..metrics import Metrics
from ..native import open_frame_decoder
from .in_flight import Held, InFlightBytes
from .listeners import ConnectionBudget, accept_loop, bind
from .malloc_tuning import TRIM_AFTER_BYTES, give_back_free_memory

__all__ = ["TcpDrain", "handle_connection", "serve_tcp_listener"]

log = logging.getLogger("gravixd.tcp")

SOURCE: Final = "tcp"
# One read: large enough that a decoder call amortises over ~1000 events, small enough to
# keep a connection's memory (read + framer buffer + queued batches) in the low MiB.
RECEIVE_BYTES: Final = 256 * 1024
# Decoded batches waiting for the pipeline per connection (about 1 MiB of events): enough
# to keep decoding while an ingest waits for its fsync, few enough that a full spool stops
# reads soon and a connection's memory stays small.
_QUEUED_BATCHES: Final = 4
# A sender that streams garbage must not flood the log: details of the first N bad units
# of a connection are logged, the rest only counted (one summary line at close).
_LOGGED_ERRORS_PER_CONNECTION: Final = 20
# A logged message is cut to this many characters (its full length said): a value echoed
# in an error may be up to a whole line (1 MiB), and 20 of those would be 20 MiB of log.
_LOGGED_MESSAGE_CHARS: Final = 240
# As HTTP's keep-alive default (nginx's 75 s): a daemon passes idle_timeout_seconds.
_IDLE_TIMEOUT_SECONDS: Final = 75.0
# Without a shared count (a listener on its own, tests): HttpSettings' default.
_MAX_IN_FLIGHT_BYTES: Final = 256 * 1024 * 1024

Framing = Literal["ndjson", "protobuf"]


class TcpDrain:
    """A SIGTERM drain for raw TCP: stop reading, ingest what was already read, close.

    Shared by every listener of a daemon. `start()` cancels each connection's pending read
    (and any wait for spool space); the connection then treats it as end of stream, so its
    decoded batches still reach the spool before it closes. `wait_idle()` returns once every
    connection has closed.
    """

    def __init__(self) -> None:
        self.draining = False
        self.connections = 0
        self._reads: set[trio.CancelScope] = set()
        self._idle = trio.Event()

    def start(self) -> None:
        self.draining = True
        for scope in self._reads:
            scope.cancel()

    @contextmanager
    def reading(self) -> Iterator[trio.CancelScope]:
        """A scope around one wait for input, which `start()` cancels."""
        with trio.CancelScope() as scope:
            self._reads.add(scope)
            try:
                yield scope
            finally:
                self._reads.discard(scope)

    async def wait_idle(self) -> None:
        while self.connections:
            await self._idle.wait()

    def opened(self) -> None:
        self.connections += 1

    def closed(self) -> None:
        self.connections -= 1
        if not self.connections:
            self._idle.set()
            self._idle = trio.Event()


class Pipeline(Protocol):
    """What the TCP server needs of `gravixd.runtime.pipeline.Pipeline`."""

    protobuf_decoder: ProtobufDecoder
    metrics: Metrics

    def unknown_keys(self) -> UnknownFields: ...

    def count_unknown(self, stream: str, source: str, unknown: UnknownFields) -> None: ...

    async def ingest(self, stream: str, batch: pa.RecordBatch, source: str) -> None: ...

    async def wait_writable(self) -> None: ...

    def now_unix_nano(self) -> int: ...


async def serve_tcp_listener(
    pipeline: Pipeline,
    listen: tuple[str, int],
    stream: str,
    framing: str,
    max_frame_bytes: int,
    max_connections: int,
    *,
    budget: ConnectionBudget | None = None,
    listeners: list[trio.SocketListener] | None = None,
    handler_nursery: trio.Nursery | None = None,
    drain: TcpDrain | None = None,
    in_flight: InFlightBytes | None = None,
    idle_timeout_seconds: Callable[[], float] | float = _IDLE_TIMEOUT_SECONDS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept raw TCP connections on `listen` and ingest what they send into `stream`.

    Args:
        listen: (host, port); port 0 picks a free one.
        framing: "ndjson" (one JSON object a line; `max_frame_bytes` is the longest line)
            or "protobuf" (varint-delimited messages; `max_frame_bytes` the largest frame).
        max_connections: open connections on this listener; further ones are closed at
            accept and counted. Pass `budget` instead to share one cap between listeners
            (the daemon's `max_connections` counts HTTP and every TCP listener together).
        listeners: sockets already bound to `listen` (a daemon binds every listener before
            it touches the spool); default: bind here.
        handler_nursery: where connections run (default: the listener's own nursery).
            A daemon passes a nursery that outlives its listeners, so that a drain can stop
            accepting while open connections finish.
        drain: the daemon's TcpDrain, which a SIGTERM starts.
        in_flight: the daemon's max_in_flight_bytes count (shared with HTTP); default: one
            of 256 MiB for this listener alone.
        idle_timeout_seconds: close a connection after this long without input (a callable
            is read at each wait, so a reload applies).
        task_status: started with the bound port once listening (`await nursery.start`).
    """
    if framing not in ("ndjson", "protobuf"):
        raise ValueError(f"Expected framing `ndjson` or `protobuf`, got `{framing}`")
    if stream not in ("facts", "events"):
        raise ValueError(f"Expected stream `facts` or `events`, got `{stream}`")
    host, port = listen
    if listeners is None:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        listeners = await bind("tcp_listen", address)
    budget = budget or ConnectionBudget(max_connections)
    idle = idle_timeout_seconds
    handler = partial(
        handle_connection,
        pipeline,
        stream,
        cast(Framing, framing),
        max_frame_bytes,
        drain or TcpDrain(),
        in_flight or InFlightBytes(_MAX_IN_FLIGHT_BYTES),
        idle if callable(idle) else lambda: idle,
    )
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(
                accept_loop,
                listener,
                SOURCE,
                handler,
                handler_nursery or nursery,
                budget,
                pipeline.metrics,
            )
        bound_port = listeners[0].socket.getsockname()[1]
        log.info(
            "raw TCP listener ready",
            extra={
                "event": "tcp_listening",
                "listen": f"{host}:{bound_port}",
                "stream": stream,
                "framing": framing,
            },
        )
        task_status.started(bound_port)


async def handle_connection(
    pipeline: Pipeline,
    stream: str,
    framing: Framing,
    max_frame_bytes: int,
    drain: TcpDrain,
    in_flight: InFlightBytes,
    idle_timeout_seconds: Callable[[], float],
    sock: trio.abc.Stream,
) -> None:
    """One connection, admitted by the listener's budget (`accept_loop` closes it after).
    `sock` is any trio stream (tests pass a memory stream)."""
    metrics = pipeline.metrics
    peer = _peer_name(sock)
    metrics.connections_open.labels(SOURCE).inc()
    connection = _Connection(
        pipeline, sock, stream, framing, max_frame_bytes, peer, drain, idle_timeout_seconds
    )
    connection.held = Held(in_flight)
    drain.opened()
    try:
        await connection.run()
    except Exception:  # a bug must close this connection, never the listener
        connection.close_reason = "error"
        log.exception(
            "raw TCP connection failed",
            extra={"event": "tcp_connection_error", "peer": peer, "stream": stream},
        )
    finally:
        connection.held.release()  # the partial line or frame is gone with the connection
        if connection.held_most_bytes >= TRIM_AFTER_BYTES:
            give_back_free_memory(trio.current_time())
        drain.closed()
        metrics.connections_open.labels(SOURCE).dec()
        metrics.tcp_disconnects.labels(connection.close_reason).inc()
        if connection.unlogged_errors:
            log.warning(
                "raw TCP connection sent more bad lines or frames than were logged",
                extra={
                    "event": "tcp_errors_not_logged",
                    "peer": peer,
                    "stream": stream,
                    "count": connection.unlogged_errors,
                },
            )
        await trio.aclose_forcefully(sock)


class _CloseConnection(Exception):
    """Raised inside a connection's tasks to close it for `reason` (a metric label)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass
class _Connection:
    pipeline: Pipeline
    sock: trio.abc.Stream
    stream: str
    framing: Framing
    max_frame_bytes: int
    peer: str
    drain: TcpDrain
    idle_timeout_seconds: Callable[[], float]
    close_reason: str = "eof"
    framing_lost: bool = False  # a malformed protobuf frame: stop reading, then close
    logged_errors: int = 0
    unlogged_errors: int = 0
    held: Held = field(init=False)  # the read being framed and the partial unit
    held_most_bytes: int = 0
    _bytes: Any = field(init=False)

    def __post_init__(self) -> None:
        # A cached label child: the hot path increments without a lookup. (The pipeline
        # counts accepted events, for every source alike.)
        self._bytes = self.pipeline.metrics.bytes_received.labels(SOURCE)

    async def run(self) -> None:
        send, receive = trio.open_memory_channel[pa.RecordBatch](_QUEUED_BATCHES)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, receive)
                async with send:
                    await self._read(send)
        except* _CloseConnection as group:
            first = group.exceptions[0]
            self.close_reason = first.reason if isinstance(first, _CloseConnection) else "error"

    async def _read(self, send: trio.MemorySendChannel[pa.RecordBatch]) -> None:
        on_data, on_eof, buffered = self._framer()
        pipeline, held = self.pipeline, self.held
        timed_out = False
        progress = trio.current_time()  # the last input, or the last wait that ended
        while not self.drain.draining:
            data = b""
            with self.drain.reading() as read:
                try:
                    # Backpressure: no reads while the spool is full, however long (a store
                    # outage); that pause is not the sender's, so it does not count as idle.
                    paused = trio.current_time()
                    await pipeline.wait_writable()
                    progress += trio.current_time() - paused
                    if held.bytes:  # a partial unit pins memory: it must progress in time
                        read.deadline = progress + self.idle_timeout_seconds()
                    await held.in_flight.wait_room(held)  # no reads while the cap is full
                    if not held.bytes:
                        read.deadline = trio.current_time() + self.idle_timeout_seconds()
                    data = bytes(await self.sock.receive_some(RECEIVE_BYTES))  # no copy: bytes
                except trio.BrokenResourceError:
                    # Reset by the peer: what was whole is ingested, a half frame is lost.
                    self.close_reason = "error"
            if read.cancelled_caught:
                if self.drain.draining:
                    self.close_reason = "drain"  # what was read is still ingested below
                else:
                    timed_out = True
            if not data:
                break
            progress = trio.current_time()
            self._bytes.inc(len(data))
            held.add(len(data))  # the read, while it is framed and decoded
            batches = on_data(data)
            del data
            self.held_most_bytes = max(self.held_most_bytes, held.bytes)
            held.set(buffered())  # what is left: the start of a line or frame
            for batch in batches:
                await send.send(batch)
            if self.framing_lost:
                return  # the good frames before the bad one are queued; nothing after
        for batch in on_eof():
            await send.send(batch)
        held.release()
        if timed_out:
            self.close_reason = "idle_timeout"
            log.info(
                "raw TCP connection closed: no input within the idle timeout",
                extra={
                    "event": "tcp_idle_timeout",
                    "peer": self.peer,
                    "stream": self.stream,
                    "idle_timeout_seconds": self.idle_timeout_seconds(),
                },
            )

    def _framer(
        self,
    ) -> tuple[
        Callable[[bytes], list[pa.RecordBatch]],
        Callable[[], list[pa.RecordBatch]],
        Callable[[], int],
    ]:
        """(bytes -> batches, end of stream -> batches, bytes buffered) for this
        connection's framing."""
        if self.framing == "ndjson":
            ndjson = NdjsonFramer(self.max_frame_bytes)
            return (
                lambda data: self._ndjson_events(ndjson.feed(data)),
                lambda: self._ndjson_events(ndjson.eof()),
                lambda: ndjson.buffered_bytes,
            )
        # The C stream entry point frames and decodes in one call when the daemon decodes
        # natively; otherwise ProtobufFramer feeds the pipeline's decoder.
        protobuf = open_frame_decoder(
            self.pipeline.protobuf_decoder, self.stream, self.max_frame_bytes
        )
        now = self.pipeline.now_unix_nano
        return (
            lambda data: self._protobuf_feed(protobuf.feed(data, now())),
            lambda: self._truncated(protobuf.eof()),
            lambda: protobuf.buffered_bytes,
        )

    async def _write(self, receive: trio.MemoryReceiveChannel[pa.RecordBatch]) -> None:
        pipeline = self.pipeline
        async with receive:
            async for first in receive:
                # Batches decoded while the last ingest waited for its fsync go in as one:
                # one spool append and one durability wait for all of them.
                batches = [first]
                while len(batches) < _QUEUED_BATCHES:
                    try:
                        batches.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                batch = first if len(batches) == 1 else pa.concat_batches(batches)
                while True:
                    try:
                        await pipeline.ingest(self.stream, batch, SOURCE)
                        break
                    except SpoolFullError:
                        # Raced past wait_writable: wait again rather than drop.
                        await pipeline.wait_writable()
                    except DurabilityError as exc:
                        log.error(
                            "raw TCP events could not be made durable; closing the connection",
                            extra={
                                "event": "tcp_durability_error",
                                "peer": self.peer,
                                "stream": self.stream,
                                "events": batch.num_rows,
                                "error": str(exc),
                            },
                        )
                        raise _CloseConnection("durability") from None

    # --- ndjson ---------------------------------------------------------------------------

    def _ndjson_events(self, events: list[Lines | TrailingLine | OversizeLine]) -> list[Any]:
        batches = []
        for event in events:
            if isinstance(event, Lines):
                batch = self._decode_lines(event.body, event.first_line, event.first_offset)
            elif isinstance(event, TrailingLine):
                batch = self._decode_lines(event.body, event.line, event.byte_offset, last=True)
            else:
                self._reject(
                    "oversize", "tcp_oversize_line", event.message, event.line, event.byte_offset
                )
                continue
            if batch is not None and batch.num_rows:
                batches.append(batch)
        return batches

    def _decode_lines(
        self, body: bytes, first_line: int, first_offset: int, *, last: bool = False
    ) -> pa.RecordBatch | None:
        now = self.pipeline.now_unix_nano()
        unknown = self.pipeline.unknown_keys()
        try:
            # All lines good: the fast path. (A few lines may come back as `Rows`: the writer
            # concatenates batches, so they become columns now.)
            batch = as_record_batch(self.stream, decode_ndjson(self.stream, body, now, unknown))
        except DecodeError:
            unknown = self.pipeline.unknown_keys()  # counted over the good lines only
            batch, errors = decode_ndjson_lenient(
                self.stream, body, now, first_line, first_offset, unknown
            )
            for error in errors:
                self._reject_line(error, truncated=last)
        # Counted as read (raw TCP has no answer to wait for, as for rejected lines).
        self.pipeline.count_unknown(self.stream, "tcp", unknown)
        return batch

    def _reject_line(self, error: LineError, *, truncated: bool) -> None:
        if truncated and error.reason == "invalid_json":
            # The stream ended inside this line: a half-written last line, not bad JSON.
            self.close_reason = "truncated"
            self._reject(
                "truncated", "tcp_truncated_line", error.message, error.line, error.byte_offset
            )
        else:
            self._reject(
                error.reason, "tcp_malformed_line", error.message, error.line, error.byte_offset
            )

    # --- protobuf -------------------------------------------------------------------------

    def _protobuf_feed(self, decoded: DecodedFrames) -> list[pa.RecordBatch]:
        # Frames before an unparseable one are accepted; a well-formed but invalid frame
        # (say an empty `service`) is skipped like a bad ndjson line: the framing holds.
        for frame in decoded.rejected:
            self._reject(frame.reason, "tcp_invalid_frame", frame.message, None, frame.byte_offset)
        if decoded.error is not None and not self.framing_lost:
            error = decoded.error
            self._lose_framing(error.reason, error.message, error.byte_offset)
        return [batch for batch in decoded.batches if batch.num_rows]

    def _lose_framing(self, reason: str, message: str, offset: int) -> None:
        self.framing_lost = True
        self.close_reason = "malformed_frame"
        self._reject(reason, "tcp_malformed_frame", message, None, offset, close=True)

    # --- both ---------------------------------------------------------------------------

    def _truncated(self, truncated: TruncatedFrame | None) -> list[pa.RecordBatch]:
        if truncated is not None:
            self.close_reason = "truncated"
            self._reject(
                "truncated", "tcp_truncated_frame", truncated.message, None, truncated.byte_offset
            )
        return []

    def _reject(
        self,
        reason: str,
        event: str,
        message: str,
        line: int | None,
        byte_offset: int,
        *,
        close: bool = False,
    ) -> None:
        self.pipeline.metrics.events_rejected.labels(self.stream, SOURCE, reason).inc()
        if self.logged_errors >= _LOGGED_ERRORS_PER_CONNECTION and not close:
            self.unlogged_errors += 1
            return
        self.logged_errors += 1
        extra: dict[str, Any] = {
            "event": event,
            "peer": self.peer,
            "stream": self.stream,
            "reason": reason,
            "byte_offset": byte_offset,
            "error": excerpt(message),  # once: the line's text would echo it a second time
        }
        if line is not None:
            extra["line"] = line
        what = "closing the connection" if close else "skipped"
        log.warning(f"raw TCP {self.framing} input rejected ({what})", extra=extra)


def excerpt(message: str, max_chars: int = _LOGGED_MESSAGE_CHARS) -> str:
    """`message` cut to about `max_chars`, saying how long it was: a value it echoes may be
    as long as a whole line. The middle goes, not the end: an error ends with what came and
    where (``got `x` - at `$.severity` ``)."""
    if len(message) <= max_chars:
        return message
    tail = max_chars // 3
    head = max_chars - tail
    return f"{message[:head]} ... ({len(message)} characters, cut) ... {message[-tail:]}"


def _peer_name(sock: trio.abc.Stream) -> str:
    try:
        host, port, *_ = sock.socket.getpeername()  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return "unknown"
    return f"{host}:{port}"
