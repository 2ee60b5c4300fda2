"""The daemon with an S3 store (SeaweedFS), end to end: HTTP ingest -> objects in the bucket
-> rows read back equal what was sent; and a store outage in the middle of uploads (the
server stopped, then restarted) loses nothing and duplicates nothing."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from seaweed import SeaweedServer, environ_without_aws, free_ports

pytestmark = [pytest.mark.s3, pytest.mark.slow]

_WAIT_SECONDS = 60.0


class Daemon:
    def __init__(self, process: subprocess.Popen[bytes], http_port: int, metrics_port: int):
        self.process, self.http_port, self.metrics_port = process, http_port, metrics_port

    def request(self, method: str, port: int, path: str, body: bytes = b"") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def post_facts(self, facts: list[dict[str, Any]]) -> None:
        status, body = self.request("POST", self.http_port, "/v1/facts", json.dumps(facts).encode())
        assert status == 202, body
        assert json.loads(body) == {"accepted": len(facts)}


@contextmanager
def run_daemon(
    tmp_path: Path, server: SeaweedServer, prefix: str, *extra_args: str
) -> Iterator[Daemon]:
    http_port, metrics_port = free_ports(2)
    log_path = tmp_path / "gravixd.log"
    env = {k: v for k, v in environ_without_aws().items() if not k.startswith("GRAVIXD_")}
    env.update(server.env())
    command = [
        sys.executable, "-m", "gravixd", "serve",
        "--http-listen", f"127.0.0.1:{http_port}",
        "--metrics-listen", f"127.0.0.1:{metrics_port}",
        "--tcp-listen", "",
        "--spool-dir", str(tmp_path / "spool"),
        "--store-url", f"s3://{server.bucket}/{prefix}",
        "--s3-endpoint-url", server.endpoint_url,
        "--s3-path-style",
        "--segment-max-age-seconds", "1",
        "--upload-retry-max-seconds", "1",
        *extra_args,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    daemon = Daemon(process, http_port, metrics_port)
    try:
        deadline = time.monotonic() + _WAIT_SECONDS
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if daemon.request("GET", metrics_port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        yield daemon
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()[-5000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def make_facts(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "timestamp_unix_nano": 1_700_000_000_000_000_000 + i,
            "service": f"svc-{i % 3}",
            "route": "/users/{id}",
            "method": "GET",
            "status_code": 200 + i % 5,
            "duration_ms": i / 8,
            "bytes_in": i,
            "bytes_out": 2 * i,
            "trace_id": f"trace-{i:08d}",
            "attributes": {"i": str(i)},
        }
        for i in range(start, start + count)
    ]


def read_bucket_facts(server: SeaweedServer, prefix: str) -> pa.Table:
    client = server.client()
    tables = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=server.bucket, Prefix=f"{prefix}/facts/"
    ):
        for item in page.get("Contents", ()):
            data = client.get_object(Bucket=server.bucket, Key=item["Key"])["Body"].read()
            if item["Key"].endswith(".parquet"):
                tables.append(pq.read_table(pa.BufferReader(data)))
            else:
                tables.append(pa.ipc.open_file(pa.BufferReader(data)).read_all())
    return pa.concat_tables(tables) if tables else pa.table({"trace_id": pa.array([], pa.string())})


def wait_for_rows(server: SeaweedServer, prefix: str, rows: int) -> pa.Table:
    deadline = time.monotonic() + _WAIT_SECONDS
    while True:
        try:
            table = read_bucket_facts(server, prefix)
        except (ClientError, EndpointConnectionError):
            # A SeaweedFS just restarted answers 500 InternalError until its volume is back:
            # this reader polls through it as the daemon's uploader retries through it.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        if table.num_rows >= rows or time.monotonic() > deadline:
            return table
        time.sleep(0.2)


def assert_rows_equal_sent(table: pa.Table, sent: list[dict[str, Any]]) -> None:
    table = table.sort_by("trace_id")
    ns = pa.compute.cast(table["timestamp"], pa.int64())  # as_py() cannot hold nanoseconds
    got = table.drop_columns(["timestamp"]).append_column("timestamp", ns).to_pylist()
    assert len(got) == len(sent)
    for row, fact in zip(got, sorted(sent, key=lambda f: f["trace_id"]), strict=True):
        assert row["timestamp"] == fact["timestamp_unix_nano"]
        assert {k: row[k] for k in ("service", "route", "method", "status_code")} == {
            k: fact[k] for k in ("service", "route", "method", "status_code")
        }
        assert (row["duration_ms"], row["bytes_in"], row["bytes_out"], row["trace_id"]) == (
            fact["duration_ms"], fact["bytes_in"], fact["bytes_out"], fact["trace_id"],
        )  # fmt: skip
        assert dict(row["attributes"]) == fact["attributes"]


def test_http_ingest_lands_in_the_bucket_as_sent(seaweed: SeaweedServer, tmp_path: Path) -> None:
    prefix = f"e2e-{os.getpid()}-{time.monotonic_ns()}"
    sent: list[dict[str, Any]] = []
    with run_daemon(tmp_path, seaweed, prefix) as daemon:
        for start in range(0, 1000, 250):
            batch = make_facts(start, 250)
            daemon.post_facts(batch)
            sent += batch
        table = wait_for_rows(seaweed, prefix, len(sent))
    assert_rows_equal_sent(table, sent)
    keys = [
        o["Key"]
        for o in seaweed.client().list_objects_v2(Bucket=seaweed.bucket, Prefix=prefix)["Contents"]
    ]
    assert all(k.startswith(f"{prefix}/facts/dt=") and "/hour=" in k for k in keys), keys


def test_a_store_outage_during_uploads_loses_nothing(
    seaweed_private: SeaweedServer, tmp_path: Path
) -> None:
    server = seaweed_private
    prefix = "outage"
    sent: list[dict[str, Any]] = []
    with run_daemon(tmp_path, server, prefix) as daemon:
        before = make_facts(0, 300)
        daemon.post_facts(before)
        sent += before
        assert wait_for_rows(server, prefix, len(sent)).num_rows == len(sent)

        server.stop()  # the store goes away; ingest goes on into the spool
        for start in range(300, 900, 100):
            batch = make_facts(start, 100)
            daemon.post_facts(batch)
            sent += batch
            time.sleep(0.3)  # segments rotate (1 s) and their uploads fail and retry
        server.start()

        table = wait_for_rows(server, prefix, len(sent))
    assert_rows_equal_sent(table, sent)  # nothing lost, nothing twice
    quarantined = [p for p in (tmp_path / "spool").rglob("*") if "quarantine" in p.parts]
    assert not [p for p in quarantined if p.is_file()]  # no retryable error taken as permanent


@pytest.mark.parametrize("segment_format", ["arrow", "parquet"])
def test_rollup_compacts_the_daemons_own_segments(
    seaweed: SeaweedServer,
    tmp_path: Path,
    segment_format: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gravixd import rollup

    prefix = f"e2e-rollup-{segment_format}-{time.monotonic_ns()}"
    sent = make_facts(0, 600)
    with run_daemon(tmp_path, seaweed, prefix, "--segment-format", segment_format) as daemon:
        for start in range(0, 600, 200):
            daemon.post_facts(sent[start : start + 200])
        assert wait_for_rows(seaweed, prefix, len(sent)).num_rows == len(sent)

    for name in [n for n in os.environ if n.startswith(("GRAVIXD_", "AWS_"))]:
        monkeypatch.delenv(name)
    options = seaweed.store_options()
    argv = [
        "--store-url", f"s3://{seaweed.bucket}/{prefix}",
        "--s3-endpoint-url", options["s3_endpoint_url"], "--s3-path-style",
        "--s3-region", options["s3_region"],
        "--s3-access-key-id", options["s3_access_key_id"],
        "--s3-secret-access-key", options["s3_secret_access_key"],
        "--include-current-hour", "--json",
    ]  # fmt: skip
    assert rollup.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == len(sent)

    client = seaweed.client()
    keys = [
        o["Key"]
        for o in client.list_objects_v2(Bucket=seaweed.bucket, Prefix=prefix).get("Contents", [])
    ]
    assert not [k for k in keys if f"{prefix}/facts/" in k]  # sources removed
    # Rollup parts hold the rows; rollup-commits/ holds the records the views read.
    parts = [k for k in keys if k.endswith(".parquet") and "/rollup-commits/" not in k]
    assert parts and all(f"{prefix}/rollup/facts/dt=" in k for k in parts)
    assert any(f"{prefix}/rollup-commits/facts/dt=" in k for k in keys)
    table = pa.concat_tables(
        pq.read_table(
            pa.BufferReader(client.get_object(Bucket=seaweed.bucket, Key=k)["Body"].read())
        )
        for k in parts
    )
    assert_rows_equal_sent(table, sent)
