"""A real OpenTelemetry Collector ships to a real gravixd with deploy/otelcol/otelcol.yaml, the
configuration docs/shippers.md shows, and the OpenTelemetry SDK's JSON exporter talks to
gravixd's OTLP JSON directly.

The Collector is built from deploy/otelcol/builder-config.yaml by scripts/build-otelcol
(cached; scripts/install-tools runs it, and so does this module, which then costs nothing).
Each Collector test restarts gravixd while records are still flowing and then polls the
store until every record is there: the exporter's queue and retries must carry them across
the restart, and each must be stored exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daemon import Daemon, free_port
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonLogs
from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter as JsonSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from shipping import assert_once, paced, restart_when, restartable_gravixd, stored_rows, wait_stored

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "otelcol" / "otelcol.yaml"
DOCS = ROOT / "docs" / "shippers.md"
# Records sent through the Collector while gravixd restarts, 25 at a time every 50 ms.
STREAMED = 500


def otelcol_binary() -> Path:
    """The Collector of deploy/otelcol/builder-config.yaml (built once, then cached)."""
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-otelcol")], capture_output=True, text=True
    )
    assert build.returncode == 0, (
        "scripts/build-otelcol failed (it needs Go; scripts/install-tools runs it):\n"
        + build.stderr[-3000:]
    )
    return Path(build.stdout.strip())


def test_the_docs_show_the_tested_collector_configuration() -> None:
    """docs/shippers.md's Collector block is deploy/otelcol/otelcol.yaml, byte for byte."""
    match = re.search(r"<!-- recipe: otelcol -->\n```yaml\n(.*?)```", DOCS.read_text(), re.S)
    assert match, "docs/shippers.md has no `otelcol` recipe block"
    assert match.group(1) == CONFIG.read_text()


@contextmanager
def collector(tmp_path: Path, gravixd: Daemon, log_dir: Path) -> Iterator[int]:
    """The Collector with the repository's configuration, sending to `gravixd`; yields its
    OTLP/HTTP port. Stopped by the PID started here."""
    otlp_port = free_port()
    config = CONFIG.read_text()
    for old, new in {
        "127.0.0.1:4318": f"127.0.0.1:{otlp_port}",
        "port: 8888": f"port: {free_port()}",
        "/var/log/myapp": str(log_dir),
        "http://127.0.0.1:8088": f"http://127.0.0.1:{gravixd.http_port}",
    }.items():
        assert old in config, f"expected `{old}` in {CONFIG}"
        config = config.replace(old, new)
    path = tmp_path / "otelcol.yaml"
    path.write_text(config)
    log_path = tmp_path / "otelcol.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(otelcol_binary()), "--config", str(path)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"the Collector exited:\n{log_path.read_text()[-3000:]}"
            try:
                socket.create_connection(("127.0.0.1", otlp_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.1)
        yield otlp_port
        assert proc.poll() is None, f"the Collector exited:\n{log_path.read_text()[-3000:]}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def accepted(d: Daemon, stream: str) -> float:
    return d.metric("ingestion_events_accepted_total", stream=stream, source="otlp")


def test_sdk_to_collector_to_gravixd_across_a_gravixd_restart(tmp_path: Path) -> None:
    """The common production path: the SDK's batch processors export SERVER spans and log
    records to the Collector (otlp receiver, batch processor), which sends them on with the
    otlphttp exporter. gravixd restarts mid-stream; every span and record is stored once."""
    resource = Resource.create({"service.name": "checkout"})
    with (
        restartable_gravixd(tmp_path / "gravixd") as d,
        collector(tmp_path, d, tmp_path / "no-files") as port,
    ):
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"),
                schedule_delay_millis=200,
            )
        )
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs"),
                schedule_delay_millis=200,
            )
        )
        tracer = tracer_provider.get_tracer("test.otelcol")
        logger = logger_provider.get_logger("test.otelcol")

        def send(numbers: list[int]) -> None:
            for n in numbers:
                attributes: dict[str, str | int] = {
                    "http.route": f"/orders/{n}",
                    "http.response.status_code": 200,
                }
                tracer.start_span(
                    f"GET /orders/{n}", kind=SpanKind.SERVER, attributes=attributes
                ).end()
                logger.emit(severity_number=SeverityNumber.WARN, body=f"order {n} is late")

        numbers = list(range(STREAMED))
        with paced(send, numbers, every=25, pause=0.05):
            restart_when(d, lambda: accepted(d, "facts") >= 50, "50 spans through the Collector")
        assert tracer_provider.force_flush(30_000) and logger_provider.force_flush(30_000)
        routes = [f"/orders/{n}" for n in numbers]
        messages = [f"order {n} is late" for n in numbers]
        wait_stored(d, "facts", "route", routes)
        wait_stored(d, "events", "message", messages)
        tracer_provider.shutdown()
        logger_provider.shutdown()
        assert d.stop() == 0
    facts, events = stored_rows(d, "facts"), stored_rows(d, "events")
    assert_once(facts, "route", routes)
    assert_once(events, "message", messages)
    assert {(row["service"], row["method"], row["status_code"]) for row in facts} == {
        ("checkout", "", 200)
    }
    assert {(row["service"], row["severity"]) for row in events} == {("checkout", "WARN")}


def test_file_tailed_by_the_collector_lands_as_events_across_a_gravixd_restart(
    tmp_path: Path,
) -> None:
    """A JSON-lines log file tailed by the filelog receiver: its time, level, service and
    message become the event's. gravixd restarts while the file grows; every line is stored
    once."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    log_file = log_dir / "app.json"
    log_file.touch()
    levels = ("info", "warn", "error", "debug")
    stored_level = {"info": "INFO", "warn": "WARN", "error": "ERROR", "debug": "DEBUG"}
    base = dt.datetime(2026, 12, 1, 7, 40, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    lines: list[dict[str, Any]] = [
        {
            "time": (base + dt.timedelta(seconds=n, microseconds=n)).isoformat(),
            "level": levels[n % 4],
            "service": f"svc{n % 3}",
            "msg": f"file line {n}",
        }
        for n in range(STREAMED)
    ]
    with restartable_gravixd(tmp_path / "gravixd") as d, collector(tmp_path, d, log_dir):

        def append(chunk: list[dict[str, Any]]) -> None:
            with open(log_file, "a") as f:
                f.write("".join(json.dumps(line) + "\n" for line in chunk))

        with paced(append, lines, every=25, pause=0.05):
            restart_when(d, lambda: accepted(d, "events") >= 50, "50 lines through the Collector")
        messages = [line["msg"] for line in lines]
        wait_stored(d, "events", "message", messages)
        assert d.stop() == 0
    rows = stored_rows(d, "events")
    assert_once(rows, "message", messages)
    by_message = {row["message"]: row for row in rows}
    for line in lines:
        row = by_message[line["msg"]]
        assert (row["service"], row["severity"], row["kind"]) == (
            line["service"],
            stored_level[line["level"]],
            "log",
        ), row
        when = dt.datetime.fromisoformat(line["time"]) - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
        assert row["timestamp"] == when // dt.timedelta(microseconds=1) * 1000, (row, line)


def test_the_sdk_json_exporter_reaches_gravixd_otlp_json(tmp_path: Path) -> None:
    """The SDK's OTLP/HTTP JSON exporters (opentelemetry-exporter-otlp-json-http) against
    gravixd's OTLP JSON: a SERVER span and a log record are stored as the mapping says."""
    resource = Resource.create({"service.name": "billing"})
    with Daemon(tmp_path) as d:
        base = f"http://127.0.0.1:{d.http_port}"
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(
            SimpleSpanProcessor(JsonSpans(endpoint=f"{base}/v1/traces"))
        )
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(JsonLogs(endpoint=f"{base}/v1/logs"))
        )
        span = tracer_provider.get_tracer("test.json").start_span(
            "POST /pay",
            kind=SpanKind.SERVER,
            start_time=1_764_000_000_000_000_000,
            attributes={
                "http.route": "/pay",
                "http.request.method": "POST",
                "http.response.status_code": 402,
            },
        )
        span.end(end_time=1_764_000_000_000_000_000 + 3_000_000)
        logger_provider.get_logger("test.json").emit(
            timestamp=1_764_000_000_000_000_001,
            severity_number=SeverityNumber.ERROR,
            body="card declined",
        )
        # Simple processors: each call returned after gravixd's answer.
        for endpoint in ("/v1/traces", "/v1/logs"):
            assert d.metric("ingestion_requests_total", endpoint=endpoint, code="200") == 1
        tracer_provider.shutdown()
        logger_provider.shutdown()
        assert d.stop() == 0
    (fact,) = stored_rows(d, "facts")
    assert (fact["service"], fact["route"], fact["method"], fact["status_code"]) == (
        "billing",
        "/pay",
        "POST",
        402,
    )
    assert fact["duration_ms"] == 3.0
    assert fact["trace_id"] == format(span.get_span_context().trace_id, "032x")
    (event,) = stored_rows(d, "events")
    assert (event["service"], event["severity"], event["message"]) == (
        "billing",
        "ERROR",
        "card declined",
    )
