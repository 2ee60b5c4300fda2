"""OTLP/HTTP against a real daemon, with the real OpenTelemetry Python SDK and its OTLP/HTTP
exporters as the client: spans and log records emitted by the SDK land in the store as the
mapping says (DESIGN.md section 2), field by field, read back from the Arrow objects after
the SIGTERM drain. Also, with raw HTTP: OTLP JSON, gzip, partial_success, bad payloads (400
with a google.rpc.Status), auth (401) and the endpoint label of the metrics."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon, read_store, sorted_rows
from google.rpc import status_pb2
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context
from otlp_messages import CLIENT, log_record, logs_request, span, to_otlp_json, traces_request

START = 1_764_000_000_123_456_789


def sdk_resource() -> Resource:
    return Resource.create({"service.name": "checkout", "deployment.environment": "test"})


def test_sdk_spans_and_logs_land_as_the_mapping_says(tmp_path: Path) -> None:
    resource = sdk_resource()
    # The SDK's own resource attributes (telemetry.sdk.*, service.instance.id) land too.
    from_resource = {k: str(v) for k, v in resource.attributes.items() if k != "service.name"}
    assert {"telemetry.sdk.language", "deployment.environment"} <= from_resource.keys()

    def attributes(own: dict[str, str]) -> list[tuple[str, str]]:
        return sorted({**from_resource, **own}.items())

    with Daemon(tmp_path) as d:
        base = f"http://127.0.0.1:{d.http_port}"
        # Simple processors export on span end / emit, one request each: when the call
        # returns, the daemon has answered (200 only once durable).
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        )
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(
                OTLPLogExporter(endpoint=f"{base}/v1/logs", compression=Compression.Gzip)
            )
        )
        tracer = tracer_provider.get_tracer("test.otlp")
        logger = logger_provider.get_logger("test.otlp")

        server = tracer.start_span(
            "POST /users/{id}",
            kind=SpanKind.SERVER,
            start_time=START,
            attributes={
                "http.route": "/users/{id}",
                "http.request.method": "POST",
                "http.response.status_code": 201,
                "http.request.body.size": 123,
                "http.response.body.size": 4567,
                "url.path": "/users/42",
                "retry": True,
                "ratio": 0.25,
                "tags": ["a", "b"],
                "deployment.environment": "canary",  # the span's wins over the resource's
            },
        )
        context = set_span_in_context(server)
        tracer.start_span("SELECT users", kind=SpanKind.CLIENT, context=context).end()
        tracer.start_span("render", context=context).end()  # INTERNAL
        logger.emit(
            timestamp=START + 1_000,
            context=context,
            severity_number=SeverityNumber.ERROR,
            severity_text="ERROR",
            body="payment declined",
            event_name="payment.declined",
            attributes={"order.id": 42, "amount": 9.5},
        )
        logger.emit(
            timestamp=START + 2_000,
            severity_number=SeverityNumber.WARN2,
            body={"disk": "/var", "free_bytes": 1024},
        )
        logger.emit(severity_text="notice", body="no time, no number")
        server.end(end_time=START + 12_500_000)
        old = tracer.start_span(
            "GET /legacy",
            kind=SpanKind.SERVER,
            start_time=START + 3_000,
            attributes={"http.method": "GET", "http.status_code": 404},
        )
        old.end(end_time=START + 3_000 + 1_000_000)
        trace_id = format(server.get_span_context().trace_id, "032x")
        old_trace_id = format(old.get_span_context().trace_id, "032x")

        assert d.metric("ingestion_requests_total", endpoint="/v1/traces", code="200") == 4
        assert d.metric("ingestion_requests_total", endpoint="/v1/logs", code="200") == 3
        assert d.metric("otlp_spans_ignored_total", kind="client") == 1
        assert d.metric("otlp_spans_ignored_total", kind="internal") == 1
        tracer_provider.shutdown()
        logger_provider.shutdown()
        before_stop = time.time_ns()
        assert d.metric("ingestion_events_accepted_total", stream="facts", source="otlp") == 2
        assert d.stop() == 0

    facts = sorted_rows(read_store(d.store_dir, "facts"), key="timestamp")
    assert facts == [
        {
            "timestamp": START,
            "service": "checkout",
            "route": "/users/{id}",
            "method": "POST",
            "status_code": 201,
            "duration_ms": 12.5,
            "bytes_in": 123,
            "bytes_out": 4567,
            "trace_id": trace_id,
            "attributes": attributes(
                {
                    "deployment.environment": "canary",
                    "ratio": "0.25",
                    "retry": "true",
                    "tags": '["a","b"]',
                    "url.path": "/users/42",
                }
            ),
        },
        {
            "timestamp": START + 3_000,
            "service": "checkout",
            "route": "GET /legacy",  # no http.route: the span name
            "method": "GET",
            "status_code": 404,
            "duration_ms": 1.0,
            "bytes_in": 0,
            "bytes_out": 0,
            "trace_id": old_trace_id,
            "attributes": attributes({}),
        },
    ]

    events = sorted_rows(read_store(d.store_dir, "events"), key="timestamp")
    untimed = events.pop()  # observed time only (the SDK sets it at emit)
    assert untimed["timestamp"] <= before_stop
    assert (untimed["kind"], untimed["severity"], untimed["message"]) == (
        "log",
        "INFO",
        "no time, no number",
    )
    assert events == [
        {
            "timestamp": START + 1_000,
            "service": "checkout",
            "kind": "payment.declined",
            "severity": "ERROR",
            "message": "payment declined",
            "trace_id": trace_id,
            "attributes": attributes({"amount": "9.5", "order.id": "42"}),
        },
        {
            "timestamp": START + 2_000,
            "service": "checkout",
            "kind": "log",
            "severity": "WARN",
            "message": '{"disk":"/var","free_bytes":1024}',
            "trace_id": "",
            "attributes": attributes({}),
        },
    ]


def post(d: Daemon, path: str, body: bytes, content_type: str, **headers: str) -> Any:
    conn = d.connection()
    try:
        conn.request("POST", path, body, {"Content-Type": content_type, **headers})
        response = conn.getresponse()
        return response.status, response.getheader("content-type"), response.read()
    finally:
        conn.close()


def test_json_gzip_partial_success_and_bad_payloads(tmp_path: Path) -> None:
    good, bad = span(name="good"), span(name="bad", trace_id=b"")
    with Daemon(tmp_path) as d:
        # OTLP JSON in, OTLP JSON out; one span rejected, the other stored.
        status, content_type, body = post(
            d, "/v1/traces", to_otlp_json(traces_request([good, bad])), "application/json"
        )
        assert (status, content_type) == (200, "application/json")
        answer = json.loads(body)
        assert answer["partialSuccess"]["rejectedSpans"] == "1"
        assert answer["partialSuccess"]["errorMessage"] == (
            "1 spans rejected: Expected a 16-byte trace_id, not all zeros, got 0 bytes"
            " - at `$.resourceSpans[0].scopeSpans[0].spans[1]`"
        )

        # A client span (the SDK's default kind is INTERNAL) is not stored; the answer says so.
        status, _, body = post(
            d, "/v1/traces", to_otlp_json(traces_request([span(kind=CLIENT)])), "application/json"
        )
        assert status == 200
        warning = json.loads(body)["partialSuccess"]
        assert "rejectedSpans" not in warning  # 0: a warning, not a rejection
        assert warning["errorMessage"].startswith("1 spans ignored, not stored: only spans of kind")

        # gzip'd protobuf: full success is an empty ExportLogsServiceResponse.
        logs = logs_request([log_record(body="zipped", severity_number=9)])
        status, content_type, body = post(
            d,
            "/v1/logs",
            gzip.compress(logs.SerializeToString()),
            "application/x-protobuf",
            **{"Content-Encoding": "gzip"},
        )
        assert (status, content_type) == (200, "application/x-protobuf")
        response = logs_service_pb2.ExportLogsServiceResponse.FromString(body)
        assert not response.HasField("partial_success")

        # Bad payloads: 400 with a google.rpc.Status in the request's encoding.
        status, content_type, body = post(d, "/v1/traces", b"\xff\xff", "application/x-protobuf")
        assert (status, content_type) == (400, "application/x-protobuf")
        message = status_pb2.Status.FromString(body).message
        assert message.startswith(
            "Expected a protobuf `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`"
            ", got 2 bytes that do not parse"
        )
        status, content_type, body = post(
            d,
            "/v1/logs",
            b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}',
            "application/json",
        )
        assert (status, content_type) == (400, "application/json")
        assert json.loads(body)["message"].endswith(
            "got `str` 'zz' - at `$.resourceLogs[0].scopeLogs[0].logRecords[0].traceId`"
        )
        # OTLP has no NDJSON: 415 naming the two it has.
        status, _, body = post(d, "/v1/logs", b"{}\n", "application/x-ndjson")
        assert status == 415
        assert status_pb2.Status.FromString(body).message == (
            "Expected Content-Type application/json, application/protobuf, "
            "application/x-protobuf, got 'application/x-ndjson'"
        )

        assert d.metric("ingestion_requests_total", endpoint="/v1/traces", code="200") == 2
        assert d.metric("ingestion_requests_total", endpoint="/v1/traces", code="400") == 1
        assert d.metric("ingestion_requests_total", endpoint="/v1/logs", code="400") == 1
        assert d.metric("ingestion_requests_total", endpoint="/v1/logs", code="415") == 1
        rejected = {"stream": "facts", "source": "otlp"}
        assert (
            d.metric("ingestion_events_rejected_total", **rejected, reason="invalid_trace_id") == 1
        )
        assert (
            d.metric("ingestion_events_rejected_total", **rejected, reason="invalid_protobuf") == 1
        )
        assert d.stop() == 0
    assert [r["route"] for r in sorted_rows(read_store(d.store_dir, "facts"))] == ["good"]
    assert [r["message"] for r in sorted_rows(read_store(d.store_dir, "events"))] == ["zipped"]


def test_auth_the_sdk_exporter_is_refused_without_its_token(tmp_path: Path) -> None:
    request = traces_request([span(name="authorized")])
    with Daemon(tmp_path, "--auth-tokens=otel-token") as d:
        endpoint = f"http://127.0.0.1:{d.http_port}/v1/traces"
        status, _, body = post(
            d, "/v1/traces", request.SerializeToString(), "application/x-protobuf"
        )
        assert status == 401
        assert status_pb2.Status.FromString(body).message == (
            "Expected Authorization: Bearer <token>, got no Authorization header"
        )
        tracer_provider = TracerProvider(resource=sdk_resource())
        wrong = OTLPSpanExporter(endpoint=endpoint, headers={"Authorization": "Bearer nope"})
        right = OTLPSpanExporter(endpoint=endpoint, headers={"Authorization": "Bearer otel-token"})
        tracer_provider.add_span_processor(SimpleSpanProcessor(wrong))
        tracer_provider.add_span_processor(SimpleSpanProcessor(right))
        tracer_provider.get_tracer("t").start_span("GET /", kind=SpanKind.SERVER).end()
        tracer_provider.shutdown()
        # 401 is not retryable: one refused request from the wrong exporter, one each time.
        assert d.metric("ingestion_requests_total", endpoint="/v1/traces", code="401") == 2
        assert d.metric("ingestion_requests_total", endpoint="/v1/traces", code="200") == 1
        assert d.stop() == 0
    assert [r["route"] for r in sorted_rows(read_store(d.store_dir, "facts"))] == ["GET /"]


@pytest.mark.parametrize("media_type", ["application/x-protobuf", "application/json"])
def test_empty_export_request_is_a_success(tmp_path: Path, media_type: str) -> None:
    empty = trace_service_pb2.ExportTraceServiceRequest()
    body = empty.SerializeToString() if "protobuf" in media_type else b"{}"
    with Daemon(tmp_path) as d:
        status, content_type, answer = post(d, "/v1/traces", body, media_type)
        assert (status, content_type) == (200, media_type)
        assert answer in (b"", b"{}")


async def test_sdk_exporter_retries_a_503_until_the_spool_has_room(tmp_path: Path) -> None:
    """Full spool: /v1/traces answers 503 + Retry-After (a google.rpc.Status body); the SDK's
    exporter waits and retries, and its export succeeds once uploads catch up."""
    import trio
    from faulty_store import FaultyStore
    from inproc_daemon import running_daemon
    from opentelemetry.sdk.trace.export import SpanExportResult

    from gravixd.stores.local import LocalStore

    store = FaultyStore(LocalStore(tmp_path / "store"))
    settings = {
        "max_spool_bytes": "48KiB",
        "segment_max_events": 20,
        "segment_max_age_seconds": 0.2,
        "upload_retry_initial_seconds": 0.02,
        "upload_retry_max_seconds": 0.2,
    }
    filler = to_otlp_json(traces_request([span(name=f"filler-{i}") for i in range(10)]))
    async with running_daemon(tmp_path, store=store, **settings) as d:
        store.fail_puts()
        for _ in range(2000):  # fill the spool while nothing can be uploaded
            status, body, headers = await d.post("/v1/traces", filler)
            if status == 503:
                break
        assert status == 503
        assert int(headers["retry-after"]) >= 1
        assert "max_spool_bytes" in body["message"]  # a google.rpc.Status, in JSON

        provider = TracerProvider(resource=sdk_resource())
        sent = provider.get_tracer("t").start_span("GET /retried", kind=SpanKind.SERVER)
        sent.end()
        exporter = OTLPSpanExporter(
            endpoint=f"http://127.0.0.1:{d.ports.http}/v1/traces", timeout=60
        )
        shed_before = d.metric("ingestion_requests_total", endpoint="/v1/traces", code="503")
        async with trio.open_nursery() as nursery:
            results: list[SpanExportResult] = []

            async def export() -> None:
                results.append(await trio.to_thread.run_sync(exporter.export, [sent]))

            nursery.start_soon(export)
            with trio.fail_after(30):  # the SDK's first attempt is shed...
                while (
                    d.metric("ingestion_requests_total", endpoint="/v1/traces", code="503")
                    == shed_before
                ):
                    await trio.sleep(0.05)
            store.heal()  # ...and its retry, after Retry-After, finds room
        assert results == [SpanExportResult.SUCCESS]
        exporter.shutdown()
    routes = [r["route"] for r in sorted_rows(read_store(tmp_path / "store", "facts"))]
    assert routes.count("GET /retried") == 1


def _doc_python_blocks(section: str) -> list[str]:
    import re

    text = (Path(__file__).resolve().parents[2] / "docs" / "otlp.md").read_text()
    start = text.index(section + "\n")
    end = text.find("\n## ", start + len(section))
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.DOTALL)


def test_the_docs_sdk_examples_store_a_fact_and_an_event(tmp_path: Path) -> None:
    """docs/otlp.md's Python examples, run as written (only the port differs): the span is
    a SERVER span and lands as a fact, the log record lands as an event."""
    blocks = _doc_python_blocks("## Sending from an OpenTelemetry SDK")
    assert len(blocks) == 2
    with Daemon(tmp_path) as d:
        for code in blocks:
            code = code.replace("127.0.0.1:8088", f"127.0.0.1:{d.http_port}")
            exec(compile(code, "<docs/otlp.md>", "exec"), {})  # noqa: S102 - the docs' example
        assert d.metric("otlp_spans_ignored_total", kind="internal") == 0
        assert d.stop() == 0
    facts = read_store(d.store_dir, "facts").drop_columns(["timestamp"]).to_pylist()
    events = read_store(d.store_dir, "events").drop_columns(["timestamp"]).to_pylist()
    assert [(f["service"], f["route"], f["method"], f["status_code"]) for f in facts] == [
        ("checkout", "/orders/{id}", "POST", 201)
    ]
    assert [(e["service"], e["kind"], e["severity"], e["message"]) for e in events] == [
        ("checkout", "payment.declined", "WARN", "payment declined")
    ]
    assert dict(events[0]["attributes"])["order.id"] == "42"
