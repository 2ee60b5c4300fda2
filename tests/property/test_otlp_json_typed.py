"""The typed OTLP JSON decoder (msgspec Structs) and the descriptor-driven reader agree.

`otlp._parse_json` decodes canonical OTLP JSON into Structs and hands anything else to
`otlp_json.parse`. Whatever the document, the request must map to the same rows, the same
rejections and the same errors as the reader of every proto3 JSON form gives on its own:
generated requests, written as exporters write them and then bent into the other forms
proto3 JSON allows (proto field names, enum names, numbers for 64-bit integers, nulls,
unknown keys, lowercase hex) or broken (values of the wrong type, ids that are not hex).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otlp_messages import log_record, logs_request, span, to_otlp_json, traces_request

from gravixd.core import otlp
from gravixd.errors import DecodeError

NOW = 1_800_000_000_000_000_000

KEYS = st.sampled_from(
    [
        "http.route", "http.request.method", "http.method", "http.response.status_code",
        "http.status_code", "http.request.body.size", "http.request_content_length",
        "http.response.body.size", "http.response_content_length", "event.name",
        "service.name", "region", "user.id", "k",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.text(max_size=8),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.sampled_from([0, 200, 404, 599, 1000, -1]),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=6),
    st.none(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
ATTRIBUTES = st.dictionaries(KEYS, VALUES, max_size=6)
TIMES = st.one_of(st.integers(0, (1 << 64) - 1), st.sampled_from([0, 1_700_000_000_000_000_000]))


@st.composite
def trace_requests(draw: st.DrawFn) -> Any:
    spans = [
        span(
            name=draw(st.text(max_size=6)),
            kind=draw(st.integers(0, 6)),
            trace_id=draw(st.sampled_from([b"", bytes(16), bytes(range(16)), b"\x01" * 8])),
            start=draw(TIMES),
            end=draw(TIMES),
            attributes=draw(ATTRIBUTES),
        )
        for _ in range(draw(st.integers(0, 4)))
    ]
    return traces_request(spans, draw(st.none() | ATTRIBUTES))


@st.composite
def log_requests(draw: st.DrawFn) -> Any:
    records = [
        log_record(
            body=draw(VALUES),
            time=draw(TIMES),
            observed=draw(TIMES),
            severity_number=draw(st.integers(0, 30)),
            severity_text=draw(st.sampled_from(["", "warn", "Information", "bogus"])),
            event_name=draw(st.sampled_from(["", "login"])),
            trace_id=draw(st.sampled_from([b"", bytes(range(16)), b"\x02" * 3])),
            attributes=draw(ATTRIBUTES),
        )
        for _ in range(draw(st.integers(0, 4)))
    ]
    return logs_request(records, draw(st.none() | ATTRIBUTES))


def _snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in key)


# Each bends one node of the exporter's JSON into another form (or breaks it).
def _as_number(k: str, v: Any) -> tuple[str, Any]:
    return k, int(v) if isinstance(v, str) and v.lstrip("-").isdigit() else v


def _not_hex(k: str, v: Any) -> tuple[str, Any]:
    return k, "zz" + v if k in ("traceId", "spanId") and isinstance(v, str) else v


def _integral_float(k: str, v: Any) -> tuple[str, Any]:
    small_int = isinstance(v, int) and not isinstance(v, bool) and abs(v) < 1 << 52
    return k, float(v) if small_int else v


BENDS = {
    "proto field name": lambda k, v: (_snake(k), v),
    "unknown key beside": lambda k, v: (k, v),  # handled in _bend: adds a key
    "null value": lambda k, v: (k, None),
    "number for a 64-bit string": _as_number,
    "lowercase hex": lambda k, v: (k, v.lower() if isinstance(v, str) else v),
    "enum name": lambda k, v: (k, "SPAN_KIND_SERVER" if k == "kind" else v),
    "wrong type": lambda k, v: (k, [v] if not isinstance(v, list) else {"x": v}),
    "not hex": _not_hex,
    "integral float": _integral_float,
    "padded int text": lambda k, v: (k, " " + v if isinstance(v, str) and v.isdigit() else v),
}  # fmt: skip


def _nodes(document: Any, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(document, dict):
        out.append(document)
        for item in document.values():
            _nodes(item, out)
    elif isinstance(document, list):
        for item in document:
            _nodes(item, out)
    return out


def _bend(body: bytes, bend: str, pick: int) -> bytes:
    document = json.loads(body)
    nodes = [n for n in _nodes(document, []) if n]
    if not nodes:
        return body
    node = nodes[pick % len(nodes)]
    key = sorted(node)[pick % len(node)]
    if bend == "unknown key beside":
        node["someFutureField"] = 1
    else:
        new_key, new_value = BENDS[bend](key, node.pop(key))
        node[new_key] = new_value
    return json.dumps(document).encode()


def _outcome(decode: Any) -> Any:
    """Rows (timestamps as ints, attributes sorted), rejections and ignored kinds, or the
    error's text and reason."""
    try:
        result = decode()
    except DecodeError as exc:
        return ("error", str(exc), exc.reason)
    batch = result.batch
    index = batch.schema.get_field_index("timestamp")
    batch = batch.set_column(index, "timestamp", batch.column(index).cast(pa.int64()))
    rows = batch.to_pylist()
    for row in rows:
        row["attributes"] = sorted(row["attributes"])
    return (rows, result.rejected, result.rejected_reasons, result.errors, result.ignored_by_kind)


def _both(signal: otlp.Signal, body: bytes) -> tuple[Any, Any]:
    typed = _outcome(lambda: otlp.decode_export(signal, "application/json", body, NOW))

    def reference() -> Any:
        return signal.to_batch(otlp._parse_json_any_form(signal, body), NOW)

    return typed, _outcome(reference)


@pytest.mark.parametrize(
    ("signal", "requests"), [(otlp.TRACES, trace_requests()), (otlp.LOGS, log_requests())]
)
def test_exporter_json_maps_as_the_reference_reader_maps_it(
    signal: otlp.Signal, requests: Any
) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(requests)
    def check(request: Any) -> None:
        typed, reference = _both(signal, to_otlp_json(request))
        assert typed == reference

    check()


@pytest.mark.parametrize(
    ("signal", "requests"), [(otlp.TRACES, trace_requests()), (otlp.LOGS, log_requests())]
)
def test_every_other_form_maps_or_fails_as_the_reference_reader_does(
    signal: otlp.Signal, requests: Any
) -> None:
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(requests, st.sampled_from(sorted(BENDS)), st.integers(0, 1 << 16))
    def check(request: Any, bend: str, pick: int) -> None:
        typed, reference = _both(signal, _bend(to_otlp_json(request), bend, pick))
        assert typed == reference

    check()


def test_the_typed_decoder_takes_what_exporters_send() -> None:
    """The fast path is the one taken for an exporter's JSON (not the fallback every time)."""
    from gravixd.core import otlp_json_typed

    body = to_otlp_json(traces_request([span(attributes={"http.route": "/a", "n": 5})]))
    decoder = otlp_json_typed.decoder_for(otlp.TRACES.request_type)
    request = decoder.decode(body)
    (the_span,) = request.resource_spans[0].scope_spans[0].spans
    assert the_span.start_time_unix_nano == 1_700_000_000_123_456_789
    assert len(the_span.trace_id) == 16
    assert otlp.spans_to_batch(request, NOW).batch.num_rows == 1
