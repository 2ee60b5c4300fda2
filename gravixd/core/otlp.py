"""OTLP/HTTP payloads -> Arrow record batches of the facts and events streams. Sans-I/O.

OpenTelemetry SDKs and Collectors export `ExportTraceServiceRequest` (to `/v1/traces`) and
`ExportLogsServiceRequest` (to `/v1/logs`), as binary protobuf or OTLP's JSON encoding. This
module turns one such body into a `pa.RecordBatch` with exactly the schema of `facts` or
`events` (gravixd.schema), following the mapping in DESIGN.md section 2, and encodes the
`Export…ServiceResponse` and the `google.rpc.Status` error bodies that OTLP clients read.
docs/otlp.md has the mapping table and the decisions taken where DESIGN is silent.

The messages come from the `opentelemetry-proto` package (never hand-copied .proto files).
A body that does not parse is a `DecodeError` (400, nothing kept); a record whose data is
invalid (a span without a 16-byte trace id, an end before its start, a status code that is
not one) is rejected on its own and reported in `partial_success`, the others are kept.
Spans of a kind other than SERVER are not request facts: they are skipped and counted.
It never does I/O and never reads a clock: `received_unix_nano` is passed in.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from ..errors import DecodeError
from ..schema import (
    COLUMNS,
    MAX_INT64,
    MAX_STATUS_CODE,
    SEVERITY_NAMES,
    STREAMS,
    TIMESTAMP_TYPE,
    severity_number_of_name,
)
from . import otlp_json, otlp_json_typed
from .decode import attributes_column, timestamp_column

PROTOBUF_TYPES: Final = frozenset({"application/x-protobuf", "application/protobuf"})
JSON_TYPES: Final = frozenset({"application/json"})
# OTLP/HTTP knows these two encodings only (no NDJSON).
CONTENT_TYPES: Final = PROTOBUF_TYPES | JSON_TYPES

UNKNOWN_SERVICE: Final = "unknown_service"  # what the OpenTelemetry spec names a nameless one

# Rejected records whose messages go into partial_success.error_message: enough to see the
# pattern, bounded so that a million bad spans cost no more than a few lines.
MAX_ERROR_MESSAGES: Final = 5

_SPAN_KIND_SERVER: Final = 2
SPAN_KIND_NAMES: Final = ("unspecified", "internal", "server", "client", "producer", "consumer")

# Attribute keys read into columns, current semantic-convention name first, then the older
# name it replaced. Every key listed is consumed (kept out of `attributes`) whichever was
# used: when both come, they are the same value sent twice during a semconv migration.
_COLUMN_KEYS: Final = (
    ("http.route",),  # route
    ("http.request.method", "http.method"),  # method
    ("http.response.status_code", "http.status_code"),  # status_code
    ("http.request.body.size", "http.request_content_length"),  # bytes_in
    ("http.response.body.size", "http.response_content_length"),  # bytes_out
)
# key -> (column slot, rank): the lowest rank present wins; one pass over the attributes.
_SLOT_OF_KEY: Final = {
    key: (slot, rank) for slot, keys in enumerate(_COLUMN_KEYS) for rank, key in enumerate(keys)
}
_EVENT_NAME_KEY: Final = "event.name"
_SERVICE_NAME_KEY: Final = "service.name"

_encode_json = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder().decode

# --- the outcome of one request --------------------------------------------------------------


@dataclass(slots=True)
class OtlpBatch:
    """What one OTLP request decoded to.

    Attributes:
        batch: the accepted records, in the stream's schema (may have no rows).
        rejected: records refused for invalid data (reported in partial_success).
        rejected_reasons: reason label -> count, for metrics.
        errors: the first MAX_ERROR_MESSAGES rejection messages, each naming its record.
        ignored_by_kind: spans skipped for not being SERVER spans, by kind name.
    """

    batch: pa.RecordBatch
    rejected: int = 0
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    ignored_by_kind: dict[str, int] = field(default_factory=dict)


class _Rejects:
    """Collects rejected records of one request."""

    def __init__(self) -> None:
        self.count = 0
        self.reasons: dict[str, int] = {}
        self.messages: list[str] = []

    def add(self, reason: str, where: str, message: str) -> None:
        self.count += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.messages) < MAX_ERROR_MESSAGES:
            self.messages.append(f"{message} - at `{where}`")


# At most this many spans or log records in one request (config
# `otlp_max_records_per_request`): 8x the OpenTelemetry Collector's default batch (8,192)
# and 128x the SDKs' export batch (512), so no normal exporter meets it, while a body of
# empty records (2 bytes each on the wire, a row each) cannot turn 8 MiB into millions of
# rows: an 8 KB gzip body did reach 1.5 GiB of peak memory before this limit.
DEFAULT_MAX_RECORDS_PER_REQUEST: Final = 65_536


# What one record costs while it is decoded, at most, beyond what its bytes cost (the body
# is reserved for already): measured on bodies of empty log records, the most records a
# byte can carry (peak RSS over 10^6 / 2*10^5 records: 69 B in C, 384 B in the Python
# mapping, rounded up).
C_BYTES_PER_RECORD: Final = 128
PYTHON_BYTES_PER_RECORD: Final = 512


class TooManyRecords(DecodeError):
    """A request holds more records than may be decoded: over max_records (413, the sender
    should split its batches), or over what the in-flight memory has room for now
    (`retryable`: 503, the sender retries later)."""

    def __init__(self, signal: Signal, max_records: int, offset: int, retryable: bool) -> None:
        name = signal.request_type.DESCRIPTOR.full_name
        noun = signal.record_noun
        if retryable:
            message = (
                f"Expected room for decoding more than {max_records} {noun} within "
                f"max_in_flight_bytes, got a `{name}` with more - at byte {offset}; retry later"
            )
        else:
            message = (
                f"Expected at most {max_records} {noun} in one `{name}` "
                f"(otlp_max_records_per_request), got more - at byte {offset}; "
                "send smaller batches"
            )
        super().__init__(message, "too_many_records")
        self.offset = offset
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Fallback:
    """An OtlpWalker's answer when the Python mapping must decide: `error_offset` is None
    when the body parsed but holds what only Python maps (an AnyValue sent twice, ...),
    else the byte where the walker could not parse it (upb has the last word)."""

    error_offset: int | None


# A fast walker of protobuf request bodies (gravixd.native's C one): the same OtlpBatch as
# the Python mapping, or a Fallback. (signal, body, received_unix_nano, max_records).
OtlpWalker = Callable[["Signal", bytes, int, int], "OtlpBatch | Fallback"]


class _Reject(Exception):
    def __init__(self, reason: str, message: str) -> None:
        self.reason, self.message = reason, message


# --- signals ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signal:
    """One OTLP signal: its request and response messages and the stream it lands in."""

    name: str  # "traces" | "logs"
    stream: str  # "facts" | "events"
    record_noun: str  # for messages: "spans" | "log records"
    request_type: Any
    response_type: Any
    partial_success_type: Any
    rejected_field: str
    to_batch: Callable[[Any, int], OtlpBatch]


# --- values ----------------------------------------------------------------------------------


def any_value_text(value: Any) -> str:
    """An `AnyValue` as the text stored in a map<string,string> or a message column.

    Strings as they are; ints in decimal; bools `true`/`false`; doubles in Python's shortest
    round-trip form (`0.1`, `2.0`, `1e+100`) and `NaN`/`Infinity`/`-Infinity` as proto3 JSON
    spells them; bytes in base64 (as proto3 JSON); arrays and key-value lists as JSON; an
    empty AnyValue (and `string_value_strindex`, a reference into a profiles dictionary that
    logs and traces do not have) as "".
    """
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return _double_text(value.double_value)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind in ("array_value", "kvlist_value"):
        return _encode_json(_any_value_native(value)).decode()
    return ""


def _double_text(number: float) -> str:
    if math.isfinite(number):
        return repr(number)
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


def _any_value_native(value: Any) -> object:
    """An AnyValue as a JSON-encodable value (within arrays and maps)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else _double_text(number)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [_any_value_native(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value_native(kv.value) for kv in value.kvlist_value.values}
    return None


# ASCII digits only: int() would also take "١٢", "1_000" and " 12 ".
_DIGITS: Final = re.compile(r"[0-9]+")


def _integer(value: Any, what: str, maximum: int) -> int:
    """An AnyValue holding a whole number 0..maximum (an int, a decimal string, or an
    integral double: emitters differ), else a _Reject naming what came."""
    kind = value.WhichOneof("value")
    number: int | None = None
    if kind == "int_value":
        number = value.int_value
    elif kind == "string_value" and _DIGITS.fullmatch(value.string_value):
        number = int(value.string_value)
    elif kind == "double_value" and value.double_value.is_integer():
        number = int(value.double_value)
    if number is None or not 0 <= number <= maximum:
        got = any_value_text(value) if kind else "an empty value"
        raise _Reject(f"invalid_{what}", f"Expected `{what}` an integer 0..{maximum}, got {got!r}")
    return number


def _resource_attributes(resource: Any) -> tuple[str, dict[str, str]]:
    """(service name, the other resource attributes as text)."""
    attributes = {kv.key: kv.value for kv in resource.attributes}
    name = attributes.pop(_SERVICE_NAME_KEY, None)
    service = any_value_text(name) if name is not None else ""
    return service or UNKNOWN_SERVICE, {k: any_value_text(v) for k, v in attributes.items()}


def _merged(own: dict[str, str], resource: dict[str, str]) -> dict[str, str]:
    """A record's remaining attributes, then the resource's where it has no such key."""
    if not resource:
        return own
    merged = dict(resource)
    merged.update(own)
    return merged


def _span_attributes(span: Any) -> tuple[list[Any], dict[str, str]]:
    """(the AnyValue of each column slot or None, the other attributes as text)."""
    found: list[Any] = [None] * len(_COLUMN_KEYS)
    ranks = [len(keys) for keys in _COLUMN_KEYS]
    own: dict[str, str] = {}
    for kv in span.attributes:
        key = kv.key
        slot = _SLOT_OF_KEY.get(key)
        if slot is None:
            own[key] = any_value_text(kv.value)
        elif slot[1] <= ranks[slot[0]]:  # a later duplicate of a key wins, as in protobuf
            found[slot[0]] = kv.value
            ranks[slot[0]] = slot[1]
    return found, own


def _trace_id_hex(trace_id: bytes, required: bool) -> str:
    if len(trace_id) == 16 and (any(trace_id) or not required):
        return trace_id.hex()
    if not trace_id and not required:
        return ""
    expected = "a 16-byte trace_id, not all zeros" if required else "a 16-byte trace_id or none"
    got = f"{len(trace_id)} bytes" + (" of zeros" if trace_id and not any(trace_id) else "")
    raise _Reject("invalid_trace_id", f"Expected {expected}, got {got}")


# --- columns ---------------------------------------------------------------------------------


def _column_lists(stream: str) -> list[list[Any]]:
    """One empty list per column of `stream`, in schema.COLUMNS' order."""
    return [[] for _ in COLUMNS[stream]]


def _columns_to_batch(
    stream: str, columns: list[list[Any]], received_unix_nano: int
) -> pa.RecordBatch:
    """The stream's record batch from one list of values per column (schema.COLUMNS'
    order): timestamps in nanoseconds (0: `received_unix_nano`), maps as dicts."""
    arrays = []
    for column, values in zip(COLUMNS[stream], columns, strict=True):
        if column.field.type == TIMESTAMP_TYPE:
            arrays.append(timestamp_column(pa.array(values, pa.int64()), received_unix_nano))
        elif column.kind == "map":
            arrays.append(attributes_column(values))
        else:
            arrays.append(pa.array(values, column.field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=STREAMS[stream])


# --- traces -> facts -------------------------------------------------------------------------


TRACES_NAME: Final = "traces"
LOGS_NAME: Final = "logs"


def record_path(signal_name: str, r: int, s: int, i: int) -> str:
    """Where a record is in its request, as OTLP JSON spells it."""
    if signal_name == TRACES_NAME:
        return f"$.resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
    return f"$.resourceLogs[{r}].scopeLogs[{s}].logRecords[{i}]"


def _checked_span(
    span: Any,
) -> tuple[str, int, int, tuple[Any, Any], dict[str, str], tuple[int, int, int]]:
    """A SERVER span's checked parts: (trace id hex, start, end, (route, method) AnyValues
    or None, its other attributes as text, (status code, bytes in, bytes out)).

    Raises:
        _Reject: the span is not a valid fact (its reason and message).
    """
    trace_id = _trace_id_hex(span.trace_id, required=True)
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if not 0 < start <= MAX_INT64 or end < start:
        raise _Reject(
            "invalid_time",
            f"Expected 0 < start_time_unix_nano <= end_time_unix_nano, "
            f"got start {start} and end {end}",
        )
    (route, method, status, size_in, size_out), own = _span_attributes(span)
    status_code = 0 if status is None else _integer(status, "status_code", MAX_STATUS_CODE)
    size_in_bytes = 0 if size_in is None else _integer(size_in, "bytes_in", MAX_INT64)
    size_out_bytes = 0 if size_out is None else _integer(size_out, "bytes_out", MAX_INT64)
    return trace_id, start, end, (route, method), own, (status_code, size_in_bytes, size_out_bytes)


def _checked_log(record: Any) -> tuple[str, int]:
    """A log record's (trace id hex, time).

    Raises:
        _Reject: the record is not a valid event (its reason and message).
    """
    trace_id = _trace_id_hex(record.trace_id, required=False)
    time = record.time_unix_nano or record.observed_time_unix_nano
    if time > MAX_INT64:
        raise _Reject(
            "invalid_time",
            f"Expected time_unix_nano <= {MAX_INT64} (year 2262), got {time}",
        )
    return trace_id, time


def rejection(signal_name: str, record: bytes) -> tuple[str, str] | None:
    """(reason, message) this mapping rejects one serialized Span / LogRecord with, or None
    when it takes it: what a fast walker that found a record invalid asks for its words."""
    try:
        if signal_name == TRACES_NAME:
            _checked_span(trace_pb2.Span.FromString(record))
        else:
            _checked_log(logs_pb2.LogRecord.FromString(record))
    except _Reject as exc:
        return exc.reason, exc.message
    except ProtobufDecodeError:
        return None
    return None


def spans_to_batch(request: Any, received_unix_nano: int) -> OtlpBatch:
    """An `ExportTraceServiceRequest` -> facts (SERVER spans only).

    `received_unix_nano` is unused (a span's start time is required) but kept for the
    common signature of both signals.
    """
    del received_unix_nano
    rejects = _Rejects()
    ignored: dict[str, int] = {}
    columns = _column_lists("facts")
    (starts, services, routes, methods, statuses, durations) = columns[:6]
    (bytes_in, bytes_out, trace_ids, attributes) = columns[6:]
    for r, resource_spans in enumerate(request.resource_spans):
        service, resource_attributes = _resource_attributes(resource_spans.resource)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            for i, span in enumerate(scope_spans.spans):
                if span.kind != _SPAN_KIND_SERVER:
                    kind = _kind_name(span.kind)
                    ignored[kind] = ignored.get(kind, 0) + 1
                    continue
                try:
                    checked = _checked_span(span)
                except _Reject as exc:
                    rejects.add(exc.reason, record_path(TRACES_NAME, r, s, i), exc.message)
                    continue
                trace_id, start, end, (route, method), own, numbers = checked
                status_code, size_in_bytes, size_out_bytes = numbers
                starts.append(start)
                services.append(service)
                routes.append(any_value_text(route) if route is not None else span.name)
                methods.append(any_value_text(method) if method is not None else "")
                statuses.append(status_code)
                durations.append((end - start) / 1e6)
                bytes_in.append(size_in_bytes)
                bytes_out.append(size_out_bytes)
                trace_ids.append(trace_id)
                attributes.append(_merged(own, resource_attributes))
    batch = _columns_to_batch("facts", columns, 0)
    return OtlpBatch(batch, rejects.count, rejects.reasons, rejects.messages, ignored)


def _kind_name(kind: int) -> str:
    return SPAN_KIND_NAMES[kind] if 0 <= kind < len(SPAN_KIND_NAMES) else "unknown"


# --- logs -> events --------------------------------------------------------------------------

# OpenTelemetry's SeverityNumber ranges (logs data model), 4 numbers a level: TRACE 1-4,
# DEBUG 5-8, INFO 9-12, WARN 13-16, ERROR 17-20, FATAL 21-24. gravixd has no TRACE: it is
# DEBUG, as the severity names in DESIGN section 2 say. Index = SeverityNumber.
_SEVERITY_BY_OTEL_NUMBER: Final = ("UNSPECIFIED",) + tuple(
    name for name in ("DEBUG", "DEBUG", "INFO", "WARN", "ERROR", "FATAL") for _ in range(4)
)


def log_severity(severity_number: int, severity_text: str) -> str:
    """The stored severity of a log record: by number, else by text, else UNSPECIFIED."""
    if 0 < severity_number < len(_SEVERITY_BY_OTEL_NUMBER):
        return _SEVERITY_BY_OTEL_NUMBER[severity_number]
    number = severity_number_of_name(severity_text) if severity_text else None
    return SEVERITY_NAMES[number] if number is not None else "UNSPECIFIED"


def logs_to_batch(request: Any, received_unix_nano: int) -> OtlpBatch:
    """An `ExportLogsServiceRequest` -> events. A record with neither time nor observed time
    gets `received_unix_nano` (gravixd's "0 means time of receipt")."""
    rejects = _Rejects()
    columns = _column_lists("events")
    times, services, kinds, severities, messages, trace_ids, attributes = columns
    for r, resource_logs in enumerate(request.resource_logs):
        service, resource_attributes = _resource_attributes(resource_logs.resource)
        for s, scope_logs in enumerate(resource_logs.scope_logs):
            for i, record in enumerate(scope_logs.log_records):
                try:
                    trace_id, time = _checked_log(record)
                except _Reject as exc:
                    rejects.add(exc.reason, record_path(LOGS_NAME, r, s, i), exc.message)
                    continue
                own = {kv.key: any_value_text(kv.value) for kv in record.attributes}
                kind = own.pop(_EVENT_NAME_KEY, "")
                kind = record.event_name or kind
                times.append(time)
                services.append(service)
                kinds.append(kind or "log")
                severities.append(log_severity(record.severity_number, record.severity_text))
                messages.append(any_value_text(record.body) if record.HasField("body") else "")
                trace_ids.append(trace_id)
                attributes.append(_merged(own, resource_attributes))
    batch = _columns_to_batch("events", columns, received_unix_nano)
    return OtlpBatch(batch, rejects.count, rejects.reasons, rejects.messages)


TRACES: Final = Signal(
    "traces",
    "facts",
    "spans",
    trace_service_pb2.ExportTraceServiceRequest,
    trace_service_pb2.ExportTraceServiceResponse,
    trace_service_pb2.ExportTracePartialSuccess,
    "rejected_spans",
    spans_to_batch,
)
LOGS: Final = Signal(
    "logs",
    "events",
    "log records",
    logs_service_pb2.ExportLogsServiceRequest,
    logs_service_pb2.ExportLogsServiceResponse,
    logs_service_pb2.ExportLogsPartialSuccess,
    "rejected_log_records",
    logs_to_batch,
)
# The OTLP/HTTP default paths (OTLP specification, "OTLP/HTTP Request").
SIGNALS: Final[dict[str, Signal]] = {"/v1/traces": TRACES, "/v1/logs": LOGS}


# --- decoding --------------------------------------------------------------------------------


def decode_export(
    signal: Signal,
    media_type: str,
    body: bytes,
    received_unix_nano: int,
    *,
    walker: OtlpWalker | None = None,
    max_records: int = DEFAULT_MAX_RECORDS_PER_REQUEST,
    working_bytes: int | None = None,
) -> OtlpBatch:
    """Decode one OTLP/HTTP request body of `media_type` and map it to the signal's stream.

    Args:
        walker: maps protobuf bodies first (the C walker); None: the Python mapping only.
        max_records: spans or log records a protobuf body may hold.
        working_bytes: memory the decoding may take beyond the body (None: no bound but
            max_records); records are counted against it as they are walked.

    Raises:
        TooManyRecords: a protobuf body with more than `max_records` records, or more than
            `working_bytes` has room for (`retryable`).
        DecodeError: the body is not an `Export…ServiceRequest` in that encoding.
        ValueError: a media type outside CONTENT_TYPES (a caller bug).
    """
    if media_type in PROTOBUF_TYPES:
        walked_offset = None
        if walker is not None:
            cap = _records_cap(max_records, working_bytes, C_BYTES_PER_RECORD)
            try:
                outcome = walker(signal, body, received_unix_nano, cap)
            except TooManyRecords as exc:
                raise TooManyRecords(signal, cap, exc.offset, cap < max_records) from None
            if isinstance(outcome, OtlpBatch):
                return outcome
            walked_offset = outcome.error_offset
        cap = _records_cap(max_records, working_bytes, PYTHON_BYTES_PER_RECORD)
        check_record_count(signal, body, cap, retryable=cap < max_records)
        request = _parse_protobuf(signal, body, walked_offset)
    elif media_type in JSON_TYPES:
        request = _parse_json(signal, body)
    else:
        raise ValueError(f"unsupported OTLP media type {media_type!r}")
    return signal.to_batch(request, received_unix_nano)


# Peak memory of decoding OTLP JSON per JSON object in the body (Structs, then the mapping's
# column lists), measured: ~220 B an object for exporters' spans, ~350 B for `{}` records.
JSON_DECODE_BYTES_PER_OBJECT: Final = 350


def json_decode_bytes(body: bytes) -> int:
    """An upper bound of the memory decoding this OTLP JSON body takes, known before anything
    is built: its objects (every `{`, counted by one C loop, ~1 ms for 8 MiB) times the most
    one costs. A body of 2.7M empty records is 8 MiB of JSON but ~1 GiB of objects."""
    return body.count(b"{") * JSON_DECODE_BYTES_PER_OBJECT


def _records_cap(max_records: int, working_bytes: int | None, bytes_per_record: int) -> int:
    if working_bytes is None:
        return max_records
    return max(0, min(max_records, working_bytes // bytes_per_record))


def _parse_protobuf(signal: Signal, body: bytes, error_offset: int | None = None) -> Any:
    try:
        return signal.request_type.FromString(body)
    except ProtobufDecodeError as exc:
        name = signal.request_type.DESCRIPTOR.full_name
        where = f" - at byte {error_offset}" if error_offset is not None else ""
        raise DecodeError(
            f"Expected a protobuf `{name}`, got {len(body)} bytes that do not parse ({exc}){where}",
            "invalid_protobuf",
        ) from None


# Canonical OTLP JSON decoded straight into Structs (otlp_json_typed), one per request type,
# made on first use. Anything else proto3 JSON allows goes to the descriptor-driven reader.
_TYPED_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


# Each record takes at least 2 bytes on the wire (a tag and a zero length).
_MIN_RECORD_BYTES: Final = 2


def check_record_count(
    signal: Signal, body: bytes, max_records: int, *, retryable: bool = False
) -> None:
    """Before upb builds any object: count the records of a protobuf body (three levels of
    tags, no parsing) and refuse more than `max_records`. Cheap: a body too short to hold
    that many is not walked, and the count stops at the first record past the limit.
    Malformed wire data ends the count quietly: upb then says what is wrong.

    Raises:
        TooManyRecords
    """
    if len(body) < _MIN_RECORD_BYTES * (max_records + 1):
        return
    records = 0
    for _, resource_at, resource_end in _length_fields(body, 0, len(body), 1):
        for _, scope_at, scope_end in _length_fields(body, resource_at, resource_end, 2):
            for record_at, _, _ in _length_fields(body, scope_at, scope_end, 2):
                records += 1
                if records > max_records:
                    raise TooManyRecords(signal, max_records, record_at, retryable)


def _length_fields(body: bytes, at: int, end: int, number: int) -> Iterator[tuple[int, int, int]]:
    """(tag offset, content start, content end) of each length-delimited field `number` of
    the message in body[at:end]; stops quietly at malformed data."""
    wanted = number << 3 | 2
    groups = 0  # unknown groups open: their fields are skipped
    while at < end:
        tag_at = at
        tag, at = _varint(body, at, end)
        wire = tag & 7
        if tag < 0 or wire in (6, 7):
            return
        if wire == 0:
            _, at = _varint(body, at, end)
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        elif wire == 2:
            length, at = _varint(body, at, end)
            if length < 0 or at + length > end:
                return
            if tag == wanted and not groups:
                yield tag_at, at, at + length
            at += length
        elif wire == 3:
            groups += 1
        elif groups:
            groups -= 1
        else:
            return
        if at < 0 or at > end:
            return


def _varint(body: bytes, at: int, end: int) -> tuple[int, int]:
    """(value, next offset), or (-1, -1) when truncated or longer than 10 bytes."""
    value = shift = 0
    while at < end and shift < 70:
        byte = body[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    return -1, -1


def _parse_json(signal: Signal, body: bytes) -> Any:
    decoder = _TYPED_DECODERS.get(signal.request_type)
    if decoder is None:
        decoder = _TYPED_DECODERS[signal.request_type] = otlp_json_typed.decoder_for(
            signal.request_type
        )
    try:
        return decoder.decode(body)
    except (msgspec.MsgspecError, RecursionError):
        pass  # not the canonical form (or not valid): the full reader decides, and words it
    return _parse_json_any_form(signal, body)


def _parse_json_any_form(signal: Signal, body: bytes) -> Any:
    name = signal.request_type.DESCRIPTOR.full_name
    try:
        document = _decode_json(body)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"Expected OTLP JSON `{name}`: {exc}", "invalid_json") from None
    except RecursionError:
        raise DecodeError(
            "Expected JSON nested less than ~1000 levels deep, got deeper nesting", "invalid_json"
        ) from None
    if not isinstance(document, dict):
        got = otlp_json.describe(document)
        raise DecodeError(f"Expected OTLP JSON `{name}` (an object), got {got} - at `$`")
    request = signal.request_type()
    otlp_json.parse(document, request)
    return request


# --- answers ---------------------------------------------------------------------------------


def encode_response(signal: Signal, media_type: str, result: OtlpBatch) -> bytes:
    """The `Export…ServiceResponse` for a request whose records are durable, in the request's
    encoding. `partial_success` is set only when records were rejected or spans ignored (OTLP:
    it MUST stay unset on full success); spans skipped for their kind are not rejections
    (`rejected_spans` does not count them: else every Collector would log an error for every
    trace), but the message says how many and why."""
    response = signal.response_type()
    notes = []
    if result.rejected:
        noun = signal.record_noun
        message = f"{result.rejected} {noun} rejected: " + "; ".join(result.errors)
        if result.rejected > len(result.errors):
            message += f"; and {result.rejected - len(result.errors)} more"
        notes.append(message)
    if result.ignored_by_kind:
        notes.append(ignored_spans_message(result.ignored_by_kind))
    if notes:
        # OTLP: a partial_success with 0 rejected and a message is a warning the client logs.
        partial = signal.partial_success_type(error_message=". ".join(notes))
        setattr(partial, signal.rejected_field, result.rejected)
        response.partial_success.CopyFrom(partial)
    return _encode_message(response, media_type)


def ignored_spans_message(ignored_by_kind: dict[str, int]) -> str:
    """Why spans were not stored, for partial_success: a user who forgot SpanKind.SERVER
    learns it from the answer, not from a metric."""
    total = sum(ignored_by_kind.values())
    kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(ignored_by_kind.items()))
    return (
        f"{total} spans ignored, not stored: only spans of kind SERVER are request facts "
        f"(got {kinds}); create the span with kind SERVER to store it"
    )


# google.rpc.Code numbers for the Status.code field (OTLP clients do not act on it, but it
# is there for logs): the HTTP statuses gravixd answers OTLP requests with.
_RPC_CODES: Final = {400: 3, 401: 16, 404: 5, 413: 8, 415: 3, 503: 14}


def encode_status(media_type: str, http_status: int, message: str) -> bytes:
    """An OTLP error body: a `google.rpc.Status` in the request's encoding (OTLP spec:
    every 4xx/5xx body is one), whose message is gravixd's usual expected/got/where text."""
    status = status_pb2.Status(code=_RPC_CODES.get(http_status, 2), message=message)
    return _encode_message(status, media_type)


def _encode_message(message: Any, media_type: str) -> bytes:
    if media_type in JSON_TYPES:
        return str(json_format.MessageToJson(message, indent=None)).encode()
    return bytes(message.SerializeToString())


def response_content_type(media_type: str) -> bytes:
    """OTLP: the response carries the request's Content-Type."""
    return b"application/json" if media_type in JSON_TYPES else b"application/x-protobuf"
