"""`gravixd emit` against a real daemon: what it reports acknowledged (HTTP) or sent (raw TCP)
is exactly what lands in the store, in every wire form; `--file`/stdin events land as given.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from daemon import Daemon, column, read_store, sorted_rows, wait_for

from gravixd.eventgen import EventGenerator

CONFIG = """
[[tcp_listeners]]
listen = "127.0.0.1:0"
stream = "facts"
framing = "protobuf"

[[tcp_listeners]]
listen = "127.0.0.1:0"
stream = "events"
framing = "protobuf"
"""


def emit(*args: str, stdin: bytes | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "gravixd", "emit", *args, "--json"],
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode() + proc.stdout.decode()
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Any:
    workdir = tmp_path_factory.mktemp("emit")
    config = workdir / "gravixd.toml"
    config.write_text(CONFIG)
    with Daemon(
        workdir / "d", "--config", str(config), "--segment-max-age-seconds", "1"
    ) as running:
        yield running


HTTP_CASES = [
    ("facts", "json", False),
    ("facts", "ndjson", True),
    ("facts", "protobuf", False),
    ("events", "json", True),
    ("events", "protobuf", True),
]


def test_emit_reports_match_the_store(daemon: Daemon, tmp_path: Path) -> None:
    """One daemon, every wire form; after SIGTERM the store holds exactly what emit
    reported acknowledged (HTTP) and sent (TCP), each trace id once."""
    url = f"http://127.0.0.1:{daemon.http_port}"
    nd_facts, pb_facts, pb_events = daemon.tcp_ports
    expected = {"facts": 0, "events": 0}
    reports = []
    for stream, wire, gz in HTTP_CASES:
        args = ["--url", url, "--stream", stream, "--format", wire, "--count", "2345"]
        args += ["--batch-size", "200", "--concurrency", "3"] + (["--gzip"] if gz else [])
        report = emit(*args)
        assert report["sent"] == 2345 and report["acknowledged"] == 2345
        assert report["failed"] == 0 and report["requests_ok"] == 12
        assert report["status_codes"] == {"202": 12}
        expected[stream] += report["acknowledged"]
        reports.append(report)
    for stream, framing, port in (
        ("facts", "ndjson", nd_facts),
        ("facts", "protobuf", pb_facts),
        ("events", "protobuf", pb_events),
    ):
        report = emit(
            "--tcp", f"127.0.0.1:{port}", "--stream", stream, "--framing", framing,
            "--count", "3001", "--batch-size", "250", "--concurrency", "4",
        )  # fmt: skip
        assert report["transport"] == "tcp" and report["acknowledged"] is None
        assert report["sent"] == 3001 and report["failed"] == 0
        expected[stream] += report["sent"]
        reports.append(report)
    for report in reports:
        assert report["events_per_second"] > 0
        latency = report["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]

    # TCP has no ack: emit waits for gravixd to close each connection, which it does after
    # ingesting; the metric confirms before the daemon seals and uploads on SIGTERM.
    def accepted(stream: str) -> float:
        return sum(
            daemon.metric("ingestion_events_accepted_total", stream=stream, source=source)
            for source in ("http", "tcp")
        )

    wait_for(lambda: accepted("facts") == expected["facts"], what="facts accepted")
    wait_for(lambda: accepted("events") == expected["events"], what="events accepted")
    assert daemon.stop() == 0
    for stream in ("facts", "events"):
        trace_ids = column(read_store(daemon.store_dir, stream), "trace_id")
        assert len(trace_ids) == expected[stream]
        assert len(set(trace_ids)) == len(trace_ids)  # a unique trace id each


def test_emit_file_and_stdin(tmp_path: Path) -> None:
    items = EventGenerator("events", 7).generate(1500, 1_800_000_000_000_000_000)
    lines = [msgspec.json.encode(item) for item in items]
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines[:1000]) + b"\n\n")
    with Daemon(tmp_path / "d") as daemon:
        url = f"http://127.0.0.1:{daemon.http_port}"
        a = emit("--url", url, "--stream", "events", "--file", str(path), "--batch-size", "64")
        b = emit(
            "--url", url, "--stream", "events", "--file", "-", "--format", "protobuf",
            stdin=b"\n".join(lines[1000:]),
        )  # fmt: skip
        assert (a["acknowledged"], b["acknowledged"]) == (1000, 500)
        wait_for(
            lambda: (
                daemon.metric("ingestion_events_accepted_total", stream="events", source="http")
                == 1500
            )
        )
        assert daemon.stop() == 0
    table = read_store(daemon.store_dir, "events")
    assert sorted(column(table, "trace_id")) == sorted(i["trace_id"] for i in items)
    assert sorted(column(table, "message")) == sorted(i["message"] for i in items)


def test_emit_duration_and_rate(tmp_path: Path) -> None:
    with Daemon(tmp_path / "d") as daemon:
        url = f"http://127.0.0.1:{daemon.http_port}"
        paced = emit("--url", url, "--count", "300", "--rate", "1000", "--batch-size", "50")
        # 300 events at 1000/s: the last batch leaves at 0.25 s.
        assert paced["acknowledged"] == 300 and paced["elapsed_seconds"] >= 0.24
        timed = emit("--url", url, "--duration", "0.5", "--rate", "2000", "--batch-size", "100")
        assert 500 <= timed["acknowledged"] <= 1100
        assert timed["failed"] == 0


def test_emit_protobuf_from_a_file_takes_what_json_takes(tmp_path: Path) -> None:
    """A file gravixd accepts as JSON stores the same rows when emit sends it as protobuf:
    syslog severity names, an RFC 3339 `timestamp`, nulls and decimal strings (DESIGN.md
    section 2) are converted, not refused ("unknown enum label SEVERITY_WARNING") or
    dropped (the timestamp)."""
    lines = [
        {"service": "sys", "severity": "warning", "message": "w", "trace_id": "1",
         "timestamp": "2026-12-01T07:40:00.123456789+02:00"},
        {"service": "sys", "severity": "err", "message": "e", "trace_id": "2", "kind": None,
         "timestamp_unix_nano": "1800000000000000001"},
        {"service": "sys", "severity": 3, "message": "n", "trace_id": "3"},
    ]  # fmt: skip
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with Daemon(tmp_path / "d") as daemon:
        url = f"http://127.0.0.1:{daemon.http_port}"
        for wire in ("ndjson", "protobuf"):
            report = emit("--url", url, "--stream", "events", "--file", str(path), "--format", wire)
            assert report["acknowledged"] == 3 and report["failed"] == 0, report
        assert daemon.stop() == 0
    stored = [
        (row["trace_id"], row["severity"], row["timestamp"] if row["trace_id"] != "3" else 0)
        for row in sorted_rows(read_store(daemon.store_dir, "events"))
    ]
    assert stored == [
        ("1", "WARN", 1_796_103_600_123_456_789), ("1", "WARN", 1_796_103_600_123_456_789),
        ("2", "ERROR", 1_800_000_000_000_000_001), ("2", "ERROR", 1_800_000_000_000_000_001),
        ("3", "WARN", 0), ("3", "WARN", 0),
    ]  # fmt: skip


def test_emit_names_a_bad_field_value_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_text('{"service": "sys", "severity": "loud"}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "gravixd", "emit", "--url", "http://127.0.0.1:9",
         "--stream", "events", "--file", str(path), "--format", "protobuf", "--json"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    report = json.loads(proc.stdout)
    (error,) = report["errors"]
    assert error.startswith("could not encode a batch: Expected a severity number or name")


def test_emit_over_tcp_in_the_wrong_framing_points_at_the_rejection_metric(
    tmp_path: Path,
) -> None:
    """protobuf frames sent to the ndjson listener are all rejected by gravixd, yet raw TCP
    cannot tell the sender: the report says so and names the metric that shows them."""
    with Daemon(tmp_path / "d") as daemon:
        _wrong_framing_is_reported(daemon)


def _wrong_framing_is_reported(daemon: Daemon) -> None:
    nd_facts = daemon.tcp_ports[0]
    proc = subprocess.run(
        [sys.executable, "-m", "gravixd", "emit", "--tcp", f"127.0.0.1:{nd_facts}"]
        + ["--framing", "protobuf", "--count", "20", "--batch-size", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "counted as sent, not as accepted" in proc.stdout
    assert 'ingestion_events_rejected_total{source="tcp"}' in proc.stdout

    def rejected() -> float:
        return sum(
            value
            for (name, labels), value in daemon.metrics().items()
            if name == "ingestion_events_rejected_total" and dict(labels).get("source") == "tcp"
        )

    wait_for(lambda: rejected() > 0, timeout=30)  # what the note tells the user to check
