"""OTLP -> facts/events mapping (DESIGN.md section 2), field by field, in both OTLP/HTTP
encodings (binary protobuf and OTLP JSON): each case is decoded from both and must land the
same."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from otlp_messages import (
    CLIENT,
    INTERNAL,
    START,
    TRACE_ID,
    log_record,
    logs_request,
    span,
    to_otlp_json,
    traces_request,
)

from gravixd.core import otlp
from gravixd.errors import DecodeError
from gravixd.schema import EVENTS_SCHEMA, FACTS_SCHEMA

NOW = 1_800_000_000_000_000_000
ENCODINGS = ["application/x-protobuf", "application/json"]


def encode(message: Any, media_type: str) -> bytes:
    return message.SerializeToString() if "protobuf" in media_type else to_otlp_json(message)


def decode(signal: otlp.Signal, message: Any, media_type: str) -> otlp.OtlpBatch:
    return otlp.decode_export(signal, media_type, encode(message, media_type), NOW)


def rows(result: otlp.OtlpBatch) -> list[dict[str, Any]]:
    """The batch's rows, timestamps as int nanoseconds and attributes as dicts."""
    batch = result.batch
    nanos = batch.column("timestamp").cast("int64").to_pylist()
    table = batch.drop_columns(["timestamp"]).to_pylist()
    for row, timestamp in zip(table, nanos, strict=True):
        row["attributes"] = dict(row["attributes"])
        row["timestamp"] = timestamp
    return table


def the_row(result: otlp.OtlpBatch) -> dict[str, Any]:
    (row,) = rows(result)
    return row


# --- spans -> facts ---------------------------------------------------------------------------

# (id, span attributes, resource attributes, span kwargs, expected fields of the fact)
SPAN_CASES: list[
    tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any], dict[str, Any]]
] = [
    (
        "current semantic conventions",
        {
            "http.route": "/users/{id}",
            "http.request.method": "POST",
            "http.response.status_code": 201,
            "http.request.body.size": 123,
            "http.response.body.size": 4567,
            "url.path": "/users/42",
        },
        {"service.name": "checkout", "host.name": "web-1"},
        {},
        {
            "service": "checkout",
            "route": "/users/{id}",
            "method": "POST",
            "status_code": 201,
            "duration_ms": 12.5,
            "bytes_in": 123,
            "bytes_out": 4567,
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "timestamp": START,
            "attributes": {"url.path": "/users/42", "host.name": "web-1"},
        },
    ),
    (
        "older semantic conventions",
        {
            "http.method": "GET",
            "http.status_code": 404,
            "http.request_content_length": 10,
            "http.response_content_length": 20,
        },
        None,
        {"name": "GET /missing"},
        {
            "route": "GET /missing",
            "method": "GET",
            "status_code": 404,
            "bytes_in": 10,
            "bytes_out": 20,
            "attributes": {},
        },
    ),
    (
        "current names win over older ones; both are consumed",
        {
            "http.request.method": "PUT",
            "http.method": "GET",
            "http.response.status_code": 200,
            "http.status_code": 500,
            "http.request.body.size": 1,
            "http.request_content_length": 2,
            "http.response.body.size": 3,
            "http.response_content_length": 4,
        },
        None,
        {},
        {"method": "PUT", "status_code": 200, "bytes_in": 1, "bytes_out": 3, "attributes": {}},
    ),
    (
        "no http attributes: route is the span name, the rest defaults",
        {},
        None,
        {"name": "process-order"},
        {"route": "process-order", "method": "", "status_code": 0, "bytes_in": 0, "bytes_out": 0},
    ),
    (
        "no service.name",
        {},
        {"host.name": "web-1"},
        {},
        {"service": "unknown_service", "attributes": {"host.name": "web-1"}},
    ),
    (
        "the span's attribute wins over the resource's of the same key",
        {"deployment.environment": "canary"},
        {"service.name": "checkout", "deployment.environment": "prod", "region": "eu"},
        {},
        {"attributes": {"deployment.environment": "canary", "region": "eu"}},
    ),
    (
        "status code and sizes as decimal strings or integral doubles",
        {"http.response.status_code": "503", "http.request.body.size": 7.0},
        None,
        {},
        {"status_code": 503, "bytes_in": 7},
    ),
    (
        "attribute values as strings, arrays and maps as JSON",
        {
            "s": "text",
            "b": True,
            "f": False,
            "i": -42,
            "d": 0.1,
            "whole": 2.0,
            "big": 1e100,
            "nan": math.nan,
            "inf": -math.inf,
            "bytes": b"\x00\xff",
            "list": ["a", 1, 1.5, True, None, [2]],
            "map": {"k": "v", "n": 3, "inner": {"x": math.inf}},
            "empty": None,
        },
        None,
        {},
        {
            "attributes": {
                "s": "text",
                "b": "true",
                "f": "false",
                "i": "-42",
                "d": "0.1",
                "whole": "2.0",
                "big": "1e+100",
                "nan": "NaN",
                "inf": "-Infinity",
                "bytes": "AP8=",
                "list": '["a",1,1.5,true,null,[2]]',
                "map": '{"k":"v","n":3,"inner":{"x":"Infinity"}}',
                "empty": "",
            }
        },
    ),
    (
        "a zero-length span",
        {},
        None,
        {"duration_nano": 0},
        {"duration_ms": 0.0},
    ),
]


@pytest.mark.parametrize("media_type", ENCODINGS)
@pytest.mark.parametrize(
    ("span_attributes", "resource_attributes", "span_kwargs", "expected"),
    [case[1:] for case in SPAN_CASES],
    ids=[case[0] for case in SPAN_CASES],
)
def test_server_span_becomes_a_fact(
    media_type: str,
    span_attributes: dict[str, Any],
    resource_attributes: dict[str, Any] | None,
    span_kwargs: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    request = traces_request([span(attributes=span_attributes, **span_kwargs)], resource_attributes)
    result = decode(otlp.TRACES, request, media_type)
    assert result.batch.schema == FACTS_SCHEMA
    assert (result.rejected, result.ignored_by_kind) == (0, {})
    row = the_row(result)
    assert {key: row[key] for key in expected} == expected


@pytest.mark.parametrize("media_type", ENCODINGS)
def test_only_server_spans_become_facts_the_others_are_counted(media_type: str) -> None:
    request = traces_request(
        [span(kind=CLIENT), span(name="kept"), span(kind=INTERNAL), span(kind=CLIENT)]
    )
    result = decode(otlp.TRACES, request, media_type)
    assert [row["route"] for row in rows(result)] == ["kept"]
    assert result.ignored_by_kind == {"client": 2, "internal": 1}
    assert result.rejected == 0  # skipped by kind is not a rejection


# (id, span kwargs, reason, message fragment)
REJECTED_SPANS = [
    (
        "no trace id",
        {"trace_id": b""},
        "invalid_trace_id",
        "16-byte trace_id, not all zeros, got 0 bytes",
    ),
    ("short trace id", {"trace_id": b"\x01" * 8}, "invalid_trace_id", "got 8 bytes"),
    ("all-zero trace id", {"trace_id": bytes(16)}, "invalid_trace_id", "got 16 bytes of zeros"),
    (
        "end before start",
        {"end": START - 1},
        "invalid_time",
        f"got start {START} and end {START - 1}",
    ),
    ("no start time", {"start": 0, "end": START}, "invalid_time", "got start 0"),
    (
        "status code not a number",
        {"attributes": {"http.response.status_code": "OK"}},
        "invalid_status_code",
        "Expected `status_code` an integer 0..999, got 'OK'",
    ),
    (
        "status code too large",
        {"attributes": {"http.status_code": 1000}},
        "invalid_status_code",
        "got '1000'",
    ),
    (
        "status code in other digits",
        {"attributes": {"http.response.status_code": "\u0662\u0660\u0660"}},
        "invalid_status_code",
        "got '\u0662\u0660\u0660'",
    ),
    (
        "negative body size",
        {"attributes": {"http.response.body.size": -1}},
        "invalid_bytes_out",
        "Expected `bytes_out` an integer 0..9223372036854775807, got '-1'",
    ),
]


@pytest.mark.parametrize("media_type", ENCODINGS)
@pytest.mark.parametrize(
    ("span_kwargs", "reason", "message"),
    [case[1:] for case in REJECTED_SPANS],
    ids=[case[0] for case in REJECTED_SPANS],
)
def test_span_with_invalid_data_is_rejected_alone(
    media_type: str, span_kwargs: dict[str, Any], reason: str, message: str
) -> None:
    request = traces_request([span(name="good"), span(name="bad", **span_kwargs)])
    result = decode(otlp.TRACES, request, media_type)
    assert [row["route"] for row in rows(result)] == ["good"]
    assert (result.rejected, result.rejected_reasons) == (1, {reason: 1})
    (error,) = result.errors
    assert message in error
    assert error.endswith("- at `$.resourceSpans[0].scopeSpans[0].spans[1]`")


# --- log records -> events --------------------------------------------------------------------

# (id, record kwargs, resource attributes, expected fields of the event)
LOG_CASES: list[tuple[str, dict[str, Any], dict[str, Any] | None, dict[str, Any]]] = [
    (
        "every field",
        {
            "event_name": "payment.declined",
            "severity_number": 17,
            "severity_text": "Error",
            "body": "card expired",
            "trace_id": TRACE_ID,
            "attributes": {"order.id": 42, "event.name": "ignored.when.event_name.is.set"},
        },
        {"service.name": "billing", "host.name": "web-1"},
        {
            "service": "billing",
            "kind": "payment.declined",
            "severity": "ERROR",
            "message": "card expired",
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "timestamp": START,
            "attributes": {"order.id": "42", "host.name": "web-1"},
        },
    ),
    (
        "kind from the event.name attribute",
        {"attributes": {"event.name": "deploy", "version": "1.2"}},
        None,
        {"kind": "deploy", "attributes": {"version": "1.2"}},
    ),
    ("kind defaults to log", {}, None, {"kind": "log", "trace_id": "", "severity": "UNSPECIFIED"}),
    ("no service.name", {}, {}, {"service": "unknown_service"}),
    (
        "time falls back to observed time",
        {"time": 0, "observed": START + 5},
        None,
        {"timestamp": START + 5},
    ),
    ("no time at all is the time of receipt", {"time": 0, "observed": 0}, None, {"timestamp": NOW}),
    ("an int body", {"body": 5}, None, {"message": "5"}),
    (
        "a map body as JSON",
        {"body": {"user": "ann", "tries": 3}},
        None,
        {"message": '{"user":"ann","tries":3}'},
    ),
    ("a list body as JSON", {"body": ["a", False]}, None, {"message": '["a",false]'}),
    ("no body", {"body": None}, None, {"message": ""}),
]


@pytest.mark.parametrize("media_type", ENCODINGS)
@pytest.mark.parametrize(
    ("record_kwargs", "resource_attributes", "expected"),
    [case[1:] for case in LOG_CASES],
    ids=[case[0] for case in LOG_CASES],
)
def test_log_record_becomes_an_event(
    media_type: str,
    record_kwargs: dict[str, Any],
    resource_attributes: dict[str, Any] | None,
    expected: dict[str, Any],
) -> None:
    result = decode(
        otlp.LOGS, logs_request([log_record(**record_kwargs)], resource_attributes), media_type
    )
    assert result.batch.schema == EVENTS_SCHEMA
    assert result.rejected == 0
    row = the_row(result)
    assert {key: row[key] for key in expected} == expected


# severity_number ranges first; 0 (or a number outside 1..24) falls back to the text.
SEVERITIES = [
    *[(n, "", "DEBUG") for n in range(1, 9)],
    *[(n, "", "INFO") for n in range(9, 13)],
    *[(n, "", "WARN") for n in range(13, 17)],
    *[(n, "", "ERROR") for n in range(17, 21)],
    *[(n, "", "FATAL") for n in range(21, 25)],
    (9, "ERROR", "INFO"),  # the number wins
    (0, "", "UNSPECIFIED"),
    (0, "warning", "WARN"),
    (0, "Notice", "INFO"),
    (0, "err", "ERROR"),
    (0, "CRIT", "FATAL"),
    (0, "SEVERITY_DEBUG", "DEBUG"),
    (0, "trace", "DEBUG"),
    (0, "loud", "UNSPECIFIED"),
    (99, "emerg", "FATAL"),
]


@pytest.mark.parametrize(("number", "text", "expected"), SEVERITIES)
def test_severity(number: int, text: str, expected: str) -> None:
    assert otlp.log_severity(number, text) == expected
    record = log_record(severity_number=number, severity_text=text)
    for media_type in ENCODINGS:
        assert (
            the_row(decode(otlp.LOGS, logs_request([record]), media_type))["severity"] == expected
        )


@pytest.mark.parametrize("media_type", ENCODINGS)
def test_log_record_with_a_bad_trace_id_is_rejected_alone(media_type: str) -> None:
    request = logs_request([log_record(body="ok"), log_record(trace_id=b"\x01" * 3)])
    result = decode(otlp.LOGS, request, media_type)
    assert [row["message"] for row in rows(result)] == ["ok"]
    assert result.rejected == 1
    assert result.errors == [
        "Expected a 16-byte trace_id or none, got 3 bytes"
        " - at `$.resourceLogs[0].scopeLogs[0].logRecords[1]`"
    ]


# --- the encodings themselves -----------------------------------------------------------------


def test_otlp_json_as_written_by_hand() -> None:
    """The OTLP spec's own spelling: camelCase, case-insensitive hex ids, int64 strings,
    enum numbers; unknown fields ignored."""
    body = json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]
                    },
                    "scopeSpans": [
                        {
                            "scope": {"name": "manual"},
                            "spans": [
                                {
                                    "traceId": "5B8EFFF798038103D269B633813FC60C",
                                    "spanId": "eee19b7ec3c1b174",
                                    "parentSpanId": "",
                                    "name": "GET /x",
                                    "kind": 2,
                                    "startTimeUnixNano": "1544712660000000000",
                                    "endTimeUnixNano": 1544712661000000000,
                                    "attributes": [
                                        {"key": "http.route", "value": {"stringValue": "/x"}},
                                        {
                                            "key": "http.response.status_code",
                                            "value": {"intValue": "200"},
                                        },
                                    ],
                                    "aFieldFromTheFuture": {"x": 1},
                                }
                            ],
                        }
                    ],
                }
            ]
        }
    ).encode()
    row = the_row(otlp.decode_export(otlp.TRACES, "application/json", body, NOW))
    assert row["service"] == "api"
    assert row["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert (row["route"], row["status_code"], row["duration_ms"]) == ("/x", 200, 1000.0)
    assert row["timestamp"] == 1544712660000000000


SPANS_AT = "$.resourceSpans[0].scopeSpans[0].spans[0]"


def one_span_json(fields: str) -> bytes:
    return b'{"resourceSpans":[{"scopeSpans":[{"spans":[{%s}]}]}]}' % fields.encode()


def test_otlp_json_leniencies_of_proto3_json() -> None:
    """What proto3 JSON readers take beyond OTLP's own spelling: proto field names, enum
    names, null as the default, numbers as strings, non-finite doubles, base64 bytes."""
    body = json.dumps(
        {
            "resource_spans": [
                {
                    "resource": None,
                    "scope_spans": [
                        {
                            "spans": [
                                {
                                    "trace_id": "5b8efff798038103d269b633813fc60c",
                                    "kind": "SPAN_KIND_SERVER",
                                    "name": None,
                                    "start_time_unix_nano": 1544712660000000000,
                                    "end_time_unix_nano": "1544712660001000000",
                                    "attributes": [
                                        {"key": "nan", "value": {"doubleValue": "NaN"}},
                                        {"key": "raw", "value": {"bytesValue": "AP8"}},
                                        {"key": "list", "value": {"arrayValue": {}}},
                                        {"key": "n", "value": {"intValue": 7.0}},
                                    ],
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    ).encode()
    row = the_row(otlp.decode_export(otlp.TRACES, "application/json", body, NOW))
    assert (row["service"], row["route"], row["duration_ms"]) == ("unknown_service", "", 1.0)
    assert row["attributes"] == {"nan": "NaN", "raw": "AP8=", "list": "[]", "n": "7"}


# (id, signal, media type, body, message fragment, reason)
BAD_BODIES = [
    ("garbage protobuf", otlp.TRACES, "application/x-protobuf", b"\xff\xff\xff",
     "Expected a protobuf `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`,"
     " got 3 bytes that do not parse",
     "invalid_protobuf"),
    ("not JSON", otlp.LOGS, "application/json", b"{nope",
     "Expected OTLP JSON `opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest`: ",
     "invalid_json"),
    ("a JSON array", otlp.TRACES, "application/json", b"[]",
     "(an object), got `array` - at `$`", "validation"),
    ("a non-hex trace id", otlp.TRACES, "application/json", one_span_json('"traceId":"xyz"'),
     "Expected a hex string (OTLP JSON encodes ids in hex), got `str` 'xyz'"
     f" - at `{SPANS_AT}.traceId`", "validation"),
    ("a base64 trace id (proto3 JSON, not OTLP)", otlp.TRACES, "application/json",
     one_span_json('"traceId":"W47/95gDgQPSabYzgT/GDA=="'),
     f"got `str` 'W47/95gDgQPSabYzgT/GDA==' - at `{SPANS_AT}.traceId`", "validation"),
    ("a numeric span id in a link", otlp.TRACES, "application/json",
     one_span_json('"links":[{"spanId":12}]'),
     f"got `int` 12 - at `{SPANS_AT}.links[0].spanId`", "validation"),
    ("a bad int64", otlp.TRACES, "application/json", one_span_json('"startTimeUnixNano":"soon"'),
     f"Expected `int` or decimal string, got `str` 'soon' - at `{SPANS_AT}.startTimeUnixNano`",
     "validation"),
    ("a negative uint32", otlp.TRACES, "application/json",
     one_span_json('"droppedAttributesCount":-1'),
     f"Expected a value that fits `uint32`, got `int` -1 - at `{SPANS_AT}.droppedAttributesCount`",
     "validation"),
    ("a number where a string goes", otlp.TRACES, "application/json", one_span_json('"name":5'),
     f"Expected `str`, got `int` 5 - at `{SPANS_AT}.name`", "validation"),
    ("an unknown enum name", otlp.TRACES, "application/json", one_span_json('"kind":"SERVER"'),
     f"Expected an enum number, got `str` 'SERVER' - at `{SPANS_AT}.kind`", "validation"),
    ("bad base64 in bytesValue", otlp.LOGS, "application/json",
     b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"bytesValue":"%%%"}}]}]}]}',
     "Expected a base64 string, got `str` '%%%' - at"
     " `$.resourceLogs[0].scopeLogs[0].logRecords[0].body.bytesValue`", "validation"),
    ("an object where a list goes", otlp.LOGS, "application/json", b'{"resourceLogs":{"x":1}}',
     "Expected an array, got `object` - at `$.resourceLogs`", "validation"),
    ("a list where an object goes", otlp.LOGS, "application/json",
     b'{"resourceLogs":[{"resource":[]}]}',
     "Expected an object, got `array` - at `$.resourceLogs[0].resource`", "validation"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("signal", "media_type", "body", "message", "reason"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
def test_bad_body_is_a_decode_error_saying_expected_got_where(
    signal: otlp.Signal, media_type: str, body: bytes, message: str, reason: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        otlp.decode_export(signal, media_type, body, NOW)
    assert message in caught.value.message
    assert caught.value.reason == reason


@pytest.mark.parametrize("media_type", ENCODINGS)
def test_empty_request_is_an_empty_batch(media_type: str) -> None:
    for signal, request in [
        (otlp.TRACES, trace_service_pb2.ExportTraceServiceRequest()),
        (otlp.LOGS, logs_service_pb2.ExportLogsServiceRequest()),
    ]:
        result = decode(signal, request, media_type)
        assert (result.batch.num_rows, result.rejected) == (0, 0)


# --- answers ----------------------------------------------------------------------------------


def test_full_success_leaves_partial_success_unset() -> None:
    result = otlp.OtlpBatch(
        otlp.TRACES.to_batch(trace_service_pb2.ExportTraceServiceRequest(), 0).batch
    )
    body = otlp.encode_response(otlp.TRACES, "application/x-protobuf", result)
    assert not trace_service_pb2.ExportTraceServiceResponse.FromString(body).HasField(
        "partial_success"
    )
    assert otlp.encode_response(otlp.TRACES, "application/json", result) == b"{}"


def test_partial_success_counts_rejected_records_in_both_encodings() -> None:
    request = logs_request([log_record(trace_id=b"\x01")] * 7 + [log_record()])
    result = decode(otlp.LOGS, request, "application/x-protobuf")
    response = logs_service_pb2.ExportLogsServiceResponse.FromString(
        otlp.encode_response(otlp.LOGS, "application/x-protobuf", result)
    )
    assert response.partial_success.rejected_log_records == 7
    message = response.partial_success.error_message
    assert message.startswith("7 log records rejected: Expected a 16-byte trace_id or none")
    assert message.endswith("; and 2 more")
    assert message.count("- at `$.resourceLogs[0]") == otlp.MAX_ERROR_MESSAGES
    as_json = json.loads(otlp.encode_response(otlp.LOGS, "application/json", result))
    # proto3 JSON: camelCase, int64 as a string.
    assert as_json == {"partialSuccess": {"rejectedLogRecords": "7", "errorMessage": message}}


def test_ignored_spans_are_a_warning_that_says_why_in_both_encodings() -> None:
    """Spans of other kinds are not rejections (rejected_spans stays 0, as OTLP allows for
    warnings), but the answer says how many were not stored and what to change."""
    request = traces_request(
        [span(kind=CLIENT), span(kind=INTERNAL), span(kind=CLIENT), span(name="kept")]
    )
    result = decode(otlp.TRACES, request, "application/x-protobuf")
    assert result.batch.num_rows == 1
    response = trace_service_pb2.ExportTraceServiceResponse.FromString(
        otlp.encode_response(otlp.TRACES, "application/x-protobuf", result)
    )
    assert response.partial_success.rejected_spans == 0
    assert response.partial_success.error_message == (
        "3 spans ignored, not stored: only spans of kind SERVER are request facts "
        "(got client: 2, internal: 1); create the span with kind SERVER to store it"
    )
    as_json = json.loads(otlp.encode_response(otlp.TRACES, "application/json", result))
    assert as_json == {"partialSuccess": {"errorMessage": response.partial_success.error_message}}


def test_error_body_is_a_google_rpc_status_in_the_request_encoding() -> None:
    from google.rpc import status_pb2

    status = status_pb2.Status.FromString(otlp.encode_status("application/x-protobuf", 400, "bad"))
    assert (status.code, status.message) == (3, "bad")
    assert json.loads(otlp.encode_status("application/json", 503, "full")) == {
        "code": 14,
        "message": "full",
    }
    assert otlp.response_content_type("application/json") == b"application/json"
    assert otlp.response_content_type("application/x-protobuf") == b"application/x-protobuf"


def test_otlp_json_reader_agrees_with_protobufs_json_format() -> None:
    """The descriptor-driven reader builds the very message `json_format` builds (once the
    hex ids, OTLP's one deviation from proto3 JSON, are given to it as base64)."""
    from google.protobuf import json_format

    from gravixd.core import otlp_json

    spans = [span(attributes=attrs) for _, attrs, _, _, _ in SPAN_CASES if attrs]
    records = [log_record(**kwargs) for _, kwargs, _, _ in LOG_CASES]
    for message in (traces_request(spans), logs_request(records)):
        ours = type(message)()
        otlp_json.parse(json.loads(to_otlp_json(message)), ours)
        theirs = type(message)()
        json_format.ParseDict(json_format.MessageToDict(message), theirs)
        assert ours == theirs == message


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (lengths here stay below 2**21: 3 varint bytes)."""
    length = len(payload)
    varint = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([number << 3 | 2]) + bytes(varint) + payload


def _log_body_bytes(any_value: bytes) -> bytes:
    """An ExportLogsServiceRequest with one record whose body is `any_value` (raw bytes)."""
    return _field(1, _field(2, _field(2, _field(5, any_value))))


def test_hostile_nesting_is_a_400_in_both_encodings() -> None:
    """Protobuf: upb refuses more than 100 levels of messages. JSON: Python's recursion limit
    decides (a few hundred AnyValue levels), named as nesting too deep."""
    value = _field(1, b"x")  # AnyValue{string_value: "x"}
    for _ in range(200):
        value = _field(5, _field(1, value))  # AnyValue{array_value: {values: [value]}}
    with pytest.raises(DecodeError) as caught:
        otlp.decode_export(otlp.LOGS, "application/x-protobuf", _log_body_bytes(value), NOW)
    assert caught.value.reason == "invalid_protobuf"
    depth = 20_000
    opening, closing = '{"arrayValue":{"values":[', "]}}"
    document = opening * depth + '{"stringValue":"x"}' + closing * depth
    body = '{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + document + "}]}]}]}"
    with pytest.raises(DecodeError) as caught:
        otlp.decode_export(otlp.LOGS, "application/json", body.encode(), NOW)
    assert caught.value.message.startswith("Expected JSON nested less than")


def test_nesting_within_protobufs_limit_is_stored_as_json() -> None:
    value = _field(1, b"x")
    for _ in range(40):
        value = _field(5, _field(1, value))
    result = otlp.decode_export(otlp.LOGS, "application/x-protobuf", _log_body_bytes(value), NOW)
    assert the_row(result)["message"] == "[" * 40 + '"x"' + "]" * 40


def test_invalid_utf8_in_a_protobuf_string_is_a_400() -> None:
    body = _log_body_bytes(_field(1, b"caf\xe9"))
    with pytest.raises(DecodeError) as caught:
        otlp.decode_export(otlp.LOGS, "application/x-protobuf", body, NOW)
    assert caught.value.reason == "invalid_protobuf"
