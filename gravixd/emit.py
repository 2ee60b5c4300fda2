"""`gravixd emit`: send generated or file events to gravixd over HTTP or raw TCP.

The emitter users and the benchmarks use. HTTP: JSON, NDJSON or protobuf bodies (gzip if
asked), `--batch-size` events a request, `--concurrency` keep-alive connections, 503/429
retried after `Retry-After` (bounded). TCP: ndjson lines or varint-delimited protobuf frames
on `--concurrency` connections. Events are generated (`gravixd.eventgen`) at `--rate` events/s
or as fast as the target takes them, for `--duration` seconds or `--count` events, or read
from `--file` (ndjson, `-` = stdin). It reports sent, acknowledged and failed counts,
events/s and latency percentiles: a progress line on a terminal, JSON with `--json`.

Acknowledged means a 202 said so (`{"accepted": N}`). Raw TCP has no acknowledgement: after
the last write each connection half-closes and waits for gravixd to close its side, which it
does once it has ingested everything it read; `acknowledged` is then null in the report.

HTTP/1.1 is spoken through h11 (no hand-written parser); nothing here imports the daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import gzip
import math
import os
import random
import socket
import ssl
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import IO, Any, Final

import h11
import msgspec
import trio

from . import __version__
from .config import parse_listen
from .core.framing import encode_varint
from .core.json_fields import (
    FieldValueError,
    int64_of,
    rfc3339_unix_nano,
    severity_of,
    unix_nano_of,
)
from .eventgen import EventGenerator

__all__ = ["add_arguments", "main", "run"]

USER_AGENT: Final = f"gravixd-emit/{__version__}"
CONTENT_TYPES: Final = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "protobuf": "application/x-protobuf",
}
# A Retry-After above this is not waited for in full: an emitter should not sleep for hours.
_MAX_RETRY_AFTER_SECONDS: Final = 30.0
_READ_BYTES: Final = 64 * 1024
_PROGRESS_INTERVAL_SECONDS: Final = 0.5
_FILE_READ_HINT_BYTES: Final = 1 << 20

Event = dict[str, Any] | bytes  # generated dict, or one JSON line from --file


# --- arguments --------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `gravixd emit` options (the caller owns the parser and the subcommand)."""
    target = parser.add_argument_group("target")
    where = target.add_mutually_exclusive_group()
    where.add_argument(
        "--url",
        help="HTTP ingest base URL, e.g. http://127.0.0.1:8088 (the default target)",
    )
    where.add_argument("--tcp", metavar="HOST:PORT", help="raw TCP listener, e.g. 127.0.0.1:5170")
    target.add_argument(
        "--stream",
        choices=("facts", "events"),
        default="facts",
        help="what to send: request facts or service events (default facts)",
    )
    target.add_argument(
        "--format",
        "--framing",
        dest="format",
        choices=("json", "ndjson", "protobuf"),
        help="wire form: HTTP json (default), ndjson, protobuf; TCP ndjson (default), protobuf",
    )
    target.add_argument("--gzip", action="store_true", help="gzip HTTP request bodies")
    target.add_argument(
        "--token",
        default=os.environ.get("GRAVIXD_EMIT_TOKEN", ""),
        help="bearer token for HTTP (default: $GRAVIXD_EMIT_TOKEN)",
    )

    load = parser.add_argument_group("load")
    load.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        default=100,
        help="events a request / TCP write (default 100)",
    )
    load.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        default=4,
        help="connections sending at once (default 4)",
    )
    load.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="EVENTS_PER_S",
        help="target events/s (default 0: as fast as possible)",
    )
    load.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop generating after this many seconds (default: no limit; see --count)",
    )
    load.add_argument(
        "--count",
        type=_positive_int,
        metavar="N",
        help="send this many events (default 10000 when neither --duration nor --file)",
    )
    load.add_argument(
        "--file", metavar="PATH", help="send ndjson events from this file ('-' = stdin)"
    )
    load.add_argument(
        "--seed", type=int, metavar="N", help="seed of the event generator (reproducible runs)"
    )
    load.add_argument(
        "--max-retries",
        type=int,
        default=5,
        metavar="N",
        help="retries of a 503/429 request (default 5)",
    )
    load.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=30.0,
        help="seconds for one request or TCP close (default 30)",
    )

    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the report as one JSON object")
    out.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress line on stderr (auto: when stderr is a terminal)",
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"Expected an integer >= 1, got {text}")
    return value


@dataclass(frozen=True)
class Plan:
    """Validated options: where to send what, how fast, and for how long."""

    transport: str  # "http" or "tcp"
    host: str
    port: int
    target: str  # HTTP request target, "" for TCP
    tls: bool
    stream: str
    wire_format: str
    gzip: bool
    token: str
    batch_size: int
    concurrency: int
    rate: float
    duration_seconds: float | None
    count: int | None
    file: str | None
    seed: int | None
    max_retries: int
    timeout_seconds: float

    @property
    def display_target(self) -> str:
        if self.transport == "tcp":
            return f"tcp://{self.host}:{self.port}"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}{self.target}"


def plan_from_args(args: argparse.Namespace) -> Plan:
    """Check option combinations; raises ValueError naming the option."""
    if args.tcp:
        host, port = parse_listen(args.tcp)
        transport, target, tls = "tcp", "", False
        wire_format = args.format or "ndjson"
        if wire_format == "json":
            raise ValueError("--framing: Expected `ndjson` or `protobuf` over TCP, got `json`")
        if args.gzip:
            raise ValueError("--gzip: raw TCP has no content encoding; use HTTP")
    else:
        transport = "http"
        host, port, target, tls = _parse_url(args.url or "http://127.0.0.1:8088", args.stream)
        wire_format = args.format or "json"
    if args.rate < 0 or not math.isfinite(args.rate):
        raise ValueError(f"--rate: Expected events/s >= 0, got {args.rate}")
    if args.duration is not None and not args.duration > 0:
        raise ValueError(f"--duration: Expected seconds > 0, got {args.duration}")
    if args.max_retries < 0:
        raise ValueError(f"--max-retries: Expected >= 0, got {args.max_retries}")
    count = args.count
    if count is None and args.duration is None and args.file is None:
        count = 10_000
    return Plan(
        transport=transport,
        host=host,
        port=port,
        target=target,
        tls=tls,
        stream=args.stream,
        wire_format=wire_format,
        gzip=args.gzip,
        token=args.token,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        rate=args.rate,
        duration_seconds=args.duration,
        count=count,
        file=args.file,
        seed=args.seed,
        max_retries=args.max_retries,
        timeout_seconds=args.timeout,
    )


def _parse_url(url: str, stream: str) -> tuple[str, int, str, bool]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url: Expected http://HOST[:PORT][/PATH] or https://..., got `{url}`")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = parts.path.rstrip("/")
    if not path.endswith(("/v1/facts", "/v1/events")):
        path = f"{path}/v1/{stream}"
    return parts.hostname, port, path, tls


# --- results -----------------------------------------------------------------------------------


@dataclass
class Stats:
    """What happened, updated by every worker (one trio thread: no locks needed)."""

    sent: int = 0  # events handed to the wire
    acknowledged: int = 0  # events a 202 acknowledged
    failed: int = 0  # events whose request failed for good, or that could not be sent
    not_sent: int = 0  # of `failed`: never handed to the wire (no connection, unencodable)
    requests_ok: int = 0
    requests_failed: int = 0
    retries: int = 0
    status_codes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # first words of each error, counted
    latencies_seconds: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    def error(self, text: str) -> None:
        key = text if len(text) <= 200 else text[:197] + "..."
        self.errors[key] = self.errors.get(key, 0) + 1

    @property
    def elapsed_seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def report(plan: Plan, stats: Stats) -> dict[str, Any]:
    """The report as a JSON-ready dict (`--json` prints exactly this)."""
    latencies = sorted(stats.latencies_seconds)
    elapsed = stats.elapsed_seconds
    # TCP: what was written and not lost with a broken connection (failed events that were
    # never sent are not subtracted from what was sent).
    lost_after_send = stats.failed - stats.not_sent
    delivered = stats.acknowledged if plan.transport == "http" else stats.sent - lost_after_send
    return {
        "target": plan.display_target,
        "transport": plan.transport,
        "stream": plan.stream,
        "format": plan.wire_format,
        "gzip": plan.gzip,
        "batch_size": plan.batch_size,
        "concurrency": plan.concurrency,
        "sent": stats.sent,
        # Raw TCP has no acknowledgement: null rather than a number that means something else.
        "acknowledged": stats.acknowledged if plan.transport == "http" else None,
        "failed": stats.failed,
        "requests_ok": stats.requests_ok,
        "requests_failed": stats.requests_failed,
        "retries": stats.retries,
        "status_codes": dict(sorted(stats.status_codes.items())),
        "errors": stats.errors,
        "elapsed_seconds": round(elapsed, 6),
        "events_per_second": round(delivered / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            name: round(percentile(latencies, q) * 1000, 3)
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0))
        },
    }


# Raw TCP has no reply channel: a line or frame gravixd refuses (wrong framing, wrong stream,
# a bad field) is still "sent" here, so the report says where refusals show instead.
TCP_UNSEEN_REJECTIONS: Final = (
    "note          raw TCP has no reply channel: events are counted as sent, not as accepted,",
    "              and lines or frames gravixd rejects cannot be seen here. Check",
    '              ingestion_events_rejected_total{source="tcp"} on gravixd\'s /metrics',
    "              (side port, 127.0.0.1:9108 by default) and its tcp_malformed_* log lines.",
)


def render_text(result: dict[str, Any]) -> str:
    lat = result["latency_ms"]
    unit = "requests" if result["transport"] == "http" else "writes"
    requests = result["requests_ok"] + result["requests_failed"]
    gz = ", gzip" if result["gzip"] else ""
    lines = [
        f"target        {result['target']} ({result['stream']}, {result['format']}{gz}, "
        f"batch {result['batch_size']}, concurrency {result['concurrency']})",
        f"sent          {result['sent']} events in {requests} {unit}",
        "acknowledged  "
        + (
            str(result["acknowledged"])
            if result["acknowledged"] is not None
            else "n/a (raw TCP has no acknowledgements)"
        ),
        f"failed        {result['failed']}",
        *([] if result["transport"] == "http" else TCP_UNSEEN_REJECTIONS),
        f"elapsed       {result['elapsed_seconds']:.3f} s, "
        f"{result['events_per_second']:.0f} events/s",
        f"latency       p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  "
        f"p99 {lat['p99']:.2f} ms  max {lat['max']:.2f} ms  (per {unit[:-1]})",
    ]
    if result["retries"]:
        lines.append(f"retries       {result['retries']}")
    if result["status_codes"]:
        codes = "  ".join(f"{code}: {n}" for code, n in result["status_codes"].items())
        lines.append(f"status codes  {codes}")
    for text, n in result["errors"].items():
        lines.append(f"error         {n} x {text}")
    return "\n".join(lines)


# --- what to send ----------------------------------------------------------------------------


class Source:
    """Hands out batches of events until the count, duration or file runs out."""

    def __init__(self, plan: Plan, file: IO[bytes] | None) -> None:
        self.plan = plan
        self.handed_out = 0
        self._pacer = Pacer(plan.rate)
        self._deadline = (
            trio.current_time() + plan.duration_seconds if plan.duration_seconds else None
        )
        self._generator = EventGenerator(plan.stream, plan.seed)
        self._file = file
        self._pending: list[bytes] = []
        self._file_done = file is None
        self._lock = trio.Lock()  # file reads await a thread; keep batches whole and in order
        self._line = 0

    async def next_batch(self) -> list[Event] | None:
        """The next batch for a worker, paced; None when the run is over."""
        size = self.plan.batch_size
        if self.plan.count is not None:
            size = min(size, self.plan.count - self.handed_out)
        if size <= 0:
            return None
        self.handed_out += size  # reserved before awaiting: other workers see it
        # Paced before the deadline check: a batch due after the deadline is not sent.
        await self._pacer.wait(size)
        if self._deadline is not None and trio.current_time() >= self._deadline:
            self.handed_out -= size
            return None
        if self._file is None:
            return list(self._generator.generate(size, time.time_ns()))
        async with self._lock:
            batch: list[Event] = list(await self._read_lines(size))
        self.handed_out -= size - len(batch)
        return batch or None

    async def _read_lines(self, size: int) -> list[bytes]:
        while len(self._pending) < size and not self._file_done:
            assert self._file is not None
            chunk = await trio.to_thread.run_sync(self._file.readlines, _FILE_READ_HINT_BYTES)
            if not chunk:
                self._file_done = True
                break
            for line in chunk:
                self._line += 1
                line = line.strip()
                if line:
                    self._pending.append(line)
        batch, self._pending = self._pending[:size], self._pending[size:]
        return batch


class Pacer:
    """Spaces batches so that events leave at `rate` per second (0: no pacing)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._start = trio.current_time()
        self._scheduled = 0

    async def wait(self, events: int) -> None:
        if self.rate <= 0:
            return
        due = self._start + self._scheduled / self.rate
        self._scheduled += events
        await trio.sleep_until(due)


# --- encoding ------------------------------------------------------------------------------------

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


def _json_lines(events: list[Event]) -> list[bytes]:
    return [e if isinstance(e, bytes) else _json_encoder.encode(e) for e in events]


def encode_body(stream: str, wire_format: str, events: list[Event]) -> bytes:
    """One HTTP request body of `events` in `wire_format`."""
    if wire_format == "json":
        return b"[" + b",".join(_json_lines(events)) + b"]"
    if wire_format == "ndjson":
        return b"\n".join(_json_lines(events)) + b"\n"
    return _protobuf_batch(stream, [_as_dict(e) for e in events])


def encode_tcp(stream: str, wire_format: str, events: list[Event]) -> bytes:
    """Bytes for a raw TCP listener: ndjson lines or varint-delimited messages."""
    if wire_format == "ndjson":
        return b"\n".join(_json_lines(events)) + b"\n"
    out = []
    for message in _protobuf_messages(stream, [_as_dict(e) for e in events]):
        data = message.SerializeToString()
        out.append(encode_varint(len(data)))
        out.append(data)
    return b"".join(out)


def _as_dict(event: Event) -> dict[str, Any]:
    if isinstance(event, bytes):
        value = _json_decoder.decode(event)
        if not isinstance(value, dict):
            raise ValueError(f"Expected a JSON object a line, got `{type(value).__name__}`")
        return value
    return event


def _protobuf_fields(event: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """proto3 field values of one JSON event. The JSON conveniences gravixd's JSON path
    takes (DESIGN.md section 2: null is the default, an RFC 3339 `timestamp`, severity names
    such as syslog's `warning`, decimal strings for 64-bit integers) are converted by the
    same functions, so a file sent as protobuf stores what it stores sent as JSON."""
    fields = {k: v for k, v in event.items() if k in known and v is not None}
    field = "timestamp_unix_nano"
    try:
        if field in fields:
            fields[field] = unix_nano_of(fields[field])
        if event.get("timestamp") is not None:
            field = "timestamp"
            if fields.get("timestamp_unix_nano"):
                raise FieldValueError("Expected `timestamp` or `timestamp_unix_nano`, got both")
            fields["timestamp_unix_nano"] = rfc3339_unix_nano(event["timestamp"])
        for field in ("bytes_in", "bytes_out"):
            if field in fields:
                fields[field] = int64_of(fields[field], 0)
        field = "severity"
        if field in fields:
            fields[field] = severity_of(fields[field])
    except FieldValueError as exc:
        raise ValueError(f"{exc.message} - at `{field}`") from None
    if isinstance(fields.get("status_code"), str):
        fields["status_code"] = int(fields["status_code"])
    return fields


def _protobuf_messages(stream: str, events: list[dict[str, Any]]) -> list[Any]:
    from .proto.gravix.v1 import events_pb2

    cls = events_pb2.RequestFact if stream == "facts" else events_pb2.ServiceEvent
    known = set(cls.DESCRIPTOR.fields_by_name)
    return [cls(**_protobuf_fields(event, known)) for event in events]


def _protobuf_batch(stream: str, events: list[dict[str, Any]]) -> bytes:
    from .proto.gravix.v1 import events_pb2

    messages = _protobuf_messages(stream, events)
    if stream == "facts":
        return bytes(events_pb2.RequestFactBatch(facts=messages).SerializeToString())
    return bytes(events_pb2.ServiceEventBatch(events=messages).SerializeToString())


# --- what went wrong, in the words of the person running emit ----------------------------

_ERRNO_WORDS: Final = {
    errno.ECONNREFUSED: "connection refused by {where} (is gravixd listening there?)",
    errno.ECONNRESET: "the server at {where} reset the connection",
    errno.EPIPE: "the server at {where} closed the connection",
    errno.ETIMEDOUT: "timed out connecting to {where}",
    errno.EHOSTUNREACH: "no route to {where}",
    errno.ENETUNREACH: "network unreachable for {where}",
}


def _root_os_error(exc: BaseException) -> OSError | None:
    """The OSError with an errno behind `exc`: trio's "all attempts to connect ... failed"
    carries the real one in an ExceptionGroup as its cause."""
    seen: list[BaseException] = [exc]
    while seen:
        current = seen.pop(0)
        if isinstance(current, OSError) and current.errno is not None:
            return current
        if isinstance(current, BaseExceptionGroup):
            seen.extend(current.exceptions)
        if current.__cause__ is not None:
            seen.append(current.__cause__)
    return None


def describe_error(exc: BaseException, host: str, port: int, timeout_seconds: float) -> str:
    """One line saying what happened (`connection refused by 127.0.0.1:1`), never a
    library's internals (h11 states, trio's exception groups)."""
    where = f"{host}:{port}"
    if isinstance(exc, ConnectionFailed):
        return str(exc)
    if isinstance(exc, trio.TooSlowError):
        return f"no answer from {where} within {timeout_seconds:g} s (--timeout)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {host}: {exc.strerror}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with {where} failed: {exc.reason or exc}"
    if isinstance(exc, trio.BrokenResourceError):
        root = _root_os_error(exc)
        if root is None:
            return f"the server at {where} closed the connection"
        exc = root
    if isinstance(exc, h11.RemoteProtocolError):
        return f"the server at {where} sent a response that is not valid HTTP: {exc}"
    root = _root_os_error(exc)
    if root is not None and root.errno in _ERRNO_WORDS:
        return _ERRNO_WORDS[root.errno].format(where=where)
    if root is not None:
        return f"{where}: {root.strerror or root}"
    return f"{where}: {exc}" if str(exc) else f"{where}: {type(exc).__name__}"


# --- HTTP --------------------------------------------------------------------------------


class ConnectionFailed(Exception):
    """The connection broke or the peer spoke bad HTTP before a whole response came; the
    message says so in the user's words."""


class ConnectFailed(ConnectionFailed):
    """No connection could be made: nothing of the request was sent."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class HttpConnection:
    """One keep-alive HTTP/1.1 client connection (h11 over a trio stream)."""

    def __init__(self, host: str, port: int, tls: bool, timeout_seconds: float = 30.0) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.timeout_seconds = timeout_seconds
        self._stream: trio.abc.Stream | None = None
        self._h11: h11.Connection | None = None

    async def _connect(self) -> tuple[trio.abc.Stream, h11.Connection]:
        if self.tls:
            stream: trio.abc.Stream = await trio.open_ssl_over_tcp_stream(
                self.host, self.port, ssl_context=ssl.create_default_context()
            )
        else:
            tcp = await trio.open_tcp_stream(self.host, self.port)
            tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = tcp
        self._stream, self._h11 = stream, h11.Connection(h11.CLIENT)
        return self._stream, self._h11

    async def post(self, target: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        """Send one POST and read its whole response; keeps the connection if HTTP allows."""
        if self._stream is None or self._h11 is None:
            try:
                stream, conn = await self._connect()
            except (OSError, trio.BrokenResourceError) as exc:
                await self.aclose()
                raise ConnectFailed(self._describe(exc)) from None
        else:
            stream, conn = self._stream, self._h11
        try:
            data = conn.send(h11.Request(method="POST", target=target, headers=headers))
            data = (data or b"") + (conn.send(h11.Data(data=body)) or b"")
            data += conn.send(h11.EndOfMessage()) or b""
            # The server may have answered (say 413) and closed: then read that answer.
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(data)
            response = await self._read_response(stream, conn)
        except ConnectionFailed:
            await self.aclose()
            raise
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            await self.aclose()
            raise ConnectionFailed(self._describe(exc)) from None
        except BaseException:
            await self.aclose()
            raise
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.aclose()
        return response

    def _describe(self, exc: BaseException) -> str:
        return describe_error(exc, self.host, self.port, self.timeout_seconds)

    async def _read_response(self, stream: trio.abc.Stream, conn: h11.Connection) -> Response:
        head: h11.Response | None = None
        chunks: list[bytes] = []
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                try:
                    received = await stream.receive_some(_READ_BYTES)
                except trio.BrokenResourceError:
                    received = b""
                if not received and head is None:
                    # Said here, not by h11 ("can't handle event type ConnectionClosed ...").
                    raise ConnectionFailed(
                        f"the server at {self.host}:{self.port} closed the connection before"
                        " answering (the events may or may not be stored)"
                    )
                conn.receive_data(bytes(received))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers}
                return Response(head.status_code, headers, b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionFailed(
                    f"the server at {self.host}:{self.port} closed the connection before"
                    " answering (the events may or may not be stored)"
                )
            # h11.InformationalResponse (100 Continue): wait for the final one.

    async def aclose(self) -> None:
        stream, self._stream, self._h11 = self._stream, None, None
        if stream is not None:
            await trio.aclose_forcefully(stream)


def retry_after_seconds(value: str | None, attempt: int, rng: random.Random) -> float:
    """How long to wait before retry number `attempt` (1-based): the server's Retry-After
    (seconds or an HTTP date) when given, else jittered exponential backoff from 50 ms."""
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                seconds = 1.0
        return min(max(seconds, 0.0), _MAX_RETRY_AFTER_SECONDS)
    backoff_seconds: float = min(0.05 * 2 ** (attempt - 1), 5.0)
    return backoff_seconds * rng.uniform(0.5, 1.5)


async def _http_worker(plan: Plan, source: Source, stats: Stats, rng: random.Random) -> None:
    connection = HttpConnection(plan.host, plan.port, plan.tls, plan.timeout_seconds)
    headers = [
        ("Host", f"{plan.host}:{plan.port}"),
        ("User-Agent", USER_AGENT),
        ("Content-Type", CONTENT_TYPES[plan.wire_format]),
    ]
    if plan.gzip:
        headers.append(("Content-Encoding", "gzip"))
    if plan.token:
        headers.append(("Authorization", f"Bearer {plan.token}"))
    try:
        while (events := await source.next_batch()) is not None:
            try:
                body = encode_body(plan.stream, plan.wire_format, events)
            except (ValueError, TypeError, msgspec.DecodeError) as exc:
                stats.failed += len(events)
                stats.not_sent += len(events)
                stats.error(f"could not encode a batch: {exc}")
                continue
            if plan.gzip:
                body = gzip.compress(body, compresslevel=6)
            request_headers = [*headers, ("Content-Length", str(len(body)))]
            stats.sent += len(events)
            await _post_with_retries(
                plan, connection, request_headers, body, len(events), stats, rng
            )
    finally:
        await connection.aclose()


async def _post_with_retries(
    plan: Plan,
    connection: HttpConnection,
    headers: list[tuple[str, str]],
    body: bytes,
    events: int,
    stats: Stats,
    rng: random.Random,
) -> None:
    attempt = 0
    while True:
        started = time.perf_counter()
        try:
            with trio.fail_after(plan.timeout_seconds):
                response = await connection.post(plan.target, headers, body)
        except (ConnectionFailed, OSError, trio.TooSlowError) as exc:
            # The outcome is unknown (the events may be durable): not retried, so that a
            # retry never duplicates; counted as failed. A failed connect sent nothing.
            await connection.aclose()
            stats.requests_failed += 1
            stats.failed += events
            if isinstance(exc, ConnectFailed):
                stats.sent -= events
                stats.not_sent += events
            stats.error(describe_error(exc, plan.host, plan.port, plan.timeout_seconds))
            return
        stats.latencies_seconds.append(time.perf_counter() - started)
        code = str(response.status)
        stats.status_codes[code] = stats.status_codes.get(code, 0) + 1
        if response.status == 202:
            stats.requests_ok += 1
            stats.acknowledged += _accepted_count(response.body, events)
            return
        if response.status in (429, 503) and attempt < plan.max_retries:
            attempt += 1
            stats.retries += 1
            await trio.sleep(retry_after_seconds(response.headers.get("retry-after"), attempt, rng))
            continue
        stats.requests_failed += 1
        stats.failed += events
        stats.error(f"{response.status}: {response.body[:300].decode('utf-8', 'replace')}")
        return


def _accepted_count(body: bytes, default: int) -> int:
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return default
    accepted = value.get("accepted") if isinstance(value, dict) else None
    return accepted if isinstance(accepted, int) else default


# --- TCP -----------------------------------------------------------------------------------


async def _tcp_worker(plan: Plan, source: Source, stats: Stats) -> None:
    try:
        stream = await trio.open_tcp_stream(plan.host, plan.port)
    except OSError as exc:
        stats.error(describe_error(exc, plan.host, plan.port, plan.timeout_seconds))
        # Count what this connection would have sent, so that the run still ends.
        while (events := await source.next_batch()) is not None:
            stats.failed += len(events)
            stats.not_sent += len(events)
        return
    in_flight: list[int] = []  # events written but not known to be read (no ack channel)
    async with stream:
        try:
            while (events := await source.next_batch()) is not None:
                try:
                    data = encode_tcp(plan.stream, plan.wire_format, events)
                except (ValueError, TypeError, msgspec.DecodeError) as exc:
                    stats.failed += len(events)
                    stats.not_sent += len(events)
                    stats.error(f"could not encode a batch: {exc}")
                    continue
                started = time.perf_counter()
                with trio.fail_after(plan.timeout_seconds):
                    await stream.send_all(data)
                stats.latencies_seconds.append(time.perf_counter() - started)
                stats.sent += len(events)
                stats.requests_ok += 1
                in_flight.append(len(events))
            # Half-close and wait for the server to close: it does so after ingesting all.
            with trio.fail_after(plan.timeout_seconds):
                await stream.send_eof()
                while await stream.receive_some(_READ_BYTES):
                    pass
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            # Whatever this connection sent may or may not have been read: count it failed.
            stats.requests_failed += 1
            stats.failed += sum(in_flight)
            stats.error(describe_error(exc, plan.host, plan.port, plan.timeout_seconds))


# --- running ---------------------------------------------------------------------------------


async def run(
    plan: Plan,
    stats: Stats,
    progress: Callable[[Stats], None] | None = None,
    file: IO[bytes] | None = None,
) -> None:
    """Send everything the plan says (events from `file` when given, else generated);
    `stats` is filled in as it goes."""
    source = Source(plan, file)
    rng = random.Random(plan.seed)
    stats.started = time.perf_counter()
    try:
        async with trio.open_nursery() as nursery:
            if progress is not None:
                nursery.start_soon(_progress_loop, stats, progress)
            async with trio.open_nursery() as workers:
                for _ in range(plan.concurrency):
                    if plan.transport == "http":
                        workers.start_soon(_http_worker, plan, source, stats, rng)
                    else:
                        workers.start_soon(_tcp_worker, plan, source, stats)
            nursery.cancel_scope.cancel()
    finally:
        stats.finished = time.perf_counter()


async def _progress_loop(stats: Stats, progress: Callable[[Stats], None]) -> None:
    while True:
        await trio.sleep(_PROGRESS_INTERVAL_SECONDS)
        progress(stats)


def _progress_line(plan: Plan) -> Callable[[Stats], None]:
    def show(stats: Stats) -> None:
        elapsed = stats.elapsed_seconds
        done = stats.acknowledged if plan.transport == "http" else stats.sent
        rate = done / elapsed if elapsed > 0 else 0.0
        recent = sorted(stats.latencies_seconds[-2000:])
        p99 = percentile(recent, 0.99) * 1000
        acked = f"acked {stats.acknowledged}  " if plan.transport == "http" else ""
        line = (
            f"\r{elapsed:6.1f} s  sent {stats.sent}  {acked}failed {stats.failed}  "
            f"{rate:,.0f} events/s  p99 {p99:.1f} ms "
        )
        sys.stderr.write(line)
        sys.stderr.flush()

    return show


def main(args: argparse.Namespace) -> int:
    """Run `gravixd emit`; exit 0 when nothing failed, 1 when some events failed, 2 on a
    usage error, 130 when interrupted (the partial report is still printed)."""
    try:
        plan = plan_from_args(args)
    except ValueError as exc:
        print(f"gravixd emit: {exc}", file=sys.stderr)
        return 2
    show_progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    progress = _progress_line(plan) if show_progress else None
    file: IO[bytes] | None = None
    if plan.file == "-":
        file = sys.stdin.buffer
    elif plan.file is not None:
        try:
            file = open(plan.file, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            print(f"gravixd emit: --file: {exc}", file=sys.stderr)
            return 2
    stats = Stats()
    interrupted = False
    try:
        trio.run(run, plan, stats, progress, file)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if file is not None and file is not sys.stdin.buffer:
            file.close()
    if progress is not None:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
    result = report(plan, stats)
    if args.json:
        print(msgspec.json.encode(result).decode())
    else:
        print(render_text(result))
    if interrupted:
        return 130
    return 1 if stats.failed else 0
