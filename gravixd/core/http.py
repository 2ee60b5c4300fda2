"""The HTTP ingest protocol, sans-I/O: bytes in, complete ingest requests and response bytes out.

`IngestProtocol` wraps one `h11.Connection` (server role) and adds gravixd's contract
(DESIGN.md section 2): routing, bearer auth, content type and encoding checks, the body
limit counted after gzip decompression, `Expect: 100-continue`, and error responses whose
bodies say what was expected, what came and where. It never touches a socket or a clock:
the runtime feeds it `receive_data()` and acts on what `next_event()` returns, so every case
is testable whole and byte by byte.
"""

from __future__ import annotations

import hmac
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import h11
import msgspec

from . import otlp
from .decode import CONTENT_TYPES

# path -> the stream it lands in. /v1/traces and /v1/logs speak OTLP/HTTP (core/otlp.py).
ENDPOINTS: Final = {
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

_SERVER_HEADER: Final = (b"server", b"gravixd")
_JSON_HEADER: Final = (b"content-type", b"application/json")
_encode_json = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_body_bytes: int = 8 * 1024 * 1024
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES


# --- what next_event() returns -----------------------------------------------------------------


def error_body(status: int, reason: str, message: str) -> dict[str, object]:
    """The JSON body of every error response: the message, a bounded reason, the status."""
    return {"error": message, "reason": reason, "status": status}


class NeedData:
    """Feed more bytes (or b"" at EOF) with receive_data()."""


NEED_DATA: Final = NeedData()


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


@dataclass(frozen=True, slots=True)
class RawBody:
    """A response body already encoded, for `respond` (OTLP answers in protobuf or JSON)."""

    content_type: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is finished (peer closed, or a response said `Connection: close`)."""


CLOSED: Final = Closed()

Event = NeedData | SendInterim | ErrorResponse | IngestRequest | Closed
Header = tuple[bytes, bytes]


class _RejectRequest(Exception):
    def __init__(
        self, status: int, reason: str, message: str, headers: Iterable[Header] = ()
    ) -> None:
        self.status, self.reason, self.message, self.headers = status, reason, message, headers


@dataclass(slots=True)
class _Body:
    """Accumulates one request body, decompressing gzip while counting the limit."""

    limit_bytes: int
    gzip: bool
    chunks: list[bytes] = field(default_factory=list)
    size_bytes: int = 0
    wire_bytes: int = 0
    _inflater: zlib._Decompress | None = None

    def feed(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        if not self.gzip:
            self._append(data)
            return
        while data:
            if self._inflater is None:
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            inflater = self._inflater
            try:
                # max_length caps what one call may inflate: a gzip bomb costs at most the
                # limit in memory, never its full expansion.
                out = inflater.decompress(data, self.limit_bytes - self.size_bytes + 1)
            except zlib.error as exc:
                raise _RejectRequest(
                    400,
                    "invalid_gzip",
                    f"Expected a gzip body, got bytes that do not inflate ({exc})",
                ) from None
            self._append(out)
            data = inflater.unconsumed_tail
            if inflater.eof:
                # Concatenated gzip members are one valid gzip stream (RFC 1952).
                data = inflater.unused_data + data
                self._inflater = None

    def _append(self, data: bytes) -> None:
        self.size_bytes += len(data)
        if self.size_bytes > self.limit_bytes:
            raise _RejectRequest(
                413,
                "too_large",
                f"Expected a body of at most {self.limit_bytes} bytes (after decompression), "
                f"got more",
            )
        if data:
            self.chunks.append(data)

    def finish(self) -> bytes:
        if self._inflater is not None:
            raise _RejectRequest(
                400,
                "invalid_gzip",
                f"Expected a complete gzip stream, got one truncated after {self.wire_bytes} bytes",
            )
        if self.gzip and self.wire_bytes == 0:
            return b""
        return b"".join(self.chunks)


class IngestProtocol:
    """One HTTP/1.1 connection's ingest logic.

    Args:
        limits: body and header size limits.
        auth_tokens: accepted bearer tokens; empty means no auth.
    """

    def __init__(self, limits: HttpLimits, auth_tokens: Iterable[str] = ()) -> None:
        self.limits = limits
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.auth_tokens = tuple(auth_tokens)
        self._request: h11.Request | None = None
        self._endpoint = OTHER_ENDPOINT
        self._stream = ""
        self._media_type = ""
        self._body: _Body | None = None

    # --- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; b"" means the peer closed its side."""
        self._conn.receive_data(data)

    @property
    def auth_tokens(self) -> tuple[bytes, ...]:
        return self._tokens

    @auth_tokens.setter
    def auth_tokens(self, tokens: Iterable[str | bytes]) -> None:
        self._tokens = tuple(t.encode() if isinstance(t, str) else t for t in tokens)

    # --- output ----------------------------------------------------------------------------

    def next_event(self) -> Event:
        """Advance the protocol; call again after acting on anything but NeedData/Closed."""
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                return self._protocol_error(exc)
            try:
                result = self._handle(event)
            except _RejectRequest as reject:
                return self._reject(reject)
            if result is not None:
                return result

    def respond(self, status: int, payload: object, headers: Iterable[Header] = ()) -> bytes:
        """Serialize the response to the current request; prepares the next cycle.
        `payload` is encoded as JSON, unless it is a `RawBody`."""
        if isinstance(payload, RawBody):
            body, content_type = payload.data, (b"content-type", payload.content_type)
        else:
            body, content_type = _encode_json(payload), _JSON_HEADER
        response_headers = [_SERVER_HEADER, content_type, (b"content-length", b"%d" % len(body))]
        response_headers.extend(headers)
        data = self._conn.send(h11.Response(status_code=status, headers=response_headers))
        data += self._conn.send(h11.Data(data=body))
        data += self._conn.send(h11.EndOfMessage())
        self._reset_request()
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        return data

    def reject_now(
        self, status: int, reason: str, message: str, headers: Iterable[Header] = ()
    ) -> Event:
        """Answer the current request with an error before its end (a timeout, a full
        in-flight budget); the connection closes afterwards. Closed when nothing can be sent."""
        if self._conn.our_state is not h11.SEND_RESPONSE:
            return CLOSED  # no request head parsed yet: h11 has nothing to answer

        return self._reject(_RejectRequest(status, reason, message, headers))

    @property
    def request_started(self) -> bool:
        """A request head has been parsed and its response not yet sent."""
        return self._request is not None

    @property
    def must_close(self) -> bool:
        """After a response: the connection cannot carry another request."""
        return self._conn.our_state in (h11.MUST_CLOSE, h11.CLOSED) or (
            self._conn.our_state is h11.DONE and self._conn.their_state is not h11.DONE
        )

    # --- internals -------------------------------------------------------------------------

    def _handle(self, event: object) -> Event | None:
        if event is h11.NEED_DATA:
            return NEED_DATA
        if isinstance(event, h11.Request):
            return self._start_request(event)
        if isinstance(event, h11.Data):
            assert self._body is not None
            self._body.feed(event.data)
            return None
        if isinstance(event, h11.EndOfMessage):
            assert self._body is not None
            body = self._body.finish()
            return IngestRequest(
                self._endpoint, self._stream, self._media_type, body, self._body.wire_bytes
            )
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return CLOSED
        return None

    def _start_request(self, request: h11.Request) -> Event | None:
        self._request = request
        path = request.target.split(b"?", 1)[0]
        stream = ENDPOINTS.get(path)
        if stream is None:
            paths = ", ".join(p.decode() for p in ENDPOINTS)
            raise _RejectRequest(404, "not_found", f"Expected POST to {paths}, got {_s(path)}")
        self._endpoint, self._stream = path.decode(), stream
        header_bytes = sum(len(name) + len(value) + 4 for name, value in request.headers)
        if header_bytes > self.limits.max_header_bytes:
            raise _RejectRequest(
                431,
                "headers_too_large",
                f"Expected at most {self.limits.max_header_bytes} bytes of headers, "
                f"got {header_bytes}",
            )
        if request.method != b"POST":
            raise _RejectRequest(
                405,
                "method_not_allowed",
                f"Expected method POST, got {_s(request.method)}",
                [(b"allow", b"POST")],
            )
        headers = dict(request.headers)  # h11 lowercases names
        if self._tokens:
            self._check_token(headers.get(b"authorization", b""))
        self._media_type = _media_type(headers.get(b"content-type", b""))
        content_types = _ENDPOINT_CONTENT_TYPES.get(path, CONTENT_TYPES)
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
        gzip = encoding != b"identity"
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length is None and not chunked:
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
        self._body = _Body(self.limits.max_body_bytes, gzip)
        if self._conn.they_are_waiting_for_100_continue:
            data = self._conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            return SendInterim(data or b"")
        return None

    def _check_token(self, authorization: bytes) -> None:
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        # Compare against every token without an early exit: timing says nothing of which
        # token (or how much of one) matched.
        matched = False
        for candidate in self._tokens:
            matched |= hmac.compare_digest(candidate, token)
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
        self._drain_buffered_body()
        unread_body = self._conn.their_state is not h11.DONE
        headers = list(reject.headers)
        if unread_body:
            headers.append((b"connection", b"close"))
        endpoint = self._endpoint
        body: object = error_body(reject.status, reject.reason, reject.message)
        if endpoint in otlp.SIGNALS and self._request is not None:
            # OTLP clients read a google.rpc.Status from every 4xx/5xx body.
            request_type = _media_type(dict(self._request.headers).get(b"content-type", b""))
            body = otlp_error_body(request_type, reject.status, reject.message)
        data = self.respond(reject.status, body, headers)
        return ErrorResponse(
            endpoint,
            reject.status,
            reject.reason,
            reject.message,
            data,
            close=unread_body or self.must_close,
        )

    def _drain_buffered_body(self) -> None:
        """Consume what is already buffered of a rejected request's body (often all of it:
        an empty GET, a small POST), so that the connection can stay open."""
        while self._conn.their_state is h11.SEND_BODY:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError:
                return
            if not isinstance(event, h11.Data | h11.EndOfMessage):
                return

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> Event:
        if self._conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return CLOSED
        status = exc.error_status_hint
        reason = "headers_too_large" if status == 431 else "bad_request"
        message = f"Expected an HTTP/1.1 request, got a malformed one ({exc})"
        body = _encode_json(error_body(status, reason, message))
        headers = [
            _SERVER_HEADER,
            _JSON_HEADER,
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        try:
            data = self._conn.send(h11.Response(status_code=status, headers=headers))
            data += self._conn.send(h11.Data(data=body))
            data += self._conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return CLOSED
        endpoint = self._endpoint if self._request is not None else OTHER_ENDPOINT
        self._reset_request()
        return ErrorResponse(endpoint, status, reason, message, data, close=True)

    def _reset_request(self) -> None:
        self._request = None
        self._endpoint = OTHER_ENDPOINT
        self._body = None


def otlp_error_body(media_type: str, status: int, message: str) -> RawBody:
    """An OTLP error answer: a google.rpc.Status, in JSON for a JSON request, else protobuf."""
    return RawBody(
        otlp.response_content_type(media_type), otlp.encode_status(media_type, status, message)
    )


def _media_type(content_type: bytes) -> str:
    return content_type.split(b";", 1)[0].strip().lower().decode("latin-1")


def _s(value: bytes) -> str:
    """A header value or path for an error message, bounded so echoing it costs little."""
    text = value[:128].decode("latin-1")
    return repr(text) + ("..." if len(value) > 128 else "")
