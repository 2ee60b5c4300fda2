"""The sans-I/O HTTP ingest protocol, fed whole, byte by byte and pipelined."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from gravixd.core.http import (
    Closed,
    ErrorResponse,
    HttpLimits,
    IngestProtocol,
    IngestRequest,
    NeedData,
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
) -> bytes:
    head = {"Host": "gravixd", "Content-Type": "application/json"}
    head.update(headers or {})
    if chunked:
        head["Transfer-Encoding"] = "chunked"
        payload = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in _parts(body, 7))
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
            if isinstance(event, SendInterim):
                assert event.data.startswith(b"HTTP/1.1 100 ")
                seen.append(("continue",))
            elif isinstance(event, IngestRequest):
                seen.append(("request", event.stream, event.media_type, event.body))
                response = protocol.respond(202, {"accepted": 1})
                assert response.startswith(b"HTTP/1.1 202 ")
            elif isinstance(event, ErrorResponse):
                status_line = event.data.split(b"\r\n", 1)[0]
                assert status_line.startswith(b"HTTP/1.1 %d " % event.status)
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
    "too large chunked": (request(b"x" * 2000, chunked=True), 413, "too_large", True),
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
