"""The HTTP ingest server: trio sockets around the sans-I/O `IngestProtocol`.

Limits are enforced here, where the bytes are: connections (closed at accept when full),
bytes buffered across all requests (503 while reading), requests in flight (503), slow
requests (408) and idle keep-alive connections (closed). Every response is counted in
`ingestion_requests_total{endpoint,code}` and timed in `ingestion_latency_seconds`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, cast

import pyarrow as pa
import trio

from ..core.decode import decode
from ..core.http import (
    ENDPOINTS,
    ErrorResponse,
    Header,
    HttpLimits,
    IngestProtocol,
    IngestRequest,
    NeedData,
    RawBody,
    SendInterim,
    error_body,
    otlp_error_body,
)
from ..core.otlp import SIGNALS as OTLP_SIGNALS
from ..core.otlp import OtlpBatch, Signal, decode_export, encode_response, response_content_type
from ..errors import DecodeError, DurabilityError, SpoolFullError
from ..metrics import Metrics
from .pipeline import Pipeline

log = logging.getLogger("gravixd.http")

_RECEIVE_BYTES: Final = 256 * 1024
# How long a shed client should wait: about one upload round; short enough to retry soon.
_RETRY_AFTER_SECONDS: Final = b"1"
_RETRY_AFTER: Final = [(b"retry-after", _RETRY_AFTER_SECONDS)]


@dataclass(slots=True)
class HttpSettings:
    """The HTTP server's share of the configuration; SIGHUP may replace fields."""

    limits: HttpLimits
    auth_tokens: tuple[str, ...] = ()
    max_connections: int = 1024
    max_in_flight_requests: int = 256
    max_in_flight_bytes: int = 256 * 1024 * 1024
    request_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 75.0


@dataclass(slots=True)
class _Load:
    connections: int = 0
    in_flight_requests: int = 0
    in_flight_bytes: int = 0
    idle: trio.Event = field(default_factory=trio.Event)


class HttpServer:
    def __init__(
        self,
        pipeline: Pipeline,
        metrics: Metrics,
        settings: HttpSettings,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.settings = settings
        self.ssl_context = ssl_context
        self.draining = False
        self.load = _Load()
        self._children: dict[tuple[str, int], Callable[[], None]] = {}
        self._latency: dict[str, object] = {}

    # --- accept loop -----------------------------------------------------------------------

    async def serve(
        self,
        host: str,
        port: int,
        connection_nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept until cancelled; connections live in `connection_nursery` so that a drain
        can stop accepting while in-flight requests finish."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, connection_nursery)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                if self.load.connections >= self.settings.max_connections:
                    self.metrics.connections_rejected.labels("http").inc()
                    await trio.aclose_forcefully(stream)
                    continue
                nursery.start_soon(self._connection, stream)

    async def wait_idle(self) -> None:
        while self.load.connections:
            await self.load.idle.wait()

    # --- one connection --------------------------------------------------------------------

    async def _connection(self, raw: trio.SocketStream) -> None:
        load = self.load
        load.connections += 1
        self.metrics.connections_open.labels("http").inc()
        stream: trio.abc.Stream = raw
        try:
            if self.ssl_context is not None:
                stream = trio.SSLStream(raw, self.ssl_context, server_side=True)
                with trio.move_on_after(self.settings.request_timeout_seconds):
                    await stream.do_handshake()
            await self._serve_connection(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass  # the peer went away; nothing of an unanswered request was acknowledged
        except Exception:
            log.exception("connection handler failed", extra={"event": "http_handler_error"})
        finally:
            load.connections -= 1
            self.metrics.connections_open.labels("http").dec()
            if not load.connections:
                load.idle.set()
                load.idle = trio.Event()
            await trio.aclose_forcefully(stream)

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        settings = self.settings
        protocol = IngestProtocol(settings.limits, settings.auth_tokens)
        buffered = 0  # this connection's share of load.in_flight_bytes
        started: float | None = None  # when the current request's first byte came
        try:
            while True:
                event = protocol.next_event()
                if isinstance(event, NeedData):
                    if self.draining and started is None:
                        return  # between requests: a drain closes idle keep-alives
                    if started is None:
                        deadline = trio.current_time() + settings.idle_timeout_seconds
                    else:
                        deadline = started + settings.request_timeout_seconds
                    data: bytes | bytearray = b""
                    with trio.move_on_at(deadline):
                        data = await stream.receive_some(_RECEIVE_BYTES)
                        if not data:
                            protocol.receive_data(b"")
                            continue
                    if not data:  # timed out
                        if started is None:
                            return
                        event = protocol.reject_now(
                            408,
                            "timeout",
                            "Expected the whole request within "
                            f"{settings.request_timeout_seconds} s, got only part of it",
                        )
                    else:
                        if started is None:
                            started = trio.current_time()
                        self.metrics.bytes_received.labels("http").inc(len(data))
                        buffered += len(data)
                        self.load.in_flight_bytes += len(data)
                        protocol.receive_data(cast(bytes, data))  # socket.recv: bytes
                        if (
                            self.load.in_flight_bytes > settings.max_in_flight_bytes
                            and protocol.request_started
                        ):
                            self.metrics.load_shed.labels("in_flight_bytes").inc()
                            event = protocol.reject_now(
                                503,
                                "overloaded",
                                f"Expected at most {settings.max_in_flight_bytes} request bytes in "
                                f"flight, got more; retry later",
                                _RETRY_AFTER,
                            )
                        else:
                            continue
                if isinstance(event, SendInterim):
                    await stream.send_all(event.data)
                    continue
                if started is None:
                    started = trio.current_time()  # a pipelined request, already buffered
                if isinstance(event, IngestRequest):
                    status, payload, headers = await self._handle(event)
                    data = protocol.respond(status, payload, headers)
                    endpoint, close = event.endpoint, protocol.must_close
                elif isinstance(event, ErrorResponse):
                    self.metrics.events_rejected.labels(
                        _stream_of(event.endpoint), _source_of(event.endpoint), event.reason
                    ).inc()
                    status, data, endpoint, close = (
                        event.status,
                        event.data,
                        event.endpoint,
                        event.close,
                    )
                else:
                    return  # Closed
                await stream.send_all(data)
                self._observe(endpoint, status, started)
                started = None
                self.load.in_flight_bytes -= buffered
                buffered = 0
                if close or (self.draining and not protocol.request_started):
                    return
        finally:
            self.load.in_flight_bytes -= buffered

    async def _handle(self, request: IngestRequest) -> tuple[int, object, list[Header]]:
        metrics, pipeline, load = self.metrics, self.pipeline, self.load
        if load.in_flight_requests >= self.settings.max_in_flight_requests:
            metrics.load_shed.labels("in_flight_requests").inc()
            return _error(
                request, 503, "overloaded", "Expected fewer requests in flight; retry later"
            )
        try:
            pipeline.check_writable()  # before decoding: shedding should cost little
        except SpoolFullError as exc:
            metrics.load_shed.labels("spool").inc()
            return _error(request, 503, "spool_full", str(exc))
        signal = OTLP_SIGNALS.get(request.endpoint)
        source = "http" if signal is None else "otlp"
        load.in_flight_requests += 1
        metrics.requests_in_flight.inc()
        decoded_bytes = 0  # counted against max_in_flight_bytes too, until the response
        try:
            try:
                now = pipeline.now_unix_nano()
                if signal is None:
                    otlp_result = None
                    batch = decode(
                        request.stream,
                        request.media_type,
                        request.body,
                        now,
                        pipeline.protobuf_decoder,
                    )
                else:
                    otlp_result = decode_export(signal, request.media_type, request.body, now)
                    batch = otlp_result.batch
            except DecodeError as exc:
                metrics.events_rejected.labels(request.stream, source, exc.reason).inc()
                return _error(request, 400, exc.reason, exc.message)
            if isinstance(batch, pa.RecordBatch):
                decoded_bytes = batch.nbytes
                load.in_flight_bytes += decoded_bytes
            if batch.num_rows:
                try:
                    await pipeline.ingest(request.stream, batch, source)
                except SpoolFullError as exc:
                    metrics.load_shed.labels("spool").inc()
                    return _error(request, 503, "spool_full", str(exc))
                except DurabilityError as exc:
                    message = f"{exc}; nothing of this request was kept, retry later"
                    return _error(request, 503, "not_durable", message)
            if signal is not None and otlp_result is not None:
                return 200, self._otlp_answer(signal, request, otlp_result), []
            return 202, {"accepted": batch.num_rows}, []
        finally:
            load.in_flight_bytes -= decoded_bytes
            load.in_flight_requests -= 1
            metrics.requests_in_flight.dec()

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
