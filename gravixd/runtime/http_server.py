"""The HTTP ingest server: trio sockets around the sans-I/O `IngestProtocol`.

Limits are enforced here, where the bytes are: connections (closed at accept when the
budget shared with raw TCP is spent, see `listeners`), bytes in memory across all requests
(503), requests in flight (503), slow requests (408), idle keep-alive connections
(closed), and the edges: a TLS handshake and every response's `send_all` get
`request_timeout_seconds` too, so a client that never finishes its handshake or never reads
its answers cannot hold a connection slot and its byte reservation for ever. Every response
is counted in `ingestion_requests_total{endpoint,code}` and timed in
`ingestion_latency_seconds`.

Memory: `max_in_flight_bytes` counts what a request really holds: its wire bytes as they
arrive; its body as it grows (gzip inflating it, slice by slice, so gzip cannot walk around
the cap) together with the working memory its decoder will need for it; then the decoded
batch until the response. A reservation that does not fit answers 503 + Retry-After as
early as it is known, unless the request is the only one holding memory (so that one
request within max_body_bytes always goes on).

Fairness: the protocol hands out work in slices and this server yields to other
connections between them; a large JSON or NDJSON body is decoded in slices on the loop
(`decode_in_slices`, a checkpoint between them), a large protobuf body in a worker thread,
so one client's request never holds the event loop for long.
"""

from __future__ import annotations

import functools
import logging
import math
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial as bind_args
from typing import Any, Final, TypeVar, TypeVarTuple, cast

import msgspec
import pyarrow as pa
import trio

from ..core.decode import (
    JSON_TYPES,
    NDJSON_TYPES,
    Decoded,
    DecodeSteps,
    Partial,
    decode,
    decode_in_slices,
    decode_protobuf_pure,
    decode_valid,
    valid_after_error,
)
from ..core.http import (
    ENDPOINTS,
    BearerTokens,
    ErrorResponse,
    Event,
    Header,
    HttpLimits,
    IngestProtocol,
    IngestRequest,
    NeedData,
    Progress,
    RawBody,
    SendInterim,
    error_body,
    otlp_error_body,
)
from ..core.otlp import (
    DEFAULT_MAX_RECORDS_PER_REQUEST,
    OtlpBatch,
    Signal,
    TooManyRecords,
    decode_export,
    encode_response,
    response_content_type,
)
from ..core.otlp import SIGNALS as OTLP_SIGNALS
from ..core.otlp import json_decode_bytes as otlp_json_decode_bytes
from ..core.unknown_fields import UnknownFields
from ..errors import DecodeError, DurabilityError, SpoolFullError
from ..metrics import Metrics
from ..native import otlp_walker_for
from .in_flight import Held, InFlightBytes
from .listeners import ConnectionBudget, accept_loop
from .pipeline import Pipeline

log = logging.getLogger("gravixd.http")
_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

_RECEIVE_BYTES: Final = 256 * 1024
# How long a shed client should wait: about one upload round; short enough to retry soon.
_RETRY_AFTER_SECONDS: Final = b"1"
_RETRY_AFTER: Final = [(b"retry-after", _RETRY_AFTER_SECONDS)]
# Bodies from this size on are decoded in slices (JSON, NDJSON) or in a worker thread
# (protobuf: the C decoder releases the GIL): a 512 KiB JSON body holds the loop ~5-10 ms,
# an 8 MiB one ~70-100 ms in one piece, and a worker thread would not help, since msgspec
# and pyarrow's conversions hold the GIL for the whole of each call. Below it the hand-off
# (~100 us) costs more than it spares.
_THREAD_DECODE_BYTES: Final = 512 * 1024
# Decoders' peak working memory per body byte, measured (bench/bench_overload.py, RSS):
# msgspec Structs + Arrow ~6x a JSON body; upb messages + Python lists ~19x a protobuf
# body; the C decoder writes the Arrow buffers directly, ~2x.
_DECODE_BYTES_PER_BODY_BYTE: Final = {"json": 6, "protobuf_pure": 20, "protobuf": 2}
# Rows of a small request are msgspec Structs until their group commit: estimated as the
# spool does.
_ROW_BYTES: Final = 512
# After an error that closes the connection, read and drop what the client still sends
# for up to this long and this much (as nginx's lingering close): closing with unread input
# makes the kernel send a reset, and the client would lose the response (a gzip bomb's
# 413). Not after a 400 (broken framing, a malformed body), 408 or 505: such a client is
# broken or hostile, and reading its flood would cost more than its reset.
_LINGER_SECONDS: Final = 2.0
_LINGER_BYTES: Final = 16 * 1024 * 1024
_LINGER_STATUSES: Final = frozenset({401, 404, 405, 411, 413, 415, 417, 431, 503})


@dataclass(slots=True)
class HttpSettings:
    """The HTTP server's share of the configuration; SIGHUP may replace fields."""

    limits: HttpLimits
    auth_tokens: tuple[str, ...] = ()
    max_in_flight_requests: int = 256
    max_in_flight_bytes: int = 256 * 1024 * 1024
    request_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 75.0
    invalid_events: str = "reject"  # or "skip": see core.decode.decode_valid
    otlp_max_records_per_request: int = DEFAULT_MAX_RECORDS_PER_REQUEST


@dataclass(slots=True)
class _Load:
    # Shared with raw TCP (its partial lines and frames): one max_in_flight_bytes.
    memory: InFlightBytes
    connections: int = 0
    in_flight_requests: int = 0
    idle: trio.Event = field(default_factory=trio.Event)

    @property
    def in_flight_bytes(self) -> int:
        return self.memory.used_bytes


class _Reservation:
    """One connection's share of max_in_flight_bytes; only this object changes it."""

    __slots__ = ("body", "held")

    def __init__(self, memory: InFlightBytes) -> None:
        self.held = Held(memory)
        self.body = 0  # of what is held, what the body and its decoding are reserved for

    @property
    def bytes(self) -> int:
        return self.held.bytes

    def set_body(self, n: int) -> None:
        """Reserve `n` bytes for the current body and its decoding (in place of the last)."""
        self.held.add(n - self.body)
        self.body = n

    def add(self, n: int) -> None:
        """Count bytes that are in memory already (received, decoded)."""
        self.held.add(n)

    def over_limit(self) -> bool:
        """Above the cap, and not alone: one request within the limits always goes on."""
        return self.held.over_limit()

    def release(self) -> None:
        """All of it: the request was answered (or the connection ended)."""
        self.held.release()
        self.body = 0


class HttpServer:
    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        settings: HttpSettings,
        ssl_context: ssl.SSLContext | None = None,
        *,
        in_flight: InFlightBytes | None = None,
    ) -> None:
        """`in_flight` is the daemon's max_in_flight_bytes count, shared with raw TCP."""
        self.pipeline = pipeline
        self.metrics = metrics
        self.load = _Load(in_flight or InFlightBytes(settings.max_in_flight_bytes))
        # One holder for every connection: a reload replaces the tokens it holds, and the
        # next request on any connection (keep-alive ones too) is checked against them.
        self.auth = BearerTokens()
        self.settings = settings
        self.ssl_context = ssl_context
        self.draining = False
        # Gauges of what `load` counts anyway are read at scrape time: no per-request update.
        metrics.in_flight_bytes.set_function(lambda: self.load.in_flight_bytes)
        metrics.requests_in_flight.set_function(lambda: self.load.in_flight_requests)
        metrics.connections_open.labels("http").set_function(lambda: self.load.connections)
        self._children: dict[tuple[str, int], Callable[[], None]] = {}
        self._latency: dict[str, object] = {}
        # OTLP protobuf bodies go through C when the daemon decodes its own protobuf there.
        self._otlp_walker = otlp_walker_for(pipeline.protobuf_decoder)
        self._bytes_received = metrics.bytes_received.labels("http")
        # One: big decodes mostly hold the GIL (msgspec, pyarrow's conversions), and each more
        # thread is one more contender the event loop has to win the GIL from.
        self._decode_threads = trio.CapacityLimiter(1)

    @property
    def settings(self) -> HttpSettings:
        return self._settings

    @settings.setter
    def settings(self, settings: HttpSettings) -> None:
        self._settings = settings
        self.auth.replace(settings.auth_tokens)
        self.load.memory.limit_bytes = settings.max_in_flight_bytes  # applies at once

    # --- accept loop -----------------------------------------------------------------------

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        connection_nursery: trio.Nursery,
        budget: ConnectionBudget,
    ) -> None:
        """Accept on the bound `listeners` until cancelled. Connections live in
        `connection_nursery`, so that a drain can stop accepting while in-flight requests
        finish; `budget` is the `max_connections` cap shared with raw TCP."""
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(
                    accept_loop,
                    listener,
                    "http",
                    self._connection,
                    connection_nursery,
                    budget,
                    self.metrics,
                )

    async def wait_idle(self) -> None:
        while self.load.connections:
            await self.load.idle.wait()

    # --- one connection --------------------------------------------------------------------

    async def _connection(self, raw: trio.SocketStream) -> None:
        load = self.load
        load.connections += 1
        stream: trio.abc.Stream = raw
        try:
            if self.ssl_context is not None:
                stream = trio.SSLStream(raw, self.ssl_context, server_side=True)
                with trio.move_on_after(self.settings.request_timeout_seconds) as handshake:
                    await stream.do_handshake()
                if handshake.cancelled_caught:
                    self.metrics.edge_timeouts.labels("tls_handshake").inc()
                    return  # never into the connection loop half shaken
            if await self._serve_connection(stream):
                await _linger(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass  # the peer went away; nothing of an unanswered request was acknowledged
        except Exception:
            log.exception("connection handler failed", extra={"event": "http_handler_error"})
        finally:
            load.connections -= 1
            if not load.connections:
                load.idle.set()
                load.idle = trio.Event()
            await trio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: trio.abc.Stream) -> bool:
        """Serve requests until the connection ends; True when it ends with an error response
        that may have left the client sending (the caller lingers)."""
        settings = self.settings
        protocol = IngestProtocol(settings.limits, self.auth)
        held = _Reservation(self.load.memory)
        started: float | None = None  # when the current request's first byte came
        # One scope for the connection, its deadline set around each receive and each send
        # (entering a scope per receive cost ~10 us a request); `sending` tells which one
        # timed out.
        receiving = trio.CancelScope()
        sending = False
        try:
            with receiving:
                while True:
                    event = protocol.next_event()
                    if isinstance(event, Progress):
                        held.set_body(
                            self._body_reservation(
                                protocol.endpoint,
                                protocol.media_type,
                                protocol.body_bytes,
                                protocol.decompressed_bytes,
                            )
                        )
                        if not (held.over_limit() and protocol.request_started):
                            await trio.lowlevel.checkpoint()  # let other connections run
                            continue
                        event = self._shed_in_flight_bytes(protocol)
                    elif isinstance(event, NeedData):
                        if self.draining and started is None:
                            return False  # between requests: a drain closes idle keep-alives
                        if started is None:
                            settings = self.settings
                            protocol.limits = settings.limits  # a reload applies from here
                            deadline = trio.current_time() + settings.idle_timeout_seconds
                        else:
                            deadline = started + settings.request_timeout_seconds
                        receiving.deadline = deadline
                        data = await stream.receive_some(_RECEIVE_BYTES)
                        receiving.deadline = math.inf
                        if not data:
                            protocol.receive_data(b"")
                            continue
                        if started is None:
                            started = trio.current_time()
                        self._bytes_received.inc(len(data))
                        held.add(len(data))
                        protocol.receive_data(cast(bytes, data))  # socket.recv: bytes
                        if not (held.over_limit() and protocol.request_started):
                            continue
                        event = self._shed_in_flight_bytes(protocol)
                    if isinstance(event, SendInterim):
                        sending = True
                        receiving.deadline = trio.current_time() + settings.request_timeout_seconds
                        await stream.send_all(event.data)
                        receiving.deadline = math.inf
                        sending = False
                        continue
                    if started is None:
                        started = trio.current_time()  # a pipelined request, already buffered
                    if isinstance(event, IngestRequest):
                        held.set_body(
                            self._body_reservation(
                                event.endpoint,
                                event.media_type,
                                len(event.body),
                                event.decompressed_bytes,
                                event.body,
                            )
                        )
                        status, payload, headers = await self._handle(event, held)
                        response = protocol.respond(status, payload, headers)
                        endpoint, close, linger = event.endpoint, protocol.must_close, False
                    elif isinstance(event, ErrorResponse):
                        self._count_rejected(event)
                        status, response, endpoint = event.status, event.data, event.endpoint
                        close = event.close
                        linger = close and status in _LINGER_STATUSES
                    else:
                        return False  # Closed
                    sending = True
                    receiving.deadline = trio.current_time() + settings.request_timeout_seconds
                    await stream.send_all(response)
                    receiving.deadline = math.inf
                    sending = False
                    self._observe(endpoint, status, started)
                    started = None
                    held.release()
                    if close or (self.draining and not protocol.request_started):
                        return linger
            if sending:  # the client does not read its answers: close, give everything back
                self.metrics.edge_timeouts.labels("send").inc()
                return False
            # The receive deadline passed: idle between requests closes; mid-request, 408.
            if started is None:
                return False
            event = protocol.reject_now(
                408,
                "timeout",
                "Expected the whole request within "
                f"{settings.request_timeout_seconds} s, got only part of it",
            )
            if isinstance(event, ErrorResponse):
                self._count_rejected(event)
                with trio.move_on_after(settings.request_timeout_seconds):
                    await stream.send_all(event.data)
                self._observe(event.endpoint, event.status, started)
            return False
        finally:
            held.release()

    def _count_rejected(self, event: ErrorResponse) -> None:
        self.metrics.events_rejected.labels(
            _stream_of(event.endpoint), _source_of(event.endpoint), event.reason
        ).inc()

    def _shed_in_flight_bytes(self, protocol: IngestProtocol) -> Event:
        self.metrics.load_shed.labels("in_flight_bytes").inc()
        cap = self.settings.max_in_flight_bytes
        return protocol.reject_now(
            503,
            "overloaded",
            f"Expected at most {cap} request bytes in flight, got more; retry later",
            _RETRY_AFTER,
        )

    async def _handle(
        self, request: IngestRequest, held: _Reservation
    ) -> tuple[int, object, list[Header]]:
        metrics, pipeline, load = self.metrics, self.pipeline, self.load
        if load.in_flight_requests >= self.settings.max_in_flight_requests:
            metrics.load_shed.labels("in_flight_requests").inc()
            return _error(
                request, 503, "overloaded", "Expected fewer requests in flight; retry later"
            )
        try:
            pipeline.check_writable()  # before decoding: shedding should cost little
        except SpoolFullError as exc:
            metrics.load_shed.labels(_shed_label(exc)).inc()
            return _error(request, 503, "spool_full", str(exc))
        signal = OTLP_SIGNALS.get(request.endpoint)
        if (
            signal is not None
            and request.media_type in JSON_TYPES
            and held.body > self.settings.max_in_flight_bytes
        ):
            # OTLP JSON measured by its objects, alone over the budget: no retry can succeed
            # (a 503 would be retried forever). Protobuf bodies are bounded by their records.
            message = (
                f"Expected a body whose decoding fits max_in_flight_bytes="
                f"{self.settings.max_in_flight_bytes}, got one that needs ~{held.body} bytes "
                f"({len(request.body)} bytes of {signal.record_noun} and their objects); "
                "send smaller batches"
            )
            metrics.events_rejected.labels(signal.stream, "otlp", "too_large_to_decode").inc()
            return _error(request, 413, "too_large_to_decode", message)
        if held.over_limit():
            metrics.load_shed.labels("in_flight_bytes").inc()
            message = (
                f"Expected room for decoding {len(request.body)} bytes within "
                f"max_in_flight_bytes={self.settings.max_in_flight_bytes}, got none; retry later"
            )
            return _error(request, 503, "overloaded", message)
        source = "http" if signal is None else "otlp"
        load.in_flight_requests += 1
        try:
            otlp_result: OtlpBatch | None = None
            skip = False
            unknown = pipeline.unknown_keys()
            try:
                now = pipeline.now_unix_nano()
                if signal is None:
                    skip = (request.invalid_events or self.settings.invalid_events) == "skip"
                    partial = await self._decode(request, skip, now, unknown)
                    batch = partial.decoded
                else:
                    otlp_result = await self._off_loop_if_big(
                        request.body,
                        functools.partial(
                            decode_export,
                            walker=self._otlp_walker,
                            max_records=self.settings.otlp_max_records_per_request,
                            working_bytes=self._otlp_working_bytes(held),
                        ),
                        signal,
                        request.media_type,
                        request.body,
                        now,
                    )
                    batch = otlp_result.batch
            except TooManyRecords as exc:
                if exc.retryable:
                    metrics.load_shed.labels("in_flight_bytes").inc()
                    return _error(request, 503, "overloaded", exc.message)
                metrics.events_rejected.labels(request.stream, source, exc.reason).inc()
                return _error(request, 413, exc.reason, exc.message)
            except DecodeError as exc:
                metrics.events_rejected.labels(request.stream, source, exc.reason).inc()
                return _error(request, 400, exc.reason, exc.message)
            finally:
                # Decoded: what is left of the request is its body and its batch.
                held.set_body(request.decompressed_bytes)
            # The decoded batch counts until the response (the cap is over-run by at most
            # this, which the decoding reservation just covered).
            held.add(
                batch.nbytes if isinstance(batch, pa.RecordBatch) else batch.num_rows * _ROW_BYTES
            )
            if batch.num_rows:
                try:
                    await pipeline.ingest(request.stream, batch, source)
                except SpoolFullError as exc:
                    metrics.load_shed.labels(_shed_label(exc)).inc()
                    return _error(request, 503, "spool_full", str(exc))
                except DurabilityError as exc:
                    message = f"{exc}; nothing of this request was kept, retry later"
                    return _error(request, 503, "not_durable", message)
                pipeline.count_unknown(request.stream, source, unknown)
            if signal is not None and otlp_result is not None:
                return 200, self._otlp_answer(signal, request, otlp_result), []
            if skip:
                return 202, self._partial_answer(request.stream, batch.num_rows, partial), []
            return 202, {"accepted": batch.num_rows}, []
        finally:
            load.in_flight_requests -= 1

    def _otlp_working_bytes(self, held: _Reservation) -> int | None:
        """What an OTLP body's records may take while decoded: its reservation and the room
        left under max_in_flight_bytes; None when it is alone (one request always goes on)."""
        used = self.load.in_flight_bytes
        if used <= held.bytes:
            return None
        return held.body + max(0, self.settings.max_in_flight_bytes - used)

    def _partial_answer(self, stream: str, accepted: int, partial: Partial) -> object:
        """Count the events a skipping request left out (now that the rest is durable: a
        retried request is not counted twice) and say which."""
        for reason, count in partial.rejected_reasons.items():
            self.metrics.events_rejected.labels(stream, "http", reason).inc(count)
        errors = msgspec.to_builtins(partial.errors)
        return {"accepted": accepted, "rejected": partial.rejected, "errors": errors}

    def _otlp_answer(self, signal: Signal, request: IngestRequest, result: OtlpBatch) -> RawBody:
        """Count what an OTLP request left out (now that the rest is durable: a retried
        request is not counted twice) and encode its Export…ServiceResponse."""
        for reason, count in result.rejected_reasons.items():
            self.metrics.events_rejected.labels(signal.stream, "otlp", reason).inc(count)
        for kind, count in result.ignored_by_kind.items():
            self.metrics.otlp_spans_ignored.labels(kind).inc(count)
        media_type = request.media_type
        return RawBody(
            response_content_type(media_type), encode_response(signal, media_type, result)
        )

    def _body_reservation(
        self,
        endpoint: str,
        media_type: str,
        body_bytes: int,
        decompressed_bytes: int,
        body: bytes | None = None,
    ) -> int:
        """What a body of `body_bytes` holds until decoded: the inflated bytes (identity
        bodies are their wire bytes, counted already) and its decoder's working memory. Once
        the whole `body` is there, an OTLP JSON body is measured by its objects: tiny records
        cost far more than their bytes."""
        signal = OTLP_SIGNALS.get(endpoint)
        decoding = body_bytes * self._decode_factor(media_type, signal)
        if signal is not None and body is not None and media_type in JSON_TYPES:
            decoding = max(decoding, otlp_json_decode_bytes(body))
        return decompressed_bytes + decoding

    def _decode_factor(self, media_type: str, signal: Signal | None) -> int:
        if media_type in JSON_TYPES or media_type in NDJSON_TYPES:
            return _DECODE_BYTES_PER_BODY_BYTE["json"]
        if signal is not None or self.pipeline.protobuf_decoder is decode_protobuf_pure:
            return _DECODE_BYTES_PER_BODY_BYTE["protobuf_pure"]  # OTLP parses with upb
        return _DECODE_BYTES_PER_BODY_BYTE["protobuf"]

    async def _decode(
        self, request: IngestRequest, skip: bool, now: int, unknown: UnknownFields
    ) -> Partial:
        """`decode_valid` (skip) or `decode` of a request body, without holding the loop long;
        `unknown` counts the unknown JSON keys of the events it returns."""
        args = (request.stream, request.media_type, request.body, now)
        protobuf_decoder = self.pipeline.protobuf_decoder
        decode_all = decode_valid if skip else _decode_all
        media_type = request.media_type
        if media_type not in JSON_TYPES and media_type not in NDJSON_TYPES:
            return await self._off_loop_if_big(request.body, decode_all, *args, protobuf_decoder)
        if len(request.body) < _THREAD_DECODE_BYTES:
            return decode_all(*args, protobuf_decoder, unknown=unknown)
        try:
            return Partial(await _run_steps(decode_in_slices(*args, unknown=unknown)))
        except DecodeError as first:
            if not skip:
                raise
            unknown.restore()  # counted again, over the valid events only
            # Each event on its own, a Python loop (the GIL changes hands between its
            # items): in the worker thread.
            valid = bind_args(valid_after_error, unknown=unknown)
            return await trio.to_thread.run_sync(
                valid, *args, protobuf_decoder, first, limiter=self._decode_threads
            )

    async def _off_loop_if_big(self, body: bytes, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        """fn(*args) here for a small body; in a worker thread for a big one."""
        if len(body) < _THREAD_DECODE_BYTES:
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=self._decode_threads)

    def _observe(self, endpoint: str, status: int, started: float) -> None:
        key = (endpoint, status)
        inc = self._children.get(key)
        if inc is None:
            inc = self._children[key] = self.metrics.requests.labels(endpoint, str(status)).inc
        inc()
        observe = self._latency.get(endpoint)
        if observe is None:
            observe = self._latency[endpoint] = self.metrics.latency.labels(endpoint).observe
        observe(trio.current_time() - started)  # type: ignore[operator]


async def _run_steps(steps: DecodeSteps) -> Decoded:
    """Drive a sliced decode to its end, letting other tasks run between its steps."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(Decoded, done.value)
        await trio.lowlevel.checkpoint()


def _decode_all(*args: Any, **kwargs: Any) -> Partial:
    """`decode` (all-or-nothing) in `decode_valid`'s shape."""
    return Partial(decode(*args, **kwargs))


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then read and drop until the client closes (or the linger budget ends)."""
    left = _LINGER_BYTES
    with trio.move_on_after(_LINGER_SECONDS):
        if isinstance(stream, trio.abc.HalfCloseableStream):  # TLS cannot half-close
            await stream.send_eof()
        while left > 0 and (data := await stream.receive_some(_RECEIVE_BYTES)):
            left -= len(data)


def _shed_label(exc: SpoolFullError) -> str:
    """`ingestion_load_shed_total{limit}`: `spool` (bytes) or `upload_queue` (segments)."""
    return "upload_queue" if exc.limit == "upload_queue" else "spool"


def _stream_of(endpoint: str) -> str:
    return ENDPOINTS.get(endpoint.encode(), "none")


def _source_of(endpoint: str) -> str:
    return "otlp" if endpoint in OTLP_SIGNALS else "http"


def _error(
    request: IngestRequest, status: int, reason: str, message: str
) -> tuple[int, object, list[Header]]:
    """An error answer in the request's protocol: gravixd's JSON error body, or for OTLP a
    google.rpc.Status in the request's encoding. Every 503 carries Retry-After."""
    headers = _RETRY_AFTER if status == 503 else []
    if request.endpoint in OTLP_SIGNALS:
        return status, otlp_error_body(request.media_type, status, message), headers
    return status, error_body(status, reason, message), headers
