"""The HTTP ingest protocol, sans-I/O: bytes in, complete ingest requests and response bytes out.

`IngestProtocol` wraps h11 (server role) for parsing requests and adds gravixd's contract
(DESIGN.md section 2): routing, bearer auth, content type and encoding checks, the body
limit counted after gzip decompression, `Expect: 100-continue`, strict framing (RFC 9112),
HTTP/1.0 keep-alive, and error responses whose bodies say what was expected, what came and
where. It never touches a socket or a clock: the runtime feeds it `receive_data()` and acts
on what `next_event()` returns, so every case is testable whole and byte by byte.

Work is sliced: one `next_event()` call does a bounded amount of it (h11 events, inflated
bytes) and returns `PROGRESS` when there is more, so the runtime can account the memory
and let other connections run. No single connection may hold the event loop long.

Responses are serialized here, not by h11: our responses are all of one shape (a JSON body
with Content-Length), and h11's generic writer cost ~30 us of the ~60 us a small request
took in h11. Each request cycle gets a fresh `h11.Connection` fed the previous one's
unparsed bytes (h11's documented `trailing_data` hand-over), which is also what lets an
HTTP/1.0 client keep its connection: h11 closes every HTTP/1.0 connection.
"""

from __future__ import annotations

import hmac
import urllib.parse
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final, cast

import h11
import msgspec

from . import otlp
from .decode import CONTENT_TYPES

# The routing table: path -> the stream it lands in. /v1/traces and /v1/logs speak
# OTLP/HTTP (core/otlp.py).
ENDPOINTS: Final[dict[bytes, str]] = {
    b"/v1/facts": "facts",
    b"/v1/events": "events",
    **{path.encode(): signal.stream for path, signal in otlp.SIGNALS.items()},
}
# Content types by path, where they differ from gravixd's own (OTLP has no NDJSON).
_ENDPOINT_CONTENT_TYPES: Final = {path.encode(): otlp.CONTENT_TYPES for path in otlp.SIGNALS}
# Bounded label value for metrics: requests to any other path count as "other".
OTHER_ENDPOINT: Final = "other"

# 16 KiB, as nginx/node/tomcat: enough for any real client's headers, small enough that a
# header flood costs little memory. Oversized headers get h11's 431 hint.
DEFAULT_MAX_HEADER_BYTES: Final = 16 * 1024

# One next_event() call handles at most this many h11 events (~6 us each) or this many body
# bytes (inflating 256 KiB takes ~0.3 ms) before returning PROGRESS: about a millisecond of
# event-loop time, whatever the client sends.
STEP_EVENTS: Final = 128
STEP_BYTES: Final = 256 * 1024

# Chunked framing: h11 spends ~6 us per chunk whatever its size, so a body of 2-byte chunks
# costs ~400x the CPU of the same bytes in one piece (and was an easy way to starve every
# other connection). A chunked body may have FREE_CHUNKS chunks, then must average at least
# MIN_AVERAGE_CHUNK_BYTES of data a chunk: an 8 MiB body is then at most ~32k chunks
# (~0.2 s of parsing, sliced), framing overhead is at most ~3% of the wire, and what real
# clients stream (a buffer or a log line per chunk) passes.
FREE_CHUNKS: Final = 16
MIN_AVERAGE_CHUNK_BYTES: Final = 256

# Bytes of unparsed input handed to h11 at once between requests. A fresh h11 connection
# per request takes over what the last one had not parsed (a copy), so pipelined requests
# cost at most this much copying each; a body is handed over whole.
_HEAD_FEED_BYTES: Final = 16 * 1024

# Body pieces smaller than this are gathered before being kept (see _Body).
_SMALL_PIECE_BYTES: Final = 64 * 1024

_SUPPORTED_VERSIONS: Final = (b"1.1", b"1.0")
_REASON_PHRASES: Final = {s.value: s.phrase.encode() for s in HTTPStatus}
_SERVER_HEADER: Final = b"server: gravixd\r\n"
_JSON_CONTENT_TYPE: Final = b"application/json"
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_encode_json = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES


class BearerTokens:
    """The accepted bearer tokens, one holder shared by every connection: `replace()` (a
    reload) takes effect at every connection's next request, keep-alive ones included."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: Iterable[str | bytes] = ()) -> None:
        self._tokens: tuple[bytes, ...] = ()
        self.replace(tokens)

    def replace(self, tokens: Iterable[str | bytes]) -> None:
        self._tokens = tuple(t.encode() if isinstance(t, str) else t for t in tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def matches(self, token: bytes) -> bool:
        # Compare against every token without an early exit: timing says nothing of which
        # token (or how much of one) matched.
        matched = False
        for candidate in self._tokens:
            matched |= hmac.compare_digest(candidate, token)
        return matched


# --- what next_event() returns -----------------------------------------------------------------


def error_body(status: int, reason: str, message: str) -> dict[str, object]:
    """The JSON body of every error response: the message, a bounded reason, the status."""
    return {"error": message, "reason": reason, "status": status}


class NeedData:
    """Feed more bytes (or b"" at EOF) with receive_data()."""


NEED_DATA: Final = NeedData()


class Progress:
    """Some work was done and more is ready: account `held_bytes`, let others run, then
    call next_event() again."""


PROGRESS: Final = Progress()


@dataclass(frozen=True, slots=True)
class SendInterim:
    """Bytes to send now (a 100 Continue); the request goes on."""

    data: bytes


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """The protocol rejected a request by itself: send `data`, close afterwards if `close`."""

    endpoint: str
    status: int
    reason: str
    message: str
    data: bytes
    close: bool


@dataclass(frozen=True, slots=True)
class IngestRequest:
    """A complete, authorized request with its body decompressed and within limits."""

    endpoint: str
    stream: str
    media_type: str
    body: bytes
    wire_bytes: int
    decompressed_bytes: int = 0  # len(body) when gzip inflated it, else 0 (see below)
    invalid_events: str | None = None  # `?invalid=skip|reject`; None: the configured one


@dataclass(frozen=True, slots=True)
class RawBody:
    """A response body already encoded, for `respond` (OTLP answers in protobuf or JSON)."""

    content_type: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is finished (peer closed, or a response closed it)."""


CLOSED: Final = Closed()

Event = NeedData | Progress | SendInterim | ErrorResponse | IngestRequest | Closed
Header = tuple[bytes, bytes]


class _RejectRequest(Exception):
    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        headers: Iterable[Header] = (),
        *,
        close: bool = False,
    ) -> None:
        self.status, self.reason, self.message, self.headers = status, reason, message, headers
        self.close = close  # framing can't be trusted: never read another request


@dataclass(slots=True)
class _Body:
    """Accumulates one request body, decompressing gzip in slices while counting the limit."""

    limit_bytes: int
    gzip: bool
    # Big pieces are kept as they come and joined once at the end (one copy); small ones
    # are gathered in `_small` first, so a body trickled in tiny pieces costs no more than
    # its bytes.
    _pieces: list[bytes | bytearray] = field(default_factory=list)
    _small: bytearray = field(default_factory=bytearray)
    size_bytes: int = 0
    wire_bytes: int = 0
    chunks: int = 0
    _tail: bytes = b""  # compressed input not inflated yet
    _inflater: zlib._Decompress | None = None

    @property
    def pending(self) -> bool:
        return bool(self._tail)

    def feed(self, data: bytes, chunk_start: bool) -> None:
        """Wire bytes of the body; gzip input waits for inflate() (the caller drives it)."""
        self.wire_bytes += len(data)
        if chunk_start:
            self.chunks += 1
            if self.chunks > FREE_CHUNKS + self.wire_bytes // MIN_AVERAGE_CHUNK_BYTES:
                raise _RejectRequest(
                    400,
                    "chunks_too_small",
                    f"Expected chunks of {MIN_AVERAGE_CHUNK_BYTES} bytes on average, got "
                    f"{self.chunks} chunks for {self.wire_bytes} bytes",
                    close=True,
                )
        if self.gzip:
            self._tail = bytes(data) if not self._tail else self._tail + data
        else:
            self._append(data)

    def inflate(self, max_bytes: int) -> int:
        """Inflate pending input until about `max_bytes` came out; returns how many did."""
        produced = 0
        data = self._tail
        while data and produced < max_bytes:
            if self._inflater is None:
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            inflater = self._inflater
            room = min(max_bytes - produced, self.limit_bytes - self.size_bytes + 1)
            try:
                # max_length caps what one call may inflate: a gzip bomb costs at most the
                # limit in memory, never its full expansion.
                out = inflater.decompress(data, room)
            except zlib.error as exc:
                raise _RejectRequest(
                    400,
                    "invalid_gzip",
                    f"Expected a gzip body, got bytes that do not inflate ({exc})",
                ) from None
            self._append(out)
            produced += len(out)
            data = inflater.unconsumed_tail
            if inflater.eof:
                # Concatenated gzip members are one valid gzip stream (RFC 1952).
                data = inflater.unused_data + data
                self._inflater = None
        self._tail = data
        return produced

    def _append(self, data: bytes | bytearray) -> None:
        self.size_bytes += len(data)
        if self.size_bytes > self.limit_bytes:
            raise _RejectRequest(
                413,
                "too_large",
                f"Expected a body of at most {self.limit_bytes} bytes (after decompression), "
                f"got more",
            )
        if len(data) >= _SMALL_PIECE_BYTES:
            if self._small:
                self._pieces.append(self._small)
                self._small = bytearray()
            self._pieces.append(data)
        else:
            self._small += data
            if len(self._small) >= _SMALL_PIECE_BYTES:
                self._pieces.append(self._small)
                self._small = bytearray()

    def finish(self) -> bytes:
        if self._inflater is not None:
            raise _RejectRequest(
                400,
                "invalid_gzip",
                f"Expected a complete gzip stream, got one truncated after {self.wire_bytes} bytes",
            )
        pieces, self._pieces = self._pieces, []
        if self._small:
            pieces.append(self._small)
            self._small = bytearray()
        return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)


class IngestProtocol:
    """One HTTP/1.1 (or 1.0) connection's ingest logic.

    Args:
        limits: body and header size limits.
        auth: accepted bearer tokens (a shared holder, or tokens); none means no auth.
    """

    def __init__(self, limits: HttpLimits, auth: BearerTokens | Iterable[str | bytes] = ()) -> None:
        self.limits = limits
        self.auth = auth if isinstance(auth, BearerTokens) else BearerTokens(auth)
        self._conn = self._new_h11()
        self._input = memoryview(b"")  # received, not handed to h11 yet
        self._eof = False  # the peer closed its side
        self._finished = False  # a response closed the connection
        self._request: h11.Request | None = None
        self._endpoint = OTHER_ENDPOINT
        self._stream = ""
        self._media_type = ""
        self._invalid_events: str | None = None
        self._keep_alive = True
        self._http10 = False
        self._body: _Body | None = None

    def _new_h11(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)

    # --- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; b"" means the peer closed its side."""
        if not data:
            self._eof = True
        elif self._input:
            self._input = memoryview(bytes(self._input) + data)
        elif len(data) <= _HEAD_FEED_BYTES or self._conn.their_state is h11.SEND_BODY:
            self._conn.receive_data(data)  # what _next_h11_event would hand over at once
        else:
            self._input = memoryview(data)

    # --- output ----------------------------------------------------------------------------

    def next_event(self) -> Event:
        """Advance the protocol by at most one slice of work; call again after acting on
        anything but NeedData/Closed."""
        if self._finished:
            return CLOSED
        events = produced = 0
        while True:
            body = self._body
            try:
                if body is not None and body.pending:
                    produced += body.inflate(STEP_BYTES - produced)
                    if body.pending:
                        return PROGRESS
                if events >= STEP_EVENTS or produced >= STEP_BYTES:
                    return PROGRESS
                try:
                    event = self._next_h11_event()
                except h11.RemoteProtocolError as exc:
                    return self._protocol_error(exc)
                events += 1
                kind = type(event)
                if kind is h11.Data:
                    assert body is not None
                    data = cast(h11.Data, event).data
                    body.feed(data, cast(h11.Data, event).chunk_start)
                    produced += len(data)
                elif kind is h11.Request:
                    interim = self._start_request(event)  # type: ignore[arg-type]
                    if interim is not None:
                        return interim
                elif kind is h11.EndOfMessage:
                    assert body is not None
                    data = body.finish()
                    self._body = None
                    return IngestRequest(
                        self._endpoint,
                        self._stream,
                        self._media_type,
                        data,
                        body.wire_bytes,
                        len(data) if body.gzip else 0,
                        self._invalid_events,
                    )
                elif event is h11.NEED_DATA:
                    return NEED_DATA
                elif kind is h11.ConnectionClosed or event is h11.PAUSED:
                    return CLOSED
            except _RejectRequest as reject:
                return self._reject(reject)

    def respond(self, status: int, payload: object, headers: Iterable[Header] = ()) -> bytes:
        """Serialize the response to the current request; prepares the next cycle.
        `payload` is encoded as JSON, unless it is a `RawBody`."""
        if isinstance(payload, RawBody):
            body, content_type = payload.data, payload.content_type
        else:
            body, content_type = _encode_json(payload), _JSON_CONTENT_TYPE
        close = not self._keep_alive or self._conn.their_state not in (h11.DONE, h11.MUST_CLOSE)
        head = [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASON_PHRASES.get(status, b"")),
            _SERVER_HEADER,
            b"content-type: %s\r\ncontent-length: %d\r\n" % (content_type, len(body)),
        ]
        for name, value in headers:
            if name == b"connection" and value == b"close":
                close = True
                continue
            head.append(b"%s: %s\r\n" % (name, value))
        if close:
            head.append(b"connection: close\r\n")
        elif self._http10:
            head.append(b"connection: keep-alive\r\n")
        head.append(b"\r\n")
        head.append(body)
        self._request = None
        self._endpoint = OTHER_ENDPOINT
        self._body = None
        if close:
            self._finished = True
        else:
            self._next_cycle()
        return b"".join(head)

    def reject_now(
        self, status: int, reason: str, message: str, headers: Iterable[Header] = ()
    ) -> Event:
        """Answer the current request with an error before its end (a timeout, a full
        in-flight budget); the connection closes afterwards. Closed when nothing can be sent."""
        if self._request is None or self._finished:
            return CLOSED  # no request head parsed yet: nothing to answer
        return self._reject(_RejectRequest(status, reason, message, headers, close=True))

    @property
    def request_started(self) -> bool:
        """A request head has been parsed and its response not yet sent."""
        return self._request is not None

    @property
    def must_close(self) -> bool:
        """After a response: the connection cannot carry another request."""
        return self._finished

    @property
    def endpoint(self) -> str:
        """The current request's path, OTHER_ENDPOINT when none (or an unknown one)."""
        return self._endpoint

    @property
    def media_type(self) -> str:
        """The current request's Content-Type, once its head was accepted."""
        return self._media_type

    @property
    def body_bytes(self) -> int:
        """The current request's body so far (inflated, for gzip)."""
        body = self._body
        return body.size_bytes if body is not None else 0

    @property
    def decompressed_bytes(self) -> int:
        """Bytes the current request's body grew to by inflating gzip (0 for identity bodies,
        whose bytes are the wire bytes the runtime counts already)."""
        body = self._body
        return body.size_bytes if body is not None and body.gzip else 0

    # --- internals -------------------------------------------------------------------------

    def _next_h11_event(self) -> object:
        conn = self._conn
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self._input:
                # Between requests hand over a bounded piece (see _HEAD_FEED_BYTES); within
                # a body, all of it.
                n = _HEAD_FEED_BYTES if conn.their_state is h11.IDLE else len(self._input)
                conn.receive_data(self._input[:n])  # type: ignore[arg-type] # any bytes-like
                self._input = self._input[n:]
            elif self._eof and conn.their_state is not h11.ERROR:
                self._eof = False
                conn.receive_data(b"")
            else:
                return event

    def _next_cycle(self) -> None:
        data, closed = self._conn.trailing_data
        self._conn = self._new_h11()
        if data:
            self._input = memoryview(data + bytes(self._input)) if self._input else memoryview(data)
        if closed:
            self._eof = True

    def _start_request(self, request: h11.Request) -> SendInterim | None:
        self._request = request
        headers: dict[bytes, bytes] = {}  # names lower case (h11 lowercases them)
        repeated: list[bytes] = []
        header_bytes = 0
        # h11's Headers iterates through a Python __getitem__ per header; its list of
        # (raw name, name, value) is several times faster to walk.
        full_items = getattr(request.headers, "_full_items", None)
        for _, name, value in full_items or ((n, n, v) for n, v in request.headers):
            if name in headers:
                repeated.append(name)
            headers[name] = value
            header_bytes += len(name) + len(value) + 4
        connection = {t.strip() for t in headers.get(b"connection", b"").lower().split(b",")}
        version = request.http_version
        # RFC 9112 section 9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only on request.
        self._http10 = version == b"1.0"
        self._keep_alive = b"close" not in connection and (
            not self._http10 or b"keep-alive" in connection
        )
        if version not in _SUPPORTED_VERSIONS:
            raise _RejectRequest(
                505,
                "http_version_not_supported",
                f"Expected HTTP/1.1 or HTTP/1.0, got HTTP/{_s(version)}",
                close=True,
            )
        path, _, query = request.target.partition(b"?")
        stream = ENDPOINTS.get(path)
        if stream is None:
            paths = ", ".join(p.decode() for p in ENDPOINTS)
            raise _RejectRequest(404, "not_found", f"Expected POST to {paths}, got {_s(path)}")
        self._endpoint, self._stream = path.decode(), stream
        self._invalid_events = _invalid_events(query)
        if header_bytes > self.limits.max_header_bytes:
            raise _RejectRequest(
                431,
                "headers_too_large",
                f"Expected at most {self.limits.max_header_bytes} bytes of headers, "
                f"got {header_bytes}",
            )
        if b"transfer-encoding" in headers and b"content-length" in headers:
            # RFC 9112 section 6.1: a request with both is a smuggling attempt (a proxy in
            # front may have framed it by the other one); reject and never reuse the
            # connection.
            raise _RejectRequest(
                400,
                "ambiguous_framing",
                "Expected Content-Length or Transfer-Encoding, got both",
                close=True,
            )
        if b"authorization" in repeated:
            raise _RejectRequest(
                400,
                "duplicate_header",
                "Expected one Authorization header, got several",
            )
        if request.method != b"POST":
            raise _RejectRequest(
                405,
                "method_not_allowed",
                f"Expected method POST, got {_s(request.method)}",
                [(b"allow", b"POST")],
            )
        expect = headers.get(b"expect")
        if expect is not None and expect.strip().lower() != b"100-continue":
            raise _RejectRequest(
                417, "expectation_failed", f"Expected Expect: 100-continue, got {_s(expect)}"
            )
        if len(self.auth):
            self._check_token(headers.get(b"authorization", b""))
        self._check_body_headers(headers, _ENDPOINT_CONTENT_TYPES.get(path, CONTENT_TYPES))
        if self._conn.they_are_waiting_for_100_continue:
            return SendInterim(_CONTINUE)
        return None

    def _check_body_headers(
        self, headers: Mapping[bytes, bytes], content_types: frozenset[str]
    ) -> None:
        self._media_type = _media_type(headers.get(b"content-type", b""))
        if self._media_type not in content_types:
            expected = ", ".join(sorted(content_types))
            got = _s(headers.get(b"content-type", b"(none)"))
            raise _RejectRequest(
                415, "unsupported_media_type", f"Expected Content-Type {expected}, got {got}"
            )
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"identity", b"gzip", b"x-gzip"):
            raise _RejectRequest(
                415,
                "unsupported_encoding",
                f"Expected Content-Encoding identity or gzip, got {_s(encoding)}",
            )
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            raise _RejectRequest(
                411, "length_required", "Expected Content-Length or chunked body, got neither"
            )
        # A compressed body can't shrink when inflated by much, so the wire limit is the
        # decompressed one; checking it up front spares reading a body we would refuse.
        if length is not None and int(length) > self.limits.max_body_bytes:
            raise _RejectRequest(
                413,
                "too_large",
                f"Expected a body of at most {self.limits.max_body_bytes} bytes, "
                f"got Content-Length {int(length)}",
            )
        self._body = _Body(self.limits.max_body_bytes, encoding != b"identity")

    def _check_token(self, authorization: bytes) -> None:
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        matched = self.auth.matches(token)
        if scheme.lower() != b"bearer" or not token or not matched:
            got = "no Authorization header" if not authorization else "a token that does not match"
            raise _RejectRequest(
                401,
                "unauthorized",
                f"Expected Authorization: Bearer <token>, got {got}",
                [(b"www-authenticate", b'Bearer realm="gravixd"')],
            )

    def _reject(self, reject: _RejectRequest) -> ErrorResponse:
        # Answer before (all of) the body was read: the rest of it would be parsed as the next
        # request, so the connection closes after the response.
        if not reject.close:
            self._drain_buffered_body()
        headers = list(reject.headers)
        if reject.close:
            headers.append((b"connection", b"close"))
        endpoint = self._endpoint
        body: object = error_body(reject.status, reject.reason, reject.message)
        if endpoint in otlp.SIGNALS and self._request is not None:
            # OTLP clients read a google.rpc.Status from every 4xx/5xx body.
            request_type = _media_type(dict(self._request.headers).get(b"content-type", b""))
            body = otlp_error_body(request_type, reject.status, reject.message)
        data = self.respond(reject.status, body, headers)
        return ErrorResponse(
            endpoint, reject.status, reject.reason, reject.message, data, close=self._finished
        )

    def _drain_buffered_body(self) -> None:
        """Consume what is already buffered of a rejected request's body (often all of it:
        an empty GET, a small POST), so that the connection can stay open. Bounded: what
        takes longer than a slice closes the connection instead."""
        for _ in range(STEP_EVENTS):
            if self._conn.their_state is not h11.SEND_BODY:
                return
            try:
                event = self._next_h11_event()
            except h11.RemoteProtocolError:
                return
            if not isinstance(event, h11.Data | h11.EndOfMessage):
                return

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> Event:
        status = exc.error_status_hint
        reason = "headers_too_large" if status == 431 else "bad_request"
        message = f"Expected an HTTP/1.1 request, got a malformed one ({exc})"
        endpoint = self._endpoint if self._request is not None else OTHER_ENDPOINT
        self._keep_alive = False
        data = self.respond(status, error_body(status, reason, message))
        return ErrorResponse(endpoint, status, reason, message, data, close=True)


def otlp_error_body(media_type: str, status: int, message: str) -> RawBody:
    """An OTLP error answer: a google.rpc.Status, in JSON for a JSON request, else protobuf."""
    return RawBody(
        otlp.response_content_type(media_type), otlp.encode_status(media_type, status, message)
    )


def _media_type(content_type: bytes) -> str:
    return content_type.split(b";", 1)[0].strip().lower().decode("latin-1")


def _invalid_events(query: bytes) -> str | None:
    """`invalid=skip` or `invalid=reject` in a query string (DESIGN.md section 2); other
    parameters are ignored, as unknown JSON keys are. The query is decoded as a URL's
    (`%69nvalid=skip` is `invalid=skip`, `+` a space); a parameter given twice with
    different values is refused rather than guessed at."""
    values = {
        value
        for name, value in urllib.parse.parse_qsl(
            query.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace"
        )
        if name == "invalid"
    }
    if len(values) > 1:
        got = " and ".join(f"invalid={v[:32]!r}" for v in sorted(values))
        raise _RejectRequest(
            400, "bad_query", f"Expected one value for query parameter invalid, got {got}"
        )
    if not values:
        return None
    [value] = values
    if value not in ("skip", "reject"):
        raise _RejectRequest(
            400,
            "bad_query",
            f"Expected invalid=skip or invalid=reject, got {('invalid=' + value)[:128]!r}",
        )
    return value


def _s(value: bytes) -> str:
    """A header value or path for an error message, bounded so echoing it costs little."""
    text = value[:128].decode("latin-1")
    return repr(text) + ("..." if len(value) > 128 else "")
