"""What shippers send, through the real daemon (DESIGN.md section 2, JSON conveniences): syslog's
and OpenTelemetry's severity names, RFC 3339 times with offsets, `null` fields. HTTP JSON,
NDJSON and raw TCP ndjson land the same rows; a bad line on raw TCP is skipped, counted and
logged with its byte offset."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from daemon import Daemon, ndjson, read_store, sorted_rows, wait_for

CONFIG = """
[[tcp_listeners]]
listen = "127.0.0.1:0"
stream = "events"
framing = "ndjson"
"""

# Every name DESIGN lists, in the spellings shippers use, with the stored name.
SEVERITIES = [
    ("trace", "DEBUG"), ("debug", "DEBUG"), ("info", "INFO"), ("informational", "INFO"),
    ("notice", "INFO"), ("warn", "WARN"), ("warning", "WARN"), ("err", "ERROR"),
    ("error", "ERROR"), ("crit", "FATAL"), ("critical", "FATAL"), ("alert", "FATAL"),
    ("emerg", "FATAL"), ("emergency", "FATAL"), ("fatal", "FATAL"), ("panic", "FATAL"),
    ("WARNING", "WARN"), ("SEVERITY_ERROR", "ERROR"), ("Notice", "INFO"),
    ("verbose", "DEBUG"), ("Information", "INFO"),
]  # fmt: skip
BASE = datetime(2026, 12, 1, 5, 40, tzinfo=UTC)


def events(tag: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(what a shipper sends, the rows gravixd should store), one event per severity name."""
    sent, expected = [], []
    for i, (name, stored) in enumerate(SEVERITIES):
        when = BASE + timedelta(seconds=i, microseconds=i)
        offset = timezone(timedelta(hours=(i % 5) - 2, minutes=30 * (i % 2)))
        text = when.astimezone(offset).isoformat(timespec="microseconds")
        text = text[:-6] + f"{i:03d}" + text[-6:]  # 9 fractional digits
        nanos = int(when.timestamp()) * 10**9 + (i * 1000 + i)
        sent.append(
            {"service": "syslog", "timestamp": text, "severity": name, "kind": None,
             "message": f"{tag} {name}", "trace_id": f"{tag}-{i}", "attributes": None}
        )  # fmt: skip
        expected.append(
            {"service": "syslog", "timestamp": nanos, "severity": stored, "kind": "",
             "message": f"{tag} {name}", "trace_id": f"{tag}-{i}", "attributes": []}
        )  # fmt: skip
    return sent, expected


def test_shippers_conventions_land_the_same_over_json_ndjson_and_tcp(tmp_path: Path) -> None:
    config = tmp_path / "gravixd.toml"
    config.write_text(CONFIG)
    expected: list[dict[str, Any]] = []
    with Daemon(tmp_path / "d", "--config", str(config)) as d:
        sent, rows = events("json")
        answer = d.post("/v1/events", json.dumps(sent).encode())[:2]
        assert answer == (202, {"accepted": len(SEVERITIES)})
        expected += rows
        sent, rows = events("ndjson")
        status, body, _ = d.post("/v1/events", ndjson(sent), "application/x-ndjson")
        assert (status, body) == (202, {"accepted": len(SEVERITIES)})
        expected += rows

        sent, rows = events("tcp")
        bad = b'{"service": "syslog", "severity": "loud"}\n'
        head = ndjson(sent[:5])
        with socket.create_connection(("127.0.0.1", d.tcp_ports[1]), timeout=30) as sock:
            sock.sendall(head + bad + ndjson(sent[5:]))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        expected += rows

        def accepted() -> float:
            return d.metric("ingestion_events_accepted_total", stream="events", source="tcp")

        wait_for(lambda: accepted() == len(SEVERITIES), what="tcp events accepted")
        rejected = ("ingestion_events_rejected_total", "events", "tcp", "validation")
        assert d.metric(rejected[0], stream=rejected[1], source=rejected[2], reason=rejected[3])
        logged = [e for e in d.log_events() if e.get("event") == "tcp_malformed_line"]
        assert [(e["line"], e["byte_offset"]) for e in logged] == [(6, len(head))]
        assert "got `loud` - at `$.severity`" in logged[0]["error"]
        assert d.stop() == 0

    assert sorted_rows(read_store(d.store_dir, "events")) == sorted(
        expected, key=lambda r: r["trace_id"]
    )


def test_unit_mistakes_and_double_timestamps_are_400s(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        status, body, _ = d.post("/v1/facts", b'[{"service":"a","timestamp_unix_nano":1700000000}]')
        assert (status, body["reason"]) == (400, "validation")
        assert "which looks like seconds" in body["error"]
        assert body["error"].endswith("- at `$[0].timestamp_unix_nano`")
        both = (
            b'{"service":"a","timestamp":"2026-12-01T07:40:00Z",'
            b'"timestamp_unix_nano":"1790000000000000000"}'
        )
        status, body, _ = d.post("/v1/facts", both)
        assert (status, body["error"]) == (
            400,
            "Expected `timestamp` or `timestamp_unix_nano`, got both - at `$.timestamp`",
        )
