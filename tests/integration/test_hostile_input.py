"""Hostile clients against a real daemon: each gets its status and a clear error, costs bounded
memory, is counted, and never affects other connections (a well-behaved client posts the
whole time and must get nothing but 202s). Then the overload caps: connections, in-flight
requests and in-flight bytes answer 503 (or close at accept) before memory grows.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon import Daemon, column, read_store, vm_kib

MAX_BODY_BYTES = 1024 * 1024
REQUEST_TIMEOUT_SECONDS = 1.0


def head(
    path: str = "/v1/facts",
    content_type: str = "application/json",
    length: int | None = 0,
    extra: str = "",
) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gravixd", f"Content-Type: {content_type}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def request(
    body: bytes, content_type: str = "application/json", path: str = "/v1/facts", extra: str = ""
) -> bytes:
    return head(path, content_type, len(body), extra) + body


@dataclass
class Reply:
    status: int | None  # None: closed without a response
    body: dict
    headers: dict[str, str]
    seconds: float


def exchange(port: int, chunks: Iterator[bytes] | list[bytes], timeout: float = 10.0) -> Reply:
    """Send raw bytes (a chunk at a time; a chunk may be a float: sleep that long), then read
    one response, or until the server closes."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for chunk in chunks:
                if isinstance(chunk, float):
                    time.sleep(chunk)
                else:
                    sock.sendall(chunk)
        except OSError:
            pass  # the server answered early and closed (413 before the whole bomb was sent)
        data = b""
        while True:
            try:
                got = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not got:
                break
            data += got
            header_end = data.find(b"\r\n\r\n")
            if header_end >= 0:
                length = 0
                for line in data[:header_end].split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(data) >= header_end + 4 + length:
                    break
    seconds = time.monotonic() - started
    if not data:
        return Reply(None, {}, {}, seconds)
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
    }
    return Reply(int(lines[0].split()[1]), json.loads(body) if body else {}, headers, seconds)


def gzip_bomb(decompressed_bytes: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1 << 20)
    out = [compressor.compress(b'{"service":"' + zeros[:16])]
    for _ in range(decompressed_bytes >> 20):
        out.append(compressor.compress(zeros))
    out.append(compressor.flush())
    return b"".join(out)


def pb_fact(service: bytes) -> bytes:
    inner = b"\x12" + bytes([len(service)]) + service
    return b"\x0a" + bytes([len(inner)]) + inner


@dataclass
class Case:
    name: str
    chunks: Callable[[], list]
    status: int | None  # None: the connection is closed without a response
    reason: str | None = None
    endpoint: str = "/v1/facts"


CASES = [
    Case(
        "slowloris head, trickled byte by byte",
        lambda: [
            bytes([b]) if i % 2 == 0 else 0.15
            for i, b in enumerate(b"POST /v1/facts HTTP/1.1\r\nHost: x\r\nX-Slow: 1234567890")
        ],
        None,
    ),
    Case(
        "slowloris body, stalls after 10 of 100 bytes",
        lambda: [head(length=100), b'{"service"', 3.0],
        408,
        "timeout",
    ),
    Case(
        "header flood (20 KiB of headers)",
        lambda: [head(extra="".join(f"X-Flood-{i}: {'a' * 90}\r\n" for i in range(220)))],
        431,
        "headers_too_large",
    ),
    Case(
        "header line without a colon",
        lambda: [b"POST /v1/facts HTTP/1.1\r\nHost x\r\n\r\n"],
        400,
        "bad_request",
        "other",
    ),
    Case(
        "gzip bomb (256 MiB of zeros in ~256 KiB)",
        lambda: [request(gzip_bomb(256 << 20), extra="Content-Encoding: gzip\r\n")],
        413,
        "too_large",
    ),
    Case(
        "corrupt gzip",
        lambda: [request(b"\x1f\x8b\x08\x00garbage-garbage", extra="Content-Encoding: gzip\r\n")],
        400,
        "invalid_gzip",
    ),
    Case(
        "Content-Length above the limit",
        lambda: [head(length=MAX_BODY_BYTES * 4)],
        413,
        "too_large",
    ),
    Case(
        "chunked body above the limit",
        lambda: (
            [head(length=None, extra="Transfer-Encoding: chunked\r\n")]
            + [b"%x\r\n%s\r\n" % (65536, b"[" * 65536) for _ in range(20)]
            + [b"0\r\n\r\n"]
        ),
        413,
        "too_large",
    ),
    Case(
        "deeply nested JSON arrays",
        lambda: [request(b"[" * 200_000 + b"]" * 200_000)],
        400,
        "validation",
    ),
    Case(
        "deeply nested untyped JSON",
        lambda: [request(b'{"x":' * 100_000 + b"1" + b"}" * 100_000)],
        400,
        None,
    ),
    Case(
        "deeply nested attributes",
        lambda: [
            request(
                b'{"service":"s","attributes":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}"
            )
        ],
        400,
        "validation",
    ),
    Case(
        "huge JSON array above the limit",
        lambda: [request(b"[" + b",".join([b'{"service":"s"}'] * 80_000) + b"]")],
        413,
        "too_large",
    ),
    Case(
        "huge number",
        lambda: [request(b'{"service":"s","status_code":' + b"9" * 5000 + b"}")],
        400,
        "validation",
    ),
    Case(
        "wrong type",
        lambda: [request(b'[{"service":"s"},{"service":"s","status_code":"x"}]')],
        400,
        "validation",
    ),
    Case(
        "invalid UTF-8 in JSON", lambda: [request(b'{"service":"\xff\xfe"}')], 400, "invalid_utf8"
    ),
    Case(
        "invalid UTF-8 in NDJSON",
        lambda: [request(b'{"service":"ok"}\n{"service":"\xc3\x28"}\n', "application/x-ndjson")],
        400,
        "invalid_utf8",
    ),
    Case("truncated JSON", lambda: [request(b'{"service":"s","route":"/x')], 400, "invalid_json"),
    Case(
        "protobuf truncated varint",
        lambda: [request(b"\x0a\x80\x80\x80", "application/x-protobuf")],
        400,
        "invalid_protobuf",
    ),
    Case(
        "protobuf invalid wire type",
        lambda: [request(b"\x0f\x01", "application/x-protobuf")],
        400,
        "invalid_protobuf",
    ),
    Case(
        "protobuf length past the end",
        lambda: [request(b"\x0a\x7f\x12\x01a", "application/x-protobuf")],
        400,
        "invalid_protobuf",
    ),
    Case(
        "protobuf field of the wrong wire type (service as varint)",
        lambda: [request(b"\x0a\x02\x10\x01", "application/x-protobuf")],
        400,
        "wrong_message",
    ),
    Case(
        "protobuf invalid UTF-8 string",
        lambda: [request(pb_fact(b"\xff\xfe"), "application/x-protobuf")],
        400,
        None,
    ),
    Case(
        "unknown content type",
        lambda: [request(b"{}", "text/plain")],
        415,
        "unsupported_media_type",
    ),
    Case(
        "unknown encoding",
        lambda: [request(b"{}", extra="Content-Encoding: br\r\n")],
        415,
        "unsupported_encoding",
    ),
    Case("no length", lambda: [head(length=None)], 411, "length_required"),
    Case(
        "unknown path",
        lambda: [request(b"{}", path="/v1/../etc/passwd")],
        404,
        "not_found",
        "other",
    ),
    Case(
        "binary garbage instead of HTTP",
        lambda: [bytes(range(256)) * 8],
        400,
        "bad_request",
        "other",
    ),
]


class GoodClient(threading.Thread):
    """Posts one valid event every few ms, on its own keep-alive connection."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.errors: list[str] = []
        self.acked: list[str] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = 0
        while not self.stop.is_set():
            trace_id = f"good-{n}"
            n += 1
            try:
                conn.request(
                    "POST",
                    "/v1/facts",
                    json.dumps({"service": "good", "trace_id": trace_id}),
                    {"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                continue
            self.statuses.append(response.status)
            if response.status == 202:
                self.acked.append(trace_id)
            time.sleep(0.005)
        conn.close()


@pytest.fixture(scope="module")
def hostile_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(
        tmp_path_factory.mktemp("hostile"),
        f"--max-body-bytes={MAX_BODY_BYTES}",
        f"--request-timeout-seconds={REQUEST_TIMEOUT_SECONDS}",
        "--log-level=info",
    )
    with daemon:
        yield daemon


def test_hostile_inputs_get_their_status_and_others_keep_getting_202(
    hostile_daemon: Daemon,
) -> None:
    d = hostile_daemon
    assert d.proc is not None
    rss_before_kib = vm_kib(d.proc.pid, "VmRSS")
    good = GoodClient(d.http_port)
    good.start()
    try:
        results = {}
        for case in CASES:
            reply = exchange(d.http_port, case.chunks())
            results[case.name] = reply
            assert reply.status == case.status, (case.name, reply)
            if case.status is None:
                # Closed by the request deadline, not left hanging by the trickle.
                assert reply.seconds < REQUEST_TIMEOUT_SECONDS + 2.5, (case.name, reply.seconds)
                continue
            assert reply.body["status"] == case.status, case.name
            if case.reason:
                assert reply.body["reason"] == case.reason, (case.name, reply.body)
            # msgspec's tone: what was expected (and, where it applies, what came and where).
            error = reply.body["error"]
            assert "Expected" in error or " - at `$" in error, (case.name, reply.body)
            assert len(reply.body["error"]) < 1000, case.name  # bounded: never echoes the input
        time.sleep(0.2)
    finally:
        good.stop.set()
        good.join(15)
    assert (
        results["slowloris body, stalls after 10 of 100 bytes"].seconds
        < REQUEST_TIMEOUT_SECONDS + 2.5
    )
    assert good.errors == []
    assert len(good.statuses) > 50 and set(good.statuses) == {202}

    # Counted: every answered request by endpoint and code; each rejected payload by reason.
    metrics = d.metrics()

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, tuple(sorted(labels.items()))), 0.0)

    for case in CASES:
        if case.status is not None:
            assert (
                value("ingestion_requests_total", endpoint=case.endpoint, code=str(case.status))
                >= 1
            ), case.name
    for reason in ("invalid_json", "invalid_utf8", "invalid_protobuf", "too_large", "timeout"):
        assert (
            value("ingestion_events_rejected_total", stream="facts", source="http", reason=reason)
            >= 1
        ), reason
    assert value("ingestion_requests_total", endpoint="/v1/facts", code="202") == len(good.statuses)

    # Bounded memory: the 256 MiB bomb and the 4 MiB floods cost about the body limit.
    grown_kib = vm_kib(d.proc.pid, "VmHWM") - rss_before_kib
    assert grown_kib < 64 * 1024, f"peak RSS grew {grown_kib} KiB under hostile input"
    print(
        f"\nhostile input: {len(CASES)} cases, peak RSS growth {grown_kib} KiB, "
        f"{len(good.statuses)} good requests all 202"
    )

    # The daemon is still up and the good client's events are all there after a drain.
    assert d.post("/v1/facts", b'{"service":"after"}')[0] == 202
    assert d.stop() == 0
    stored = column(read_store(d.store_dir, "facts"), "trace_id")
    assert set(good.acked) <= set(stored)


def test_gzip_bomb_413_is_read_by_the_client_not_lost_to_a_reset(tmp_path: Path) -> None:
    """The 413 comes while the client is still sending: the daemon half-closes and drains
    what follows (lingering close), so the client reads the whole answer and a clean EOF.
    Closing with unread input makes the kernel reset the connection, and the client loses
    the 413 it was sent."""
    bomb = gzip_bomb(64 << 20)  # inflates past the 1 MiB limit within its first KiBs
    body = bomb + os.urandom(8 << 20)  # then more than socket buffers hold
    data = request(body, extra="Content-Encoding: gzip\r\n")
    with Daemon(tmp_path, f"--max-body-bytes={MAX_BODY_BYTES}", "--log-level=info") as d:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", d.http_port), timeout=10) as sock:
                send_errors: list[OSError] = []

                def send(sock: socket.socket = sock, errors: list[OSError] = send_errors) -> None:
                    try:
                        sock.sendall(data)
                    except OSError as exc:
                        errors.append(exc)

                sender = threading.Thread(target=send)
                sender.start()
                received = b""
                while chunk := sock.recv(65536):  # a reset raises ConnectionResetError here
                    received += chunk
                sender.join(10)
            head, _, answer = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 413 "), head
            assert json.loads(answer)["reason"] == "too_large"
            assert b"\r\nconnection: close" in head.lower()
            assert send_errors == []  # the daemon read (and dropped) the rest of the body


# --- overload caps ---------------------------------------------------------------------------


def test_in_flight_bytes_cap_answers_503_before_buffering_more(tmp_path: Path) -> None:
    with Daemon(tmp_path, "--max-in-flight-bytes=64KiB", "--request-timeout-seconds=5") as d:
        body = b"[" + b",".join([b'{"service":"s","route":"/padding/padding"}'] * 1000) + b"]"
        assert 40_000 < len(body) < 60_000
        first = socket.create_connection(("127.0.0.1", d.http_port), timeout=10)
        try:
            first.sendall(head(length=len(body)) + body[:30_000])  # stalls mid-body
            time.sleep(0.3)
            # The cap is checked as bytes arrive, once a request head is parsed.
            reply = exchange(
                d.http_port, [head(length=len(body)) + body[:20_000], 0.2, body[20_000:40_000]]
            )
            assert reply.status == 503
            assert reply.body["reason"] == "overloaded"
            assert "in flight" in reply.body["error"]
            assert int(reply.headers["retry-after"]) >= 1
            time.sleep(0.2)  # the shed request's bytes are released just after its response
            first.sendall(body[30_000:])  # the first request finishes and is accepted
            assert b" 202 " in first.recv(4096)
        finally:
            first.close()
        assert d.metric("ingestion_load_shed_total", limit="in_flight_bytes") == 1
        assert d.post("/v1/facts", body)[0] == 202  # once the budget is back


def test_connection_cap_closes_extra_connections_at_accept(tmp_path: Path) -> None:
    with Daemon(tmp_path, "--max-connections=4") as d:
        held = [socket.create_connection(("127.0.0.1", d.http_port), timeout=5) for _ in range(4)]
        try:
            time.sleep(0.3)
            reply = exchange(d.http_port, [request(b'{"service":"s"}')])
            assert reply.status is None  # closed at accept, before reading anything
            assert d.metric("ingestion_connections_rejected_total", source="http") >= 1
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.3)
        assert d.post("/v1/facts", b'{"service":"s"}')[0] == 202


def test_in_flight_requests_cap_sheds_with_503_not_memory(tmp_path: Path) -> None:
    with Daemon(tmp_path, "--max-in-flight-requests=1") as d:
        assert d.proc is not None
        body = json.dumps([{"service": "s", "trace_id": f"t{i}"} for i in range(3000)]).encode()
        statuses: list[int] = []

        def client() -> None:
            for _ in range(15):
                statuses.append(d.post("/v1/facts", body)[0])

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert set(statuses) <= {202, 503}
        assert statuses.count(202) > 0
        assert statuses.count(503) > 0, "8 concurrent clients never exceeded 1 request in flight"
        assert d.metric("ingestion_load_shed_total", limit="in_flight_requests") == statuses.count(
            503
        )
