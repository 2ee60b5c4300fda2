"""Raw TCP ingest through the real daemon: the rows in the store equal what was sent.

Four listeners (ndjson and protobuf, facts and events) on port 0; many connections at once,
a malformed line in the middle, an oversize line, a half-written last frame, a broken
protobuf frame. After SIGTERM (seal and upload) the store holds exactly the good events.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from daemon import Daemon, read_store, sorted_rows, wait_for

from gravixd.core.framing import encode_varint
from gravixd.eventgen import EventGenerator
from gravixd.proto.gravix.v1 import events_pb2

NOW_NS = 1_800_000_000_000_000_000

CONFIG = """
[[tcp_listeners]]
listen = "127.0.0.1:0"
stream = "facts"
framing = "protobuf"

[[tcp_listeners]]
listen = "127.0.0.1:0"
stream = "events"
framing = "ndjson"

[[tcp_listeners]]
listen = "127.0.0.1:0"
stream = "events"
framing = "protobuf"
"""


def generate(stream: str, count: int, seed: int) -> list[dict[str, Any]]:
    return EventGenerator(stream, seed).generate(count, NOW_NS)


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return b"".join(msgspec.json.encode(item) + b"\n" for item in items)


def frames(stream: str, items: list[dict[str, Any]]) -> bytes:
    cls = events_pb2.RequestFact if stream == "facts" else events_pb2.ServiceEvent
    out = []
    for item in items:
        if stream == "events":
            item = {**item, "severity": f"SEVERITY_{item['severity']}"}
        message = cls(**item).SerializeToString()
        out.append(encode_varint(len(message)) + message)
    return b"".join(out)


def send(port: int, data: bytes, chunk_bytes: int = 7919) -> None:
    """Send in odd-sized chunks, half-close, and wait until gravixd closes (it does once
    everything it read is ingested and durable)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for start in range(0, len(data), chunk_bytes):
            sock.sendall(data[start : start + chunk_bytes])
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


def expected_rows(stream: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        row = {**item, "timestamp": item["timestamp_unix_nano"]}
        del row["timestamp_unix_nano"]
        row["attributes"] = sorted(item["attributes"].items())
        rows.append(row)
    return sorted(rows, key=lambda r: r["trace_id"])


def test_tcp_rows_in_the_store_equal_what_was_sent(tmp_path: Path) -> None:
    config = tmp_path / "gravixd.toml"
    config.write_text(CONFIG)
    daemon = Daemon(
        tmp_path / "d",
        "--config", str(config),
        "--tcp-max-line-bytes", "4096",
        "--segment-max-age-seconds", "1",
    )  # fmt: skip
    with daemon:
        nd_facts, pb_facts, nd_events, pb_events = daemon.tcp_ports
        sent: dict[str, list[dict[str, Any]]] = {"facts": [], "events": []}
        jobs: list[tuple[int, bytes]] = []

        # ndjson facts, 8 connections; one has a malformed line, an oversize line and
        # ends without a newline.
        for seed in range(8):
            items = generate("facts", 500, seed)
            sent["facts"] += items
            data = ndjson(items)
            if seed == 0:
                cut = data.index(b"\n", len(data) // 2) + 1
                bad = b'{"service": ""}\n{"service": "x", ' + b'"route": "' + b"r" * 5000 + b'"}\n'
                data = (data[:cut] + bad + data[cut:]).rstrip(b"\n")
            jobs.append((nd_facts, data))
        # protobuf facts, 12 connections; one ends in a half frame, one breaks its framing.
        for seed in range(100, 112):
            items = generate("facts", 400, seed)
            data = frames("facts", items)
            if seed == 100:
                data += frames("facts", generate("facts", 1, 999))[:-10]
            if seed == 101:
                kept, lost = items[:150], items[150:]
                garbage = b"\xff" * 9
                data = frames("facts", kept) + encode_varint(len(garbage)) + garbage
                data += frames("facts", lost)
                items = kept
            sent["facts"] += items
            jobs.append((pb_facts, data))
        # events in both framings.
        for seed, port in ((200, nd_events), (201, pb_events), (202, pb_events)):
            items = generate("events", 700, seed)
            sent["events"] += items
            jobs.append((port, ndjson(items) if port == nd_events else frames("events", items)))

        threads = [threading.Thread(target=send, args=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)

        def accepted(stream: str) -> float:
            return daemon.metric("ingestion_events_accepted_total", stream=stream, source="tcp")

        wait_for(lambda: accepted("facts") == len(sent["facts"]), what="facts accepted")
        wait_for(lambda: accepted("events") == len(sent["events"]), what="events accepted")

        def rejected(reason: str) -> float:
            return daemon.metric(
                "ingestion_events_rejected_total", stream="facts", source="tcp", reason=reason
            )

        assert rejected("validation") == 1  # the empty service
        assert rejected("oversize") == 1
        assert rejected("truncated") == 1  # the half frame
        assert rejected("invalid_protobuf") == 1
        closed = "ingestion_tcp_closed_connections_total"
        assert daemon.metric(closed, reason="truncated") == 1
        assert daemon.metric(closed, reason="malformed_frame") == 1
        assert daemon.metric(closed, reason="eof") == len(jobs) - 2
        logged = [e for e in daemon.log_events() if e.get("event") == "tcp_malformed_frame"]
        assert logged and logged[0]["byte_offset"] == len(frames("facts", kept))
        assert daemon.stop() == 0

    for stream in ("facts", "events"):
        rows = sorted_rows(read_store(daemon.store_dir, stream))
        assert rows == expected_rows(stream, sent[stream]), stream


def test_sigterm_with_open_tcp_connections_keeps_what_they_sent(tmp_path: Path) -> None:
    """A log shipper's connection stays open: a drain stops reading, stores what was read,
    closes the connection, and exits well before the drain deadline."""
    items = [{"service": "shipper", "trace_id": f"open-{i}"} for i in range(300)]
    with Daemon(tmp_path, "--drain-timeout-seconds", "30") as daemon:
        sock = socket.create_connection(("127.0.0.1", daemon.tcp_ports[0]), timeout=10)
        sock.sendall(b"".join(msgspec.json.encode(i) + b"\n" for i in items))
        wait_for(
            lambda: (
                daemon.metric("ingestion_events_accepted_total", stream="facts", source="tcp")
                == len(items)
            ),
            what="the daemon to ingest the lines",
        )
        started = time.monotonic()
        assert daemon.stop() == 0
        assert time.monotonic() - started < 15  # not held until the 30 s deadline
        assert sock.recv(10) == b""  # the daemon closed the connection
        sock.close()
    drained = [e for e in daemon.log_events() if e.get("event") == "drained"]
    assert drained and drained[-1]["deadline_hit"] is False
    stored = read_store(daemon.store_dir, "facts").column("trace_id").to_pylist()
    assert sorted(stored) == sorted(i["trace_id"] for i in items)
