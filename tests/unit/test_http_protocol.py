"""The sans-I/O HTTP ingest protocol, fed whole, byte by byte and pipelined."""

from __future__ import annotations

import gzip
import json
from http import HTTPStatus
from typing import Any

import pytest

from gravixd.core.http import (
    STEP_BYTES,
    STEP_EVENTS,
    BearerTokens,
    Closed,
    ErrorResponse,
    HttpLimits,
    IngestProtocol,
    IngestRequest,
    NeedData,
    Progress,
    SendInterim,
)

BODY = b'[{"service":"api","status_code":200}]'


def request(
    body: bytes = BODY,
    *,
    method: str = "POST",
    path: str = "/v1/facts",
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    chunk_bytes: int = 7,
) -> bytes:
    head = {"Host": "gravixd", "Content-Type": "application/json"}
    head.update(headers or {})
    if chunked:
        head["Transfer-Encoding"] = "chunked"
        payload = b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in _parts(body, chunk_bytes)
        )
        payload += b"0\r\n\r\n"
    else:
        head.setdefault("Content-Length", str(len(body)))
        payload = body
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items() if v is not None)
    return f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode() + payload


def _parts(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def run(
    data: bytes,
    *,
    step: int | None = None,
    limits: HttpLimits | None = None,
    tokens: tuple[str, ...] = (),
) -> list[tuple[Any, ...]]:
    """Feed `data` (in `step`-byte pieces), answer every request with 202, record events."""
    protocol = IngestProtocol(limits or HttpLimits(), tokens)
    seen: list[tuple[Any, ...]] = []
    pieces = _parts(data, step) if step else [data]
    for piece in [*pieces, b""]:
        protocol.receive_data(piece)
        while True:
            event = protocol.next_event()
            if isinstance(event, NeedData):
                break
            if isinstance(event, Progress):
                continue
            if isinstance(event, SendInterim):
                assert event.data.startswith(b"HTTP/1.1 100 ")
                seen.append(("continue",))
            elif isinstance(event, IngestRequest):
                seen.append(("request", event.stream, event.media_type, event.body))
                response = protocol.respond(202, {"accepted": 1})
                assert response.startswith(b"HTTP/1.1 202 Accepted\r\n")
            elif isinstance(event, ErrorResponse):
                status_line = event.data.split(b"\r\n", 1)[0]
                # Every status line carries its standard reason phrase (strict clients count
                # an empty one as a failure).
                assert status_line == b"HTTP/1.1 %d %s" % (
                    event.status,
                    HTTPStatus(event.status).phrase.encode(),
                )
                body = json.loads(event.data.split(b"\r\n\r\n", 1)[1])
                assert body == {
                    "error": event.message,
                    "reason": event.reason,
                    "status": event.status,
                }
                seen.append(("error", event.status, event.reason, event.close))
                if event.close:
                    return seen
            elif isinstance(event, Closed):
                seen.append(("closed",))
                return seen
    return seen


@pytest.mark.parametrize("step", [None, 1, 3, 64])
def test_requests_whole_and_byte_by_byte(step: int | None) -> None:
    ndjson = b'{"service":"a"}\n{"service":"b"}\n'
    data = (
        request()
        + request(ndjson, path="/v1/events", headers={"Content-Type": "application/x-ndjson"})
        + request(b"\x0a\x05\x12\x03api", headers={"Content-Type": "application/x-protobuf"})
    )
    assert run(data, step=step) == [
        ("request", "facts", "application/json", BODY),
        ("request", "events", "application/x-ndjson", ndjson),
        ("request", "facts", "application/x-protobuf", b"\x0a\x05\x12\x03api"),
        ("closed",),
    ]


@pytest.mark.parametrize("step", [None, 1, 5])
def test_chunked_and_gzip_bodies(step: int | None) -> None:
    compressed = gzip.compress(BODY)
    data = request(compressed, headers={"Content-Encoding": "gzip"}, chunked=True)
    assert run(data, step=step)[0] == ("request", "facts", "application/json", BODY)


def test_concatenated_gzip_members_are_one_body() -> None:
    data = request(
        gzip.compress(b"[{") + gzip.compress(b'"service":"a"}]'),
        headers={"Content-Encoding": "gzip"},
    )
    assert run(data)[0][3] == b'[{"service":"a"}]'


@pytest.mark.parametrize("step", [None, 1])
def test_expect_100_continue(step: int | None) -> None:
    data = request(headers={"Expect": "100-continue"})
    assert run(data, step=step)[:2] == [
        ("continue",),
        ("request", "facts", "application/json", BODY),
    ]


def test_content_type_parameters_and_case_are_ignored() -> None:
    data = request(headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert run(data)[0][:3] == ("request", "facts", "application/json")


# (request bytes, expected (status, reason), whether the connection stays open)
ERROR_CASES = {
    "unknown path": (request(path="/v2/facts"), 404, "not_found", True),
    "wrong method": (
        request(b"", method="GET", headers={"Content-Length": None, "Content-Type": None}),
        405,
        "method_not_allowed",
        True,
    ),
    "no length": (
        request(headers={"Content-Length": None}).replace(BODY, b""),
        411,
        "length_required",
        True,
    ),
    "unknown type": (
        request(headers={"Content-Type": "text/csv"}),
        415,
        "unsupported_media_type",
        True,
    ),
    "no type": (request(headers={"Content-Type": None}), 415, "unsupported_media_type", True),
    "unknown encoding": (
        request(headers={"Content-Encoding": "br"}),
        415,
        "unsupported_encoding",
        True,
    ),
    "too large by length": (request(b"x" * 2000), 413, "too_large", True),
    "too large chunked": (
        request(b"x" * 2000, chunked=True, chunk_bytes=300),
        413,
        "too_large",
        True,
    ),
    "not gzip": (
        request(b"plain", headers={"Content-Encoding": "gzip"}),
        400,
        "invalid_gzip",
        True,
    ),
    "truncated gzip": (
        request(gzip.compress(BODY)[:-9], headers={"Content-Encoding": "gzip"}),
        400,
        "invalid_gzip",
        True,
    ),
    "headers too large": (request(headers={"X-Pad": "p" * 1200}), 431, "headers_too_large", True),
    "garbage": (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request", False),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=list(ERROR_CASES))
@pytest.mark.parametrize("step", [None, 1])
def test_error_statuses(case: str, step: int | None) -> None:
    data, status, reason, keeps_open = ERROR_CASES[case]
    limits = HttpLimits(max_body_bytes=1000, max_header_bytes=1024)
    events = run(data + (request() if keeps_open else b""), step=step, limits=limits)
    assert events[0][:3] == ("error", status, reason)
    if keeps_open and step is None:
        # The rejected request was buffered whole, so the next one on the connection is served.
        assert events[1][0] == "request"
    else:
        # Rejected before its body was read: the rest would parse as garbage, so it closes.
        closes = events[0][3]
        assert closes or events[1][0] == "request"


def test_gzip_bomb_is_stopped_at_the_decompressed_limit() -> None:
    bomb = gzip.compress(b"0" * 50_000_000)  # ~50 KB on the wire
    limits = HttpLimits(max_body_bytes=1_000_000)
    events = run(request(bomb, headers={"Content-Encoding": "gzip"}), limits=limits)
    assert events[0][:3] == ("error", 413, "too_large")


@pytest.mark.parametrize(
    ("authorization", "accepted"),
    [
        (None, False),
        ("Bearer nope", False),
        ("Basic s3cret", False),
        ("Bearer s3cret", True),
        ("bearer other-token", True),
    ],
)
def test_bearer_tokens(authorization: str | None, accepted: bool) -> None:
    events = run(
        request(headers={"Authorization": authorization}), tokens=("s3cret", "other-token")
    )
    if accepted:
        assert events[0][0] == "request"
    else:
        assert events[0][:3] == ("error", 401, "unauthorized")


def test_reject_now_answers_a_request_in_progress_and_closes() -> None:
    protocol = IngestProtocol(HttpLimits())
    protocol.receive_data(request()[:-5])
    assert isinstance(protocol.next_event(), NeedData)
    event = protocol.reject_now(408, "timeout", "too slow")
    assert isinstance(event, ErrorResponse)
    assert (event.status, event.close) == (408, True)


def test_reject_now_before_a_request_head_just_closes() -> None:
    protocol = IngestProtocol(HttpLimits())
    protocol.receive_data(b"POST /v1/fa")
    assert isinstance(protocol.next_event(), NeedData)
    assert isinstance(protocol.reject_now(408, "timeout", "too slow"), Closed)


# --- strict framing (RFC 9112), versions, expectations ------------------------------------------

SMUGGLED = request(b'{"service":"smuggled"}')


def test_content_length_with_chunked_is_rejected_and_closes() -> None:
    # Read as chunked the body is empty and SMUGGLED would be a second request; a proxy
    # framing by Content-Length sees one request. RFC 9112 section 6.1: reject and close.
    data = (
        b"POST /v1/facts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(SMUGGLED))
    ) + SMUGGLED
    for step in (None, 1):
        assert run(data, step=step) == [("error", 400, "ambiguous_framing", True)]


def test_conflicting_content_lengths_are_rejected_and_close() -> None:
    data = request(headers={"Content-Length": f"{len(BODY)}\r\nContent-Length: 3"})
    assert run(data + SMUGGLED) == [("error", 400, "bad_request", True)]


@pytest.mark.parametrize("version", ["2.0", "1.2", "3.0"])
def test_other_http_versions_get_505_and_close(version: str) -> None:
    data = request().replace(b"HTTP/1.1", f"HTTP/{version}".encode(), 1)
    assert run(data + request()) == [("error", 505, "http_version_not_supported", True)]


def test_unknown_expectation_gets_417() -> None:
    events = run(request(headers={"Expect": "200-ok"}) + request())
    assert events[0][:3] == ("error", 417, "expectation_failed")


def test_two_authorization_headers_are_rejected_not_last_wins() -> None:
    data = request(headers={"Authorization": "Bearer wrong\r\nAuthorization: Bearer s3cret"})
    events = run(data + request(headers={"Authorization": "Bearer s3cret"}), tokens=("s3cret",))
    assert events[0][:3] == ("error", 400, "duplicate_header")
    assert events[1][0] == "request"  # the framing was fine: the connection goes on


# --- HTTP/1.0 keep-alive ------------------------------------------------------------------------


def _http10(keep_alive: bool) -> bytes:
    extra = {"Connection": "keep-alive"} if keep_alive else {}
    return request(headers=extra).replace(b"HTTP/1.1", b"HTTP/1.0", 1)


def test_http10_keep_alive_keeps_the_connection_and_says_so() -> None:
    protocol = IngestProtocol(HttpLimits())
    protocol.receive_data(_http10(True) * 3)
    for _ in range(3):
        event = protocol.next_event()
        assert isinstance(event, IngestRequest)
        response = protocol.respond(202, {"accepted": 1})
        head = response.split(b"\r\n\r\n", 1)[0].lower().split(b"\r\n")
        assert head[0] == b"http/1.1 202 accepted"
        assert b"connection: keep-alive" in head and b"content-length: 14" in head
        assert not protocol.must_close
    assert isinstance(protocol.next_event(), NeedData)


def test_http10_without_keep_alive_and_connection_close_close() -> None:
    for data in (_http10(False), request(headers={"Connection": "close"})):
        protocol = IngestProtocol(HttpLimits())
        protocol.receive_data(data + request())
        assert isinstance(protocol.next_event(), IngestRequest)
        assert b"\r\nconnection: close\r\n" in protocol.respond(202, {"accepted": 1})
        assert protocol.must_close
        assert isinstance(protocol.next_event(), Closed)


# --- bounded work per step -------------------------------------------------------------------


def test_tiny_chunks_are_rejected_after_a_few() -> None:
    body = b"".join(b"2\r\n[]\r\n" for _ in range(10_000)) + b"0\r\n\r\n"
    head = request(b"", chunked=True).split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
    events = run(head + body)
    assert events == [("error", 400, "chunks_too_small", True)]


def _steps(data: bytes, limits: HttpLimits | None = None) -> tuple[int, list[int], Any]:
    """Feed `data` whole; count PROGRESS events and decompressed_bytes at each."""
    protocol = IngestProtocol(limits or HttpLimits(max_body_bytes=64 << 20))
    protocol.receive_data(data)
    progress, inflated = 0, []
    while True:
        event = protocol.next_event()
        if isinstance(event, Progress):
            progress += 1
            inflated.append(protocol.decompressed_bytes)
            continue
        return progress, inflated, event


def test_many_chunks_are_parsed_a_slice_at_a_time() -> None:
    part = b'{"service":"s","route":"' + b"r" * 280 + b'"}\n'
    chunks = 2000
    data = request(part * chunks, chunked=True, chunk_bytes=len(part))
    progress, _, event = _steps(data)
    assert isinstance(event, IngestRequest) and event.body == part * chunks
    assert progress >= chunks // STEP_EVENTS  # each next_event() returns after a slice


def test_gzip_inflates_a_slice_at_a_time_and_reports_its_size() -> None:
    raw = b"[" + b",".join([b'{"service":"s"}'] * 300_000) + b"]"  # ~4.8 MB
    data = request(gzip.compress(raw), headers={"Content-Encoding": "gzip"})
    progress, inflated, event = _steps(data)
    assert isinstance(event, IngestRequest) and event.body == raw
    assert event.decompressed_bytes == len(raw)
    assert progress >= len(raw) // STEP_BYTES - 1
    growth = [b - a for a, b in zip([0, *inflated], inflated, strict=False)]
    assert max(growth) <= STEP_BYTES  # never more than one slice inflated between reports


def test_bearer_token_holder_is_shared_and_replaceable() -> None:
    tokens = BearerTokens(["old"])
    protocol = IngestProtocol(HttpLimits(), tokens)
    auth = {"Authorization": "Bearer old"}
    protocol.receive_data(request(headers=auth) * 2)
    assert isinstance(protocol.next_event(), IngestRequest)
    protocol.respond(202, {"accepted": 1})
    tokens.replace(["new"])  # a reload: the same keep-alive connection's next request
    event = protocol.next_event()
    assert isinstance(event, ErrorResponse) and event.status == 401


def _invalid_events_of(path: str) -> list[tuple[Any, ...]]:
    protocol = IngestProtocol(HttpLimits(), ())
    protocol.receive_data(request(path=path))
    seen: list[tuple[Any, ...]] = []
    while not isinstance(event := protocol.next_event(), NeedData):
        if isinstance(event, IngestRequest):
            seen.append(("request", event.invalid_events))
            break
        if isinstance(event, ErrorResponse):
            seen.append(("error", event.status, event.reason, event.message))
            break
    return seen


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", None),
        ("?invalid=skip", "skip"),
        ("?%69nvalid=skip", "skip"),  # percent-encoded name: before, silently ignored
        ("?invalid=%73kip", "skip"),
        ("?other=1&invalid=reject", "reject"),
        ("?invalid=skip&invalid=skip", "skip"),  # repeated, the same: no conflict
        ("?invalid", None),
    ],
)
def test_query_strings_are_url_decoded(query: str, expected: str | None) -> None:
    if query == "?invalid":
        [(kind, status, reason, _)] = _invalid_events_of("/v1/facts" + query)
        assert (kind, status, reason) == ("error", 400, "bad_query")
        return
    assert _invalid_events_of("/v1/facts" + query) == [("request", expected)]


def test_conflicting_repeated_parameters_are_a_400_naming_them() -> None:
    """Before: `?invalid=skip&invalid=reject` -> the first won, silently."""
    [(kind, status, reason, message)] = _invalid_events_of("/v1/facts?invalid=skip&invalid=reject")
    assert (kind, status, reason) == ("error", 400, "bad_query")
    assert message == (
        "Expected one value for query parameter invalid, got invalid='reject' and invalid='skip'"
    )
