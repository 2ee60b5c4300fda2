"""Several instances on one address (`reuse_port`): every core of a host, each instance with
its own spool and metrics port, the kernel spreading connections between them."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from daemon import Daemon, column, free_port, read_store

CONNECTIONS = 40


def instance(tmp_path: Path, name: str, http: int, tcp: int, *more: str) -> Daemon:
    return Daemon(
        tmp_path / name,
        f"--http-listen=127.0.0.1:{http}",
        f"--tcp-listen=127.0.0.1:{tcp}",
        *more,
    )


def test_two_instances_share_one_address_and_together_store_everything(tmp_path: Path) -> None:
    http, tcp = free_port(), free_port()
    first = instance(tmp_path, "first", http, tcp, "--reuse-port")
    second = instance(tmp_path, "second", http, tcp, "--reuse-port")
    with first, second:
        assert first.http_port == second.http_port == http
        assert first.metrics_port != second.metrics_port
        for i in range(CONNECTIONS):  # a new connection each: the kernel picks an instance
            body = json.dumps({"service": "scale", "trace_id": f"h{i:03d}"}).encode()
            assert first.post("/v1/facts", body)[0] == 202
            with socket.create_connection(("127.0.0.1", tcp), timeout=10) as sock:
                sock.sendall(json.dumps({"service": "scale", "trace_id": f"t{i:03d}"}).encode())
                sock.sendall(b"\n")
        per_instance = [
            d.metric("ingestion_requests_total", endpoint="/v1/facts", code="202")
            for d in (first, second)
        ]
        assert sum(per_instance) == CONNECTIONS and min(per_instance) > 0, per_instance

        # Without reuse_port a third one is refused, naming the setting.
        done = subprocess.run(
            instance(tmp_path, "third", http, free_port()).command(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert f"http_listen 127.0.0.1:{http}: address in use" in done.stderr
    stored = [column(read_store(d.store_dir, "facts"), "trace_id") for d in (first, second)]
    assert all(stored), "each instance stored some"
    expected = [f"h{i:03d}" for i in range(CONNECTIONS)] + [f"t{i:03d}" for i in range(CONNECTIONS)]
    assert sorted(stored[0] + stored[1]) == expected
