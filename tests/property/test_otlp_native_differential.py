"""Differential property tests: the C OTLP walker against the Python mapping (the reference).

For any `ExportTraceServiceRequest` / `ExportLogsServiceRequest` protobuf body, decoding
with the C walker (gravixd.native.decode_otlp_protobuf, which maps the body itself or hands
it back) and with the Python mapping alone must give identical answers: the same Arrow
table, the same rejected count, reasons and messages, the same spans ignored by kind, or
the same error. Requests are generated with every semantic-convention spelling, every
AnyValue kind, resource and record attributes sharing keys, empty and missing fields, span
kinds, invalid records, and the parts the mapping does not read (scopes, events, links).
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from native_wire import EGROUP, I32, I64, SGROUP, VARINT, ld, tag, varint
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from gravixd import native
from gravixd.core import otlp
from gravixd.errors import DecodeError
from gravixd.schema import SEVERITY_ALIASES

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="the C extension is not built")

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
RECEIVED_NS = 1_790_000_000_123_456_789
PROTOBUF = "application/x-protobuf"

COLUMN_KEYS = [key for keys in otlp._COLUMN_KEYS for key in keys]
KEYS = st.one_of(
    st.sampled_from([*COLUMN_KEYS, "service.name", "event.name", "region", "pod", "é"]),
    st.text(max_size=12),
)
TEXT = st.text(max_size=16)
INT64 = st.one_of(st.integers(-5, 1100), st.integers(-(2**63), 2**63 - 1))
DOUBLES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.1, 2.0, 1e16, 1e15, 1e-5, 1e-4, 404.0, 1.5e300, 5e-324]),
    st.integers(-(10**6), 10**6).map(float),
)


# Whole numbers as text, at and past the columns' bounds: 999 (status_code), 2^63 - 1
# (bytes_in/out), a value whose ten-fold wraps 2^64 to a small number, Unicode digits.
INTEGER_TEXTS = [
    "200", "0", "007", "999", "1000", "-1", "1_0", " 2", "", "٣",
    "9223372036854775807", "9223372036854775808", "18446744073709551620", "0" * 30 + "5",
]  # fmt: skip


def _any_values(depth: int = 2) -> st.SearchStrategy[common_pb2.AnyValue]:
    scalars = st.one_of(
        st.just(common_pb2.AnyValue()),
        TEXT.map(lambda v: common_pb2.AnyValue(string_value=v)),
        st.sampled_from(INTEGER_TEXTS).map(lambda v: common_pb2.AnyValue(string_value=v)),
        st.booleans().map(lambda v: common_pb2.AnyValue(bool_value=v)),
        INT64.map(lambda v: common_pb2.AnyValue(int_value=v)),
        DOUBLES.map(lambda v: common_pb2.AnyValue(double_value=v)),
        st.binary(max_size=10).map(lambda v: common_pb2.AnyValue(bytes_value=v)),
        st.integers(0, 5).map(lambda v: common_pb2.AnyValue(string_value_strindex=v)),
    )
    if depth == 0:
        return scalars
    inner = _any_values(depth - 1)
    return st.one_of(
        scalars,
        scalars,
        scalars,
        st.lists(inner, max_size=3).map(
            lambda vs: common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=vs))
        ),
        st.lists(st.tuples(TEXT, inner), max_size=3).map(
            lambda kvs: common_pb2.AnyValue(
                kvlist_value=common_pb2.KeyValueList(
                    values=[common_pb2.KeyValue(key=k, value=v) for k, v in kvs]
                )
            )
        ),
    )


ANY = _any_values()
KEY_VALUE = st.builds(
    lambda k, v, has: common_pb2.KeyValue(key=k, value=v) if has else common_pb2.KeyValue(key=k),
    KEYS,
    ANY,
    st.booleans().map(lambda b: b or True),
)
ATTRIBUTES = st.lists(KEY_VALUE, max_size=8)
RESOURCE = st.builds(lambda kvs: resource_pb2.Resource(attributes=kvs), ATTRIBUTES)
SCOPE = st.builds(
    lambda name, kvs: common_pb2.InstrumentationScope(name=name, version="1", attributes=kvs),
    TEXT,
    st.lists(KEY_VALUE, max_size=2),
)
TRACE_ID = st.one_of(
    st.binary(min_size=16, max_size=16),
    st.sampled_from([b"", bytes(16), b"\x01" * 8, b"\xab" * 17]),
)
TIME = st.one_of(
    st.integers(1, 2**63 - 1), st.sampled_from([0, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1)
)


@st.composite
def spans(draw: Any) -> trace_pb2.Span:
    start = draw(st.one_of(st.integers(1_700_000_000_000_000_000, 1_800_000_000_000_000_000), TIME))
    end = draw(st.one_of(st.integers(start, min(start + 10**12, 2**64 - 1)), TIME))
    return trace_pb2.Span(
        trace_id=draw(TRACE_ID),
        span_id=draw(st.binary(max_size=8)),
        trace_state=draw(TEXT),
        name=draw(TEXT),
        kind=draw(st.one_of(st.just(2), st.just(2), st.integers(0, 6))),  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=draw(ATTRIBUTES),
        events=draw(st.lists(st.builds(lambda n: trace_pb2.Span.Event(name=n), TEXT), max_size=2)),
        links=draw(
            st.lists(st.builds(lambda s: trace_pb2.Span.Link(trace_state=s), TEXT), max_size=1)
        ),
        status=trace_pb2.Status(message=draw(TEXT), code=draw(st.integers(0, 2))),  # type: ignore[arg-type]
    )


TRACES = st.builds(
    lambda groups: trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource,
                scope_spans=[trace_pb2.ScopeSpans(scope=scope, spans=ss) for scope, ss in scopes],
            )
            for resource, scopes in groups
        ]
    ),
    st.lists(
        st.tuples(RESOURCE, st.lists(st.tuples(SCOPE, st.lists(spans(), max_size=4)), max_size=2)),
        max_size=3,
    ),
)

SEVERITY_TEXT = st.one_of(
    st.sampled_from(sorted(SEVERITY_ALIASES)).flatmap(
        lambda name: st.sampled_from([name, name.upper(), f"SEVERITY_{name}", f" {name}\t"])
    ),
    st.sampled_from(["", "Information", "severity_", "\u00a0info", "ınfo", "\x1cwarn"]),
    TEXT,
)


@st.composite
def log_records(draw: Any) -> logs_pb2.LogRecord:
    record = logs_pb2.LogRecord(
        time_unix_nano=draw(st.one_of(st.just(0), TIME)),
        observed_time_unix_nano=draw(st.one_of(st.just(0), TIME)),
        severity_number=draw(st.one_of(st.integers(0, 24), st.integers(-3, 40))),  # type: ignore[arg-type]
        severity_text=draw(SEVERITY_TEXT),
        attributes=draw(ATTRIBUTES),
        trace_id=draw(st.one_of(st.just(b""), TRACE_ID)),
        span_id=draw(st.binary(max_size=8)),
        event_name=draw(st.one_of(st.just(""), TEXT)),
    )
    if draw(st.booleans()):
        record.body.CopyFrom(draw(ANY))
    return record


LOGS = st.builds(
    lambda groups: logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource,
                scope_logs=[
                    logs_pb2.ScopeLogs(scope=scope, log_records=rs) for scope, rs in scopes
                ],
            )
            for resource, scopes in groups
        ]
    ),
    st.lists(
        st.tuples(
            RESOURCE, st.lists(st.tuples(SCOPE, st.lists(log_records(), max_size=4)), max_size=2)
        ),
        max_size=3,
    ),
)


def _decode(signal: otlp.Signal, body: bytes, walker: otlp.OtlpWalker | None) -> Any:
    try:
        result = otlp.decode_export(signal, PROTOBUF, body, RECEIVED_NS, walker=walker)
    except DecodeError as exc:
        return ("error", type(exc), exc.reason)
    return result


def _rows(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """The rows, timestamps as integers (datetime has no nanoseconds): a readable diff."""
    columns = {name: batch.column(name) for name in batch.schema.names}
    columns["timestamp"] = columns["timestamp"].cast(pa.int64())
    return pa.RecordBatch.from_pydict(columns).to_pylist()


def assert_same(signal: otlp.Signal, body: bytes) -> otlp.OtlpBatch | None:
    by_c = _decode(signal, body, native.decode_otlp_protobuf)
    by_python = _decode(signal, body, None)
    if isinstance(by_python, tuple):
        assert by_c == by_python
        return None
    assert isinstance(by_c, otlp.OtlpBatch), by_c
    assert by_c.batch.schema == by_python.batch.schema
    assert _rows(by_c.batch) == _rows(by_python.batch)
    assert by_c.batch.equals(by_python.batch)
    assert (by_c.rejected, by_c.rejected_reasons, by_c.errors) == (
        by_python.rejected,
        by_python.rejected_reasons,
        by_python.errors,
    )
    assert by_c.ignored_by_kind == by_python.ignored_by_kind
    return by_c


# Requests C maps itself (no fallback): valid records, values fit for their columns, ASCII
# severity text. Still every spelling, kind, AnyValue kind (arrays and key-value lists
# written as JSON, nested) and precedence.
SCALAR = _any_values(depth=0)
VALUE = ANY
OTHER_KEYS = st.one_of(st.sampled_from(["region", "pod", "é", "service.name", "event.name"]), TEXT)
TAME_KEY_VALUE = st.one_of(
    st.builds(lambda k, v: common_pb2.KeyValue(key=k, value=v), OTHER_KEYS, VALUE),
    st.builds(lambda k, v: common_pb2.KeyValue(key=k, value=v), OTHER_KEYS, SCALAR),
    st.builds(
        lambda k, v: _kv(k, string_value=v),
        st.sampled_from(["http.route", "http.request.method", "http.method"]),
        TEXT,
    ),
    st.builds(
        lambda k, v: _kv(k, **v),
        st.sampled_from(COLUMN_KEYS[3:]),
        st.one_of(
            st.integers(0, 999).map(lambda n: {"int_value": n}),
            st.integers(0, 999).map(lambda n: {"string_value": f"{n:04d}"}),
            st.integers(0, 999).map(lambda n: {"double_value": float(n)}),
        ),
    ),
)
TAME_ATTRIBUTES = st.lists(TAME_KEY_VALUE, max_size=8)


@st.composite
def tame_spans(draw: Any) -> trace_pb2.Span:
    start = draw(st.integers(1, 2**63 - 1))
    return trace_pb2.Span(
        trace_id=draw(st.binary(min_size=16, max_size=16).filter(any)),
        name=draw(TEXT),
        kind=draw(st.one_of(st.just(2), st.integers(0, 6))),  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=draw(st.integers(start, 2**64 - 1)),
        attributes=draw(TAME_ATTRIBUTES),
        events=draw(st.lists(st.builds(lambda n: trace_pb2.Span.Event(name=n), TEXT), max_size=1)),
    )


@st.composite
def tame_log_records(draw: Any) -> logs_pb2.LogRecord:
    record = logs_pb2.LogRecord(
        time_unix_nano=draw(st.one_of(st.just(0), st.integers(0, 2**63 - 1))),
        observed_time_unix_nano=draw(st.one_of(st.just(0), st.integers(0, 2**63 - 1))),
        severity_number=draw(st.integers(-3, 30)),  # type: ignore[arg-type]
        severity_text=draw(st.one_of(SEVERITY_TEXT.filter(str.isascii), st.just(""))),
        attributes=draw(TAME_ATTRIBUTES),
        trace_id=draw(st.one_of(st.just(b""), st.binary(min_size=16, max_size=16))),
        event_name=draw(st.one_of(st.just(""), TEXT)),
    )
    if draw(st.booleans()):
        record.body.CopyFrom(draw(VALUE))
    return record


def _tame(records: Any, logs: bool) -> Any:
    resource = st.builds(
        lambda kvs: resource_pb2.Resource(attributes=kvs),
        st.lists(st.builds(lambda k, v: common_pb2.KeyValue(key=k, value=v), KEYS, VALUE)),
    )
    groups = st.lists(st.tuples(resource, st.lists(st.lists(records, max_size=4), max_size=2)))
    if logs:
        return groups.map(
            lambda gs: logs_service_pb2.ExportLogsServiceRequest(
                resource_logs=[
                    logs_pb2.ResourceLogs(
                        resource=r, scope_logs=[logs_pb2.ScopeLogs(log_records=x) for x in ss]
                    )
                    for r, ss in gs
                ]
            )
        )
    return groups.map(
        lambda gs: trace_service_pb2.ExportTraceServiceRequest(
            resource_spans=[
                trace_pb2.ResourceSpans(
                    resource=r, scope_spans=[trace_pb2.ScopeSpans(spans=x) for x in ss]
                )
                for r, ss in gs
            ]
        )
    )


@SETTINGS
@given(st.one_of(_tame(tame_spans(), logs=False), _tame(tame_log_records(), logs=True)))
def test_c_maps_valid_requests_itself_as_python_does(request: Any) -> None:
    signal = otlp.TRACES if request.DESCRIPTOR.name.startswith("ExportTrace") else otlp.LOGS
    body = request.SerializeToString()
    assert isinstance(native.decode_otlp_protobuf(signal, body, RECEIVED_NS, 10**6), otlp.OtlpBatch)
    assert_same(signal, body)


@SETTINGS
@given(TRACES)
def test_traces_c_and_python_agree(request: Any) -> None:
    assert_same(otlp.TRACES, request.SerializeToString())


@SETTINGS
@given(LOGS)
def test_logs_c_and_python_agree(request: Any) -> None:
    assert_same(otlp.LOGS, request.SerializeToString())


@SETTINGS
@given(st.one_of(TRACES, LOGS), st.data())
def test_mutated_bodies_agree(request: Any, data: st.DataObject) -> None:
    """Cut, flipped and spliced bodies: the same table or the same error either way."""
    signal = otlp.TRACES if request.DESCRIPTOR.name.startswith("ExportTrace") else otlp.LOGS
    body = bytearray(request.SerializeToString())
    assume(body)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "dup", "byte"]))
        if op == "flip":
            body[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del body[at:]
        elif op == "dup":
            body[at:at] = body[at : at + data.draw(st.integers(1, 16))]
        else:
            body[at] = data.draw(st.integers(0, 255))
        if not body:
            break
    assert_same(signal, bytes(body))


def _span(**fields: Any) -> trace_pb2.Span:
    defaults: dict[str, Any] = {
        "trace_id": bytes(range(1, 17)),
        "name": "GET /x",
        "kind": 2,
        "start_time_unix_nano": 1_790_000_000_000_000_000,
        "end_time_unix_nano": 1_790_000_000_250_000_000,
    }
    return trace_pb2.Span(**{**defaults, **fields})


def _kv(key: str, **value: Any) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(**value))


def test_c_maps_a_typical_request_itself() -> None:
    """No fallback for what SDKs send: strings, ints, bools, doubles, bytes in attributes,
    every column spelling, other span kinds counted; identical to the Python mapping."""
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource=resource_pb2.Resource(
                    attributes=[
                        _kv("service.name", string_value="checkout"),
                        _kv("host.cpu", int_value=8),
                        _kv("region", string_value="eu"),
                    ]
                ),
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope=common_pb2.InstrumentationScope(name="otel.flask"),
                        spans=[
                            _span(
                                attributes=[
                                    _kv("http.route", string_value="/users/{id}"),
                                    _kv("http.method", string_value="GET"),
                                    _kv("http.request.method", string_value="POST"),
                                    _kv("http.response.status_code", int_value=201),
                                    _kv("http.request.body.size", string_value="42"),
                                    _kv("http.response_content_length", double_value=7.0),
                                    _kv("ratio", double_value=0.1),
                                    _kv("big", double_value=1e300),
                                    _kv("ok", bool_value=True),
                                    _kv("blob", bytes_value=b"\x00\xffab"),
                                    _kv("region", string_value="span wins"),
                                ]
                            ),
                            _span(kind=3),
                            _span(kind=1),
                            _span(kind=9),
                        ],
                    )
                ],
            )
        ]
    )
    body = request.SerializeToString()
    by_c = native.decode_otlp_protobuf(otlp.TRACES, body, RECEIVED_NS, 100)
    assert isinstance(by_c, otlp.OtlpBatch)
    assert _rows(by_c.batch)[0] == {
        "timestamp": 1_790_000_000_000_000_000,
        "service": "checkout",
        "route": "/users/{id}",
        "method": "POST",
        "status_code": 201,
        "duration_ms": 250.0,
        "bytes_in": 42,
        "bytes_out": 7,
        "trace_id": bytes(range(1, 17)).hex(),
        "attributes": [
            ("big", "1e+300"),
            ("blob", "AP9hYg=="),
            ("host.cpu", "8"),
            ("ok", "true"),
            ("ratio", "0.1"),
            ("region", "span wins"),
        ],
    }
    assert by_c.ignored_by_kind == {"client": 1, "internal": 1, "unknown": 1}
    assert_same(otlp.TRACES, body)


@pytest.mark.parametrize(
    "value",
    [5e-324, 1e16, 1e15, 123456789012345678.0, 1e-5, 1e-4, 0.1 + 0.2, -0.0, math.pi, 1.5e16],
)
def test_double_text_is_pythons_repr(value: float) -> None:
    span = _span(attributes=[_kv("x", double_value=value)])
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
    )
    by_c = native.decode_otlp_protobuf(otlp.TRACES, request.SerializeToString(), 0, 10)
    assert isinstance(by_c, otlp.OtlpBatch)
    assert by_c.batch.column("attributes").to_pylist() == [[("x", repr(value))]]


@pytest.mark.parametrize("text", INTEGER_TEXTS)
@pytest.mark.parametrize("key", ["http.response.status_code", "http.request.body.size"])
def test_integer_columns_from_text_agree(key: str, text: str) -> None:
    span = _span(attributes=[_kv(key, string_value=text)])
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
    )
    assert_same(otlp.TRACES, request.SerializeToString())


def _array(*values: common_pb2.AnyValue) -> common_pb2.AnyValue:
    return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=values))


def _kvlist(*pairs: tuple[str, common_pb2.AnyValue]) -> common_pb2.AnyValue:
    kvs = [common_pb2.KeyValue(key=k, value=v) for k, v in pairs]
    return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=kvs))


def _av(**value: Any) -> common_pb2.AnyValue:
    return common_pb2.AnyValue(**value)


JSON_VALUES = {
    "strings to escape": _array(_av(string_value='q"b\\s\n\t\x01\x1f\x7f é\u2028')),
    "every scalar": _array(
        _av(int_value=-(2**63)),
        _av(bool_value=False),
        _av(bytes_value=b"\xff\x00"),
        _av(),
        _av(string_value_strindex=3),
        _av(double_value=1e-5),
        _av(double_value=1e16),
        _av(double_value=1e-7),
        _av(double_value=2.0),
        _av(double_value=math.nan),
        _av(double_value=-math.inf),
    ),  # fmt: skip
    "duplicate keys: first place, last value": _kvlist(
        ("b", _av(int_value=1)), ("a", _av(int_value=2)), ("b", _av(string_value="last"))
    ),
    "nested": _kvlist(("x", _array(_kvlist(("y", _array())), _array(_av(int_value=1))))),
    "empty list and map": _array(_array(), _kvlist()),
}


@pytest.mark.parametrize("value", list(JSON_VALUES.values()), ids=list(JSON_VALUES))
def test_arrays_and_maps_are_written_as_python_writes_them(value: common_pb2.AnyValue) -> None:
    record = logs_pb2.LogRecord(attributes=[common_pb2.KeyValue(key="v", value=value)])
    record.body.CopyFrom(value)
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[logs_pb2.ResourceLogs(scope_logs=[logs_pb2.ScopeLogs(log_records=[record])])]
    )
    by_c = native.decode_otlp_protobuf(otlp.LOGS, request.SerializeToString(), 7, 10)
    assert isinstance(by_c, otlp.OtlpBatch)
    assert by_c.batch.column("message").to_pylist() == [otlp.any_value_text(value)]
    assert by_c.batch.column("attributes").to_pylist() == [[("v", otlp.any_value_text(value))]]


def _doubles_near_powers_of_two() -> list[float]:
    """Every power of two and its neighbours, where the doubles' spacing changes (the
    nearest decimal of a length can then miss while the other neighbour reads back)."""
    values = []
    for k in range(-1074, 1024):
        x = 2.0**k
        values += [x, math.nextafter(x, 0.0), math.nextafter(x, math.inf)]
    return values


def test_double_text_is_pythons_repr_everywhere() -> None:
    """C's shortest round-trip text against repr() over ~6,400 doubles at every binade's
    edge, random bit patterns and decimal-looking values, one span carrying them all."""
    rng = random.Random(20261207)
    values = _doubles_near_powers_of_two()
    values += [
        struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(3000)
    ]
    values += [round(rng.uniform(-1e6, 1e6), rng.randint(0, 12)) for _ in range(1000)]
    values = [v for v in values if math.isfinite(v)]
    span = _span(attributes=[_kv(f"k{i:05d}", double_value=v) for i, v in enumerate(values)])
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[span])])]
    )
    by_c = native.decode_otlp_protobuf(otlp.TRACES, request.SerializeToString(), 0, 10)
    assert isinstance(by_c, otlp.OtlpBatch)
    texts = dict(by_c.batch.column("attributes").to_pylist()[0])
    wrong = {v: texts[f"k{i:05d}"] for i, v in enumerate(values) if texts[f"k{i:05d}"] != repr(v)}
    assert wrong == {}


def test_rejected_records_are_counted_by_c_and_worded_by_python() -> None:
    """Invalid records: C leaves them out and counts them by reason; the messages are the
    Python mapping's own (each record parsed alone), with their paths."""
    bad = [
        _span(trace_id=bytes(16)),
        _span(end_time_unix_nano=1),
        _span(attributes=[_kv("http.status_code", string_value="abc")]),
        _span(attributes=[_kv("http.request.body.size", int_value=-1)]),
        _span(attributes=[_kv("http.response.body.size", double_value=0.5)]),
        _span(trace_id=b"short"),
    ]
    request = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[_span()])]),
            trace_pb2.ResourceSpans(
                scope_spans=[trace_pb2.ScopeSpans(), trace_pb2.ScopeSpans(spans=[_span(), *bad])]
            ),
        ]
    )
    body = request.SerializeToString()
    by_c = native.decode_otlp_protobuf(otlp.TRACES, body, 0, 100)
    assert isinstance(by_c, otlp.OtlpBatch)
    assert by_c.batch.num_rows == 2 and by_c.rejected == 6
    assert by_c.rejected_reasons == {
        "invalid_trace_id": 2,
        "invalid_time": 1,
        "invalid_status_code": 1,
        "invalid_bytes_in": 1,
        "invalid_bytes_out": 1,
    }
    assert len(by_c.errors) == otlp.MAX_ERROR_MESSAGES
    assert by_c.errors[0] == (
        "Expected a 16-byte trace_id, not all zeros, got 16 bytes of zeros"
        " - at `$.resourceSpans[1].scopeSpans[1].spans[1]`"
    )
    assert_same(otlp.TRACES, body)


# --- wire forms the protobuf package never writes ----------------------------------------------


def _string_kv(key: bytes, value: bytes) -> bytes:
    return ld(1, key) + ld(2, ld(1, value))


SERVER_SPAN_FIELDS = (
    ld(1, bytes(range(1, 17)))  # trace_id
    + ld(5, b"GET /x")  # name
    + tag(6, VARINT) + varint(2)  # kind SERVER
    + tag(7, I64) + (1_790_000_000_000_000_000).to_bytes(8, "little")
    + tag(8, I64) + (1_790_000_000_500_000_000).to_bytes(8, "little")
)  # fmt: skip
RESOURCE = ld(1, ld(1, _string_kv(b"service.name", b"checkout")) + ld(1, _string_kv(b"r", b"1")))


def _traces(span_fields: bytes, resource: bytes = RESOURCE, after: bytes = b"") -> bytes:
    """One ResourceSpans: `resource`, a ScopeSpans holding one span, then `after`."""
    return ld(1, resource + ld(2, ld(1, ld(1, b"scope")) + ld(2, span_fields)) + after)


WIRE_CASES = {
    "plain": _traces(SERVER_SPAN_FIELDS),
    "resource after the scopes": _traces(SERVER_SPAN_FIELDS, resource=b"", after=RESOURCE),
    "resource twice, merged": _traces(
        SERVER_SPAN_FIELDS, after=ld(1, ld(1, _string_kv(b"service.name", b"second")))
    ),
    "name twice, the last wins": _traces(SERVER_SPAN_FIELDS + ld(5, b"POST /y")),
    "kind with the wrong wire type is unknown": _traces(SERVER_SPAN_FIELDS + ld(6, b"\x03")),
    "unknown fields everywhere": ld(9, b"x")
    + _traces(SERVER_SPAN_FIELDS + tag(99, VARINT) + varint(5) + tag(98, I32) + b"abcd"),
    "an unknown group in a span": _traces(
        SERVER_SPAN_FIELDS + tag(20, SGROUP) + ld(1, b"\xff") + tag(20, EGROUP)
    ),
    "key-value with its value twice": _traces(
        SERVER_SPAN_FIELDS + ld(9, ld(1, b"k") + ld(2, ld(1, b"a")) + ld(2, ld(3, b"\x07")))
    ),
    "any-value with two members": _traces(
        SERVER_SPAN_FIELDS + ld(9, ld(1, b"k") + ld(2, ld(1, b"a") + tag(3, VARINT) + b"\x07"))
    ),
    "invalid UTF-8 in the scope's name": ld(
        1, ld(2, ld(1, ld(1, b"\xff")) + ld(2, SERVER_SPAN_FIELDS))
    ),
    "invalid UTF-8 in a span event's name": _traces(
        SERVER_SPAN_FIELDS + ld(11, ld(2, b"\xc3\x28"))
    ),
    "invalid UTF-8 in a client span's attribute": _traces(
        SERVER_SPAN_FIELDS.replace(b"\x30\x02", b"\x30\x03") + ld(9, _string_kv(b"k", b"\xff"))
    ),
    "bytes, not UTF-8, in a span id": _traces(SERVER_SPAN_FIELDS + ld(2, b"\xff" * 8)),
    "end-group outside a group": _traces(SERVER_SPAN_FIELDS + tag(20, EGROUP)),
    "field number 0": _traces(SERVER_SPAN_FIELDS + b"\x00\x00"),
}


def _nested_array(depth: int) -> bytes:
    value = ld(1, b"leaf")  # AnyValue{string_value}
    for _ in range(depth):
        value = ld(5, ld(1, value))  # AnyValue{array_value{values: [value]}}
    return value


# Two levels an array (ArrayValue, AnyValue) below the scope's: upb takes 47, not 48.
for _depth in (40, 46, 47, 48, 49):
    _scope = ld(3, ld(1, b"k") + ld(2, _nested_array(_depth)))  # attributes: [k = array]
    WIRE_CASES[f"an array nested {_depth} deep in a scope attribute"] = ld(
        1, ld(2, ld(1, _scope) + ld(2, SERVER_SPAN_FIELDS))
    )


# What C maps itself (the rest it hands to Python or refuses, as upb does).
C_MAPS = {
    "plain",
    "resource after the scopes",
    "resource twice, merged",
    "name twice, the last wins",
    "kind with the wrong wire type is unknown",
    "unknown fields everywhere",
    "an unknown group in a span",
    "bytes, not UTF-8, in a span id",
    "an array nested 40 deep in a scope attribute",
    "an array nested 46 deep in a scope attribute",
    "an array nested 47 deep in a scope attribute",
}


@pytest.mark.parametrize("case", list(WIRE_CASES))
def test_wire_forms_agree(case: str) -> None:
    body = WIRE_CASES[case]
    by_c = native.decode_otlp_protobuf(otlp.TRACES, body, RECEIVED_NS, 100)
    assert isinstance(by_c, otlp.OtlpBatch) == (case in C_MAPS), by_c
    assert_same(otlp.TRACES, body)
