"""HTTP strictness against a real daemon, with raw sockets and with strict third-party clients.

Smuggling (RFC 9112 section 6.1), versions, expectations and duplicate credentials are
refused; every status line carries its reason phrase; an HTTP/1.0 client asking for
keep-alive keeps its connection; `h2load --h1` and `ab -k` count every answer a success.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import Daemon, column, read_store

TOKEN = "strict-token"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with Daemon(
        tmp_path_factory.mktemp("strict"), f"--auth-tokens={TOKEN}", "--log-level=info"
    ) as d:
        yield d


def post(body: bytes, *, version: str = "1.1", extra: str = "", auth: bool = True) -> bytes:
    lines = [f"POST /v1/facts HTTP/{version}", "Host: gravixd", "Content-Type: application/json"]
    if auth:
        lines.append(f"Authorization: Bearer {TOKEN}")
    if "Content-Length" not in extra and "Transfer-Encoding" not in extra:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode() + body


def responses(port: int, data: bytes, timeout: float = 10.0) -> tuple[list[bytes], bool]:
    """Send `data`, read every response until the server closes or goes quiet; returns the
    response heads (lower case) and whether the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.settimeout(1.5)
        buffer, closed = b"", False
        while True:
            try:
                got = sock.recv(65536)
            except TimeoutError:
                break
            if not got:
                closed = True
                break
            buffer += got
    heads = []
    while buffer:
        head, _, rest = buffer.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        heads.append(head.lower())
        buffer = rest[length:]
    return heads, closed


def status_line(head: bytes) -> bytes:
    return head.split(b"\r\n", 1)[0]


def test_content_length_with_chunked_is_400_and_closes_nothing_smuggled(daemon: Daemon) -> None:
    smuggled = post(b'{"service":"strict","trace_id":"smuggled"}')
    data = (
        post(
            b"0\r\n\r\n" + smuggled,
            extra=f"Content-Length: {5 + len(smuggled)}\r\nTransfer-Encoding: chunked\r\n",
        )
        + b""
    )
    heads, closed = responses(daemon.http_port, data)
    assert [status_line(h) for h in heads] == [b"http/1.1 400 bad request"]
    assert b"connection: close" in heads[0] and closed
    assert (
        daemon.post(
            "/v1/facts",
            b'{"service":"strict","trace_id":"after-smuggle"}',
            headers={"Authorization": f"Bearer {TOKEN}"},
        )[0]
        == 202
    )


def test_conflicting_content_lengths_are_400_and_close(daemon: Daemon) -> None:
    body = b'{"service":"strict"}'
    data = post(body, extra=f"Content-Length: {len(body)}\r\nContent-Length: 3\r\n")
    heads, closed = responses(daemon.http_port, data + post(body))
    assert [status_line(h) for h in heads] == [b"http/1.1 400 bad request"] and closed


@pytest.mark.parametrize("version", ["2.0", "1.2"])
def test_other_versions_get_505(daemon: Daemon, version: str) -> None:
    body = b'{"service":"strict","trace_id":"v%s"}' % version.encode()
    heads, closed = responses(daemon.http_port, post(body, version=version))
    assert [status_line(h) for h in heads] == [b"http/1.1 505 http version not supported"]
    assert closed


def test_unknown_expectation_gets_417(daemon: Daemon) -> None:
    heads, _ = responses(daemon.http_port, post(b'{"service":"s"}', extra="Expect: 200-ok\r\n"))
    assert [status_line(h) for h in heads] == [b"http/1.1 417 expectation failed"]


def test_two_authorization_headers_get_400(daemon: Daemon) -> None:
    extra = f"Authorization: Bearer {TOKEN}\r\n"  # plus the one post() adds
    heads, _ = responses(daemon.http_port, post(b'{"service":"s"}', extra=extra))
    assert [status_line(h) for h in heads] == [b"http/1.1 400 bad request"]


def test_every_status_line_has_its_reason_phrase(daemon: Daemon) -> None:
    cases = [
        (post(b'{"service":"strict","trace_id":"phrase"}'), b"202 accepted"),
        (post(b'{"service":', extra=""), b"400 bad request"),
        (post(b"{}", auth=False), b"401 unauthorized"),
        (post(b"{}").replace(b"/v1/facts", b"/v1/nope"), b"404 not found"),
        (
            post(b"{}").replace(b"Content-Type: application/json", b"Content-Type: text/csv"),
            b"415 unsupported media type",
        ),
    ]
    for data, expected in cases:
        heads, _ = responses(daemon.http_port, data)
        assert status_line(heads[0]) == b"http/1.1 " + expected


def test_http10_keep_alive_is_honoured(daemon: Daemon) -> None:
    requests = b"".join(
        post(
            b'{"service":"strict","trace_id":"ka%d"}' % i,
            version="1.0",
            extra="Connection: keep-alive\r\n",
        )
        for i in range(3)
    )
    heads, closed = responses(daemon.http_port, requests)
    assert [status_line(h) for h in heads] == [b"http/1.1 202 accepted"] * 3
    for head in heads:
        assert b"\r\nconnection: keep-alive" in head and b"\r\ncontent-length: " in head
    assert not closed  # still open after three requests
    # Without keep-alive an HTTP/1.0 connection still closes after its response.
    heads, closed = responses(daemon.http_port, post(b'{"service":"strict"}', version="1.0"))
    assert len(heads) == 1 and closed


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed: scripts/install-tools installs it"
    return path


BODY = b'{"service":"loadtool","route":"/x","status_code":200}'


def test_h2load_counts_every_answer_a_success(daemon: Daemon, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(BODY)
    out = subprocess.run(
        [
            _tool("h2load"), "--h1", "-n", "400", "-c", "4", "-d", str(body),
            "-H", "content-type: application/json", "-H", f"authorization: Bearer {TOKEN}",
            f"http://127.0.0.1:{daemon.http_port}/v1/facts",
        ],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert re.search(r"400 succeeded, 0 failed, 0 errored", out), out
    assert re.search(r"status codes: 400 2xx", out), out


def test_ab_keep_alive_counts_every_answer_a_success(daemon: Daemon, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_bytes(BODY)
    out = subprocess.run(
        [
            _tool("ab"), "-k", "-n", "400", "-c", "4", "-p", str(body), "-T", "application/json",
            "-H", f"Authorization: Bearer {TOKEN}",
            f"http://127.0.0.1:{daemon.http_port}/v1/facts",
        ],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert re.search(r"Complete requests:\s+400\n", out), out
    assert re.search(r"Failed requests:\s+0\n", out), out
    assert re.search(r"Keep-Alive requests:\s+400\n", out), out
    assert "Non-2xx responses" not in out, out


def test_nothing_smuggled_was_stored(daemon: Daemon) -> None:
    """Last in the module: drain the daemon and read what it stored."""
    assert daemon.stop() == 0
    trace_ids = column(read_store(daemon.store_dir, "facts"), "trace_id")
    assert "smuggled" not in trace_ids and "after-smuggle" in trace_ids
    assert {"ka0", "ka1", "ka2", "phrase"} <= set(trace_ids)
    assert not {"v2.0", "v1.2"} & set(trace_ids)
