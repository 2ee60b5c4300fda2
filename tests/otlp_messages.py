"""Builders of OTLP export requests for tests, in both OTLP/HTTP encodings.

`to_otlp_json` writes OTLP's JSON encoding as an OpenTelemetry exporter does: proto3 JSON
with camelCase keys, 64-bit integers as strings, enums as numbers, and (OTLP's deviation)
trace and span ids in hex rather than base64.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

TRACE_ID = bytes.fromhex("5B8EFFF798038103D269B633813FC60C")
SPAN_ID = bytes.fromhex("EEE19B7EC3C1B174")
START = 1_700_000_000_123_456_789
SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SpanKind.SPAN_KIND_CLIENT
INTERNAL = trace_pb2.Span.SpanKind.SPAN_KIND_INTERNAL


def value(v: Any) -> common_pb2.AnyValue:
    """A Python value as an AnyValue (str, bool, int, float, bytes, list, dict, None)."""
    if v is None:
        return common_pb2.AnyValue()
    if isinstance(v, bool):
        return common_pb2.AnyValue(bool_value=v)
    if isinstance(v, int):
        return common_pb2.AnyValue(int_value=v)
    if isinstance(v, float):
        return common_pb2.AnyValue(double_value=v)
    if isinstance(v, str):
        return common_pb2.AnyValue(string_value=v)
    if isinstance(v, bytes):
        return common_pb2.AnyValue(bytes_value=v)
    if isinstance(v, list):
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=[value(x) for x in v]))
    if isinstance(v, dict):
        return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=key_values(v)))
    raise TypeError(v)


def key_values(attributes: dict[str, Any]) -> list[common_pb2.KeyValue]:
    return [common_pb2.KeyValue(key=k, value=value(v)) for k, v in attributes.items()]


def resource(attributes: dict[str, Any]) -> resource_pb2.Resource:
    return resource_pb2.Resource(attributes=key_values(attributes))


def span(
    *,
    name: str = "GET /users/{id}",
    kind: int = SERVER,
    trace_id: bytes = TRACE_ID,
    start: int = START,
    duration_nano: int = 12_500_000,
    end: int | None = None,
    attributes: dict[str, Any] | None = None,
) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=SPAN_ID,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_nano if end is None else end,
        attributes=key_values(attributes or {}),
    )


def traces_request(
    spans: list[trace_pb2.Span], resource_attributes: dict[str, Any] | None = None
) -> trace_service_pb2.ExportTraceServiceRequest:
    attributes = (
        {"service.name": "checkout"} if resource_attributes is None else resource_attributes
    )
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource(attributes),
                scope_spans=[trace_pb2.ScopeSpans(spans=spans)],
            )
        ]
    )


def log_record(
    *,
    body: Any = "payment declined",
    time: int = START,
    observed: int = 0,
    severity_number: int = 0,
    severity_text: str = "",
    event_name: str = "",
    trace_id: bytes = b"",
    attributes: dict[str, Any] | None = None,
) -> logs_pb2.LogRecord:
    record = logs_pb2.LogRecord(
        time_unix_nano=time,
        observed_time_unix_nano=observed,
        severity_number=severity_number,  # type: ignore[arg-type]
        severity_text=severity_text,
        event_name=event_name,
        trace_id=trace_id,
        attributes=key_values(attributes or {}),
    )
    if body is not None:
        record.body.CopyFrom(value(body))
    return record


def logs_request(
    records: list[logs_pb2.LogRecord], resource_attributes: dict[str, Any] | None = None
) -> logs_service_pb2.ExportLogsServiceRequest:
    attributes = (
        {"service.name": "checkout"} if resource_attributes is None else resource_attributes
    )
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource(attributes),
                scope_logs=[logs_pb2.ScopeLogs(log_records=records)],
            )
        ]
    )


_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def to_otlp_json(message: Any) -> bytes:
    """OTLP's JSON encoding of `message` (ids in hex, enums as numbers)."""
    document = json_format.MessageToDict(message, use_integers_for_enums=True)
    _ids_to_hex(document)
    return json.dumps(document).encode()


def _ids_to_hex(node: Any) -> None:
    if isinstance(node, dict):
        for key, item in node.items():
            if key in _ID_FIELDS and isinstance(item, str):
                node[key] = base64.b64decode(item).hex().upper()  # case-insensitive hex
            else:
                _ids_to_hex(item)
    elif isinstance(node, list):
        for item in node:
            _ids_to_hex(item)
