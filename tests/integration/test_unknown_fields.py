"""Keys a shipper adds that the schema does not know (`user`, `host`, `level`) are never
silently lost: by default each lands in the event's `attributes` as text, over HTTP JSON,
NDJSON and raw TCP ndjson alike; `unknown_fields = "ignore"` drops them, counted."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon, ndjson, read_store, wait_for

EXTRA = {"user": "bob", "host": "web-1", "level": 3, "ok": True, "tags": ["a", 1], "n": None}
KEPT = {"user": "bob", "host": "web-1", "level": "3", "ok": "true", "tags": '["a",1]', "n": ""}


def event(source: str) -> dict[str, Any]:
    # `host` is also an attribute of the event's own: that one wins.
    return {"service": "sshd", "kind": source, "attributes": {"host": "own"}, **EXTRA}


def send_all(d: Daemon) -> None:
    """One event over each way in: HTTP JSON, HTTP NDJSON, raw TCP ndjson."""
    status, body, _ = d.post("/v1/events", json.dumps(event("json")).encode())
    assert (status, body) == (202, {"accepted": 1})
    lines = ndjson([event("ndjson")])
    status, body, _ = d.post("/v1/events", lines, "application/x-ndjson")
    assert (status, body) == (202, {"accepted": 1})
    with socket.create_connection(("127.0.0.1", d.tcp_ports[1]), timeout=30) as sock:
        sock.sendall(ndjson([event("tcp")]))
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


CONFIG = """
[[tcp_listeners]]
listen = "127.0.0.1:0"
stream = "events"
"""


@pytest.mark.parametrize(
    ("mode", "stored", "outcome"),
    [
        ("attributes", {**KEPT, "host": "own"}, "kept"),
        ("ignore", {"host": "own"}, "ignored"),
    ],
)
def test_unknown_keys_are_kept_as_attributes_or_ignored_and_counted(
    tmp_path: Path, mode: str, stored: dict[str, str], outcome: str
) -> None:
    config = tmp_path / "gravixd.toml"
    config.write_text(CONFIG)
    args = ["--config", str(config), "--segment-max-age-seconds", "0.2"]
    if mode != "attributes":  # the default is what a daemon without the key does
        args += ["--unknown-fields", mode]
    with Daemon(tmp_path / "d", *args) as d:
        send_all(d)

        def rows() -> list[dict[str, Any]]:
            # (nanosecond timestamps do not fit datetime; they are not what is tested here)
            return read_store(d.store_dir, "events").drop_columns(["timestamp"]).to_pylist()

        wait_for(lambda: len(rows()) == 3, what="three events stored")
        for row in rows():
            assert dict(row["attributes"]) == stored, row["kind"]
        for source in ("http", "tcp"):
            per_event = len(EXTRA)  # each unknown key of each event, `host` included
            events = 2 if source == "http" else 1
            labels = {"stream": "events", "source": source, "outcome": outcome}
            assert d.metric("ingestion_unknown_fields_total", **labels) == per_event * events
