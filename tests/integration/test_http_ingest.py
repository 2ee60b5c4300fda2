"""A real daemon on ephemeral ports, real HTTP clients: every status code of the contract,
gzip, chunked bodies, keep-alive, pipelining, 100-continue; rows read back from the store
equal what was sent, and /metrics counts what happened."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from daemon import Daemon, ndjson, read_store, sorted_rows
from strategies import to_protobuf

from gravixd.core.decode import as_record_batch, decode

RECEIVED = 1


def _decode(stream: str, *args: Any) -> Any:
    """decode() as a record batch, whether it deferred a small request's columns or not."""
    return as_record_batch(stream, decode(stream, *args))


def facts(n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "timestamp_unix_nano": 1_764_000_000_000_000_000 + i,
            "service": f"svc-{i % 3}",
            "route": "/users/{id}",
            "method": "GET",
            "status_code": 200 + i % 5,
            "duration_ms": i / 7,
            "bytes_in": i,
            "bytes_out": 2 * i,
            "trace_id": f"{tag}-{i}",
            "attributes": {"region": "eu", "n": str(i)},
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with Daemon(
        tmp_path_factory.mktemp("http"),
        "--max-body-bytes",
        "65536",
        "--segment-max-age-seconds",
        "0.5",
    ) as d:
        yield d


def test_json_ndjson_protobuf_and_gzip_land_in_the_store(tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []
    with Daemon(tmp_path) as d:
        for form in ("json", "ndjson", "protobuf", "gzip-json"):
            items = facts(50, form)
            sent += items
            if form == "ndjson":
                status, body, _ = d.post("/v1/facts", ndjson(items), "application/x-ndjson")
            elif form == "protobuf":
                status, body, _ = d.post(
                    "/v1/facts", to_protobuf("facts", items), "application/x-protobuf"
                )
            elif form == "gzip-json":
                status, body, _ = d.post(
                    "/v1/facts",
                    gzip.compress(json.dumps(items).encode()),
                    headers={"Content-Encoding": "gzip"},
                )
            else:
                status, body, _ = d.post("/v1/facts", json.dumps(items).encode())
            assert (status, body) == (202, {"accepted": 50}), form
        assert d.stop() == 0  # SIGTERM: seal and upload before exit
    stored = read_store(d.store_dir, "facts")
    expected = _decode("facts", "application/json", json.dumps(sent).encode(), RECEIVED)
    assert sorted_rows(stored) == sorted_rows(pa.Table.from_batches([expected]))
    keys = [p.relative_to(d.store_dir).as_posix() for p in d.store_dir.rglob("*.arrow")]
    assert keys and all(k.startswith("facts/dt=") and "/hour=" in k for k in keys)


# (what, request kwargs, status, reason)
STATUS_CASES = [
    ("bad json", dict(body=b"[{", content_type="application/json"), 400, "invalid_json"),
    ("wrong type", dict(body=b'[{"service":"a","status_code":"x"}]'), 400, "validation"),
    ("unknown type", dict(body=b"{}", content_type="text/csv"), 415, "unsupported_media_type"),
    (
        "unknown encoding",
        dict(body=b"{}", headers={"Content-Encoding": "zstd"}),
        415,
        "unsupported_encoding",
    ),
    ("too large", dict(body=b"[" + b" " * 70_000 + b"]"), 413, "too_large"),
    (
        "gzip bomb",
        dict(body=gzip.compress(b" " * 5_000_000), headers={"Content-Encoding": "gzip"}),
        413,
        "too_large",
    ),
    ("unknown path", dict(path="/v1/metrics", body=b"{}"), 404, "not_found"),
]


@pytest.mark.parametrize(
    ("what", "kwargs", "status", "reason"), STATUS_CASES, ids=[c[0] for c in STATUS_CASES]
)
def test_error_statuses(
    daemon: Daemon, what: str, kwargs: dict[str, Any], status: int, reason: str
) -> None:
    path = kwargs.pop("path", "/v1/facts")
    got, body, _ = daemon.post(path, **kwargs)
    assert got == status
    assert body["reason"] == reason and body["status"] == status
    assert body["error"].startswith("Expected"), body
    # The daemon keeps serving everyone else.
    assert daemon.post("/v1/facts", b'{"service":"ok"}')[0] == 202


def test_405_and_411(daemon: Daemon) -> None:
    conn = daemon.connection()
    conn.request("GET", "/v1/facts")
    response = conn.getresponse()
    assert (response.status, response.getheader("Allow")) == (405, "POST")
    response.read()
    conn.close()
    raw = socket.create_connection(("127.0.0.1", daemon.http_port))
    raw.sendall(b"POST /v1/facts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n")
    assert raw.recv(65536).startswith(b"HTTP/1.1 411 ")
    raw.close()


def test_keep_alive_and_chunked_bodies(daemon: Daemon) -> None:
    conn = daemon.connection()
    for i in range(5):
        body = iter([b'[{"service":"chunk",', b'"trace_id":"c%d"}' % i, b"]"])
        conn.request(
            "POST", "/v1/facts", body, {"Content-Type": "application/json"}, encode_chunked=True
        )
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (202, {"accepted": 1})
    conn.close()


def test_pipelined_requests_are_answered_in_order(daemon: Daemon) -> None:
    bodies = [b'{"service":"p%d"}' % i for i in range(3)] + [b"{bad"]
    raw = b"".join(
        b"POST /v1/facts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in bodies
    )
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10) as sock:
        sock.sendall(raw)
        received = b""
        while received.count(b"HTTP/1.1 ") < 4 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    statuses = [int(part[:3]) for part in received.split(b"HTTP/1.1 ")[1:]]
    assert statuses == [202, 202, 202, 400]


def test_expect_100_continue(daemon: Daemon) -> None:
    body = b'{"service":"continue"}'
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 202 ")


def test_curl_examples_from_the_readme(daemon: Daemon, tmp_path: Path) -> None:
    assert shutil.which("curl"), "curl is not installed: scripts/install-tools installs it"
    url = f"http://127.0.0.1:{daemon.http_port}"
    (tmp_path / "batch.ndjson").write_bytes(ndjson(facts(3, "curl")))
    commands = [
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            f"{url}/v1/facts",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"service":"checkout","route":"/pay","method":"POST","status_code":201,'
            '"duration_ms":12.5}',
        ],
        [
            "curl",
            "-sS",
            f"{url}/v1/facts",
            "-H",
            "Content-Type: application/x-ndjson",
            "--data-binary",
            f"@{tmp_path / 'batch.ndjson'}",
        ],
        [
            "curl",
            "-sS",
            f"{url}/v1/events",
            "-H",
            "Content-Type: application/json",
            "-d",
            '[{"service":"checkout","kind":"deploy","severity":"INFO","message":"v2"}]',
        ],
    ]
    for command in commands:
        out = subprocess.run(command, capture_output=True, check=True, timeout=30).stdout
        assert json.loads(out)["accepted"] >= 1, command


def test_unauthorized_without_a_valid_token(tmp_path: Path) -> None:
    with Daemon(tmp_path, "--auth-tokens", "tok-1,tok-2") as d:
        status, body, headers = d.post("/v1/facts", b'{"service":"a"}')
        assert (status, body["reason"]) == (401, "unauthorized")
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert (
            d.post("/v1/facts", b'{"service":"a"}', headers={"Authorization": "Bearer x"})[0] == 401
        )
        for token in ("tok-1", "tok-2"):
            ok = d.post(
                "/v1/facts", b'{"service":"a"}', headers={"Authorization": f"Bearer {token}"}
            )
            assert ok[0] == 202


def test_503_with_retry_after_when_the_spool_is_full(tmp_path: Path) -> None:
    # The store is a file where a directory should be: every upload fails, the spool fills.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with Daemon(
        tmp_path,
        "--max-spool-bytes",
        "1",
        "--segment-max-age-seconds",
        "0.2",
        store_url=f"file://{blocker}/store",
    ) as d:
        assert d.post("/v1/facts", b'{"service":"a"}')[0] == 202
        status, body, headers = d.post("/v1/facts", b'{"service":"a"}')
        assert (status, body["reason"], headers["Retry-After"]) == (503, "spool_full", "1")
        assert d.side_get("/readyz")[0] == 503
        assert d.metric("ingestion_requests_total", endpoint="/v1/facts", code="503") == 1
        d.kill()


def test_metrics_count_what_was_sent(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        for _ in range(3):
            assert d.post("/v1/facts", json.dumps(facts(10, uuid.uuid4().hex)).encode())[0] == 202
        assert d.post("/v1/events", b'[{"service":"a"},{"service":"b"}]')[0] == 202
        assert d.post("/v1/facts", b"[{")[0] == 400
        assert d.post("/v1/facts", b"{}", "text/plain")[0] == 415
        m = d.metric
        assert m("ingestion_requests_total", endpoint="/v1/facts", code="202") == 3
        assert m("ingestion_requests_total", endpoint="/v1/events", code="202") == 1
        assert m("ingestion_requests_total", endpoint="/v1/facts", code="400") == 1
        assert m("ingestion_requests_total", endpoint="/v1/facts", code="415") == 1
        assert m("ingestion_events_accepted_total", stream="facts", source="http") == 30
        assert m("ingestion_events_accepted_total", stream="events", source="http") == 2
        assert (
            m(
                "ingestion_events_rejected_total",
                stream="facts",
                source="http",
                reason="invalid_json",
            )
            == 1
        )
        assert m("ingestion_latency_seconds_count", endpoint="/v1/facts") == 5
        assert m("spool_fsync_duration_seconds_count", stream="facts") >= 1
        assert m("ingestion_received_bytes_total", source="http") > 0
        assert d.side_get("/livez")[0] == 200 and d.side_get("/readyz")[0] == 200
