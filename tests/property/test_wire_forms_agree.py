"""Any valid batch of events, sent as JSON, NDJSON or protobuf, yields identical Arrow rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import batches, to_protobuf

from gravixd.core.decode import as_record_batch, attributes_column, decode
from gravixd.runtime.app import select_protobuf_decoder
from gravixd.schema import STREAMS

RECEIVED_NS = 1_764_000_000_000_000_000
# The defaults a field may be sent as `null` for (all but `service`, which is required).
STREAM_DEFAULTS: dict[str, dict[str, Any]] = {
    "facts": {"timestamp_unix_nano": 0, "route": "", "method": "", "status_code": 0,
              "duration_ms": 0.0, "bytes_in": 0, "bytes_out": 0, "trace_id": "",
              "attributes": {}},
    "events": {"timestamp_unix_nano": 0, "kind": "", "severity": 0, "message": "",
               "trace_id": "", "attributes": {}},
}  # fmt: skip


def _decode(stream: str, *args: Any) -> Any:
    """decode() as a record batch, whether it deferred a small request's columns or not."""
    return as_record_batch(stream, decode(stream, *args))


def _protobuf_decoders() -> list[Any]:
    from gravixd.core.decode import decode_protobuf_pure

    decoders = [decode_protobuf_pure]
    try:
        from gravixd import native
    except ImportError:
        return decoders
    if native.AVAILABLE:
        decoders.append(native.decode_protobuf)
    return decoders


@pytest.mark.parametrize("stream", list(STREAMS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_json_ndjson_and_protobuf_give_identical_batches(stream: str, data: st.DataObject) -> None:
    items = data.draw(batches(stream))
    as_json = msgspec.json.encode(items)
    as_ndjson = b"\n".join(msgspec.json.encode(i) for i in items) + b"\n"
    as_protobuf = to_protobuf(stream, items)

    expected = _decode(stream, "application/json", as_json, RECEIVED_NS)
    assert expected.schema.equals(STREAMS[stream])
    assert expected.num_rows == len(items)
    assert _decode(stream, "application/x-ndjson", as_ndjson, RECEIVED_NS).equals(expected)
    for protobuf_decoder in _protobuf_decoders():
        got = _decode(stream, "application/x-protobuf", as_protobuf, RECEIVED_NS, protobuf_decoder)
        assert got.equals(expected), protobuf_decoder


@settings(max_examples=50, deadline=None)
@given(items=batches("facts"))
def test_64_bit_integers_may_be_decimal_strings(items: list[dict[str, Any]]) -> None:
    as_numbers = _decode("facts", "application/json", msgspec.json.encode(items), RECEIVED_NS)
    stringly = [
        {**i, **{k: str(i[k]) for k in ("timestamp_unix_nano", "bytes_in", "bytes_out")}}
        for i in items
    ]
    as_strings = _decode("facts", "application/json", json.dumps(stringly).encode(), RECEIVED_NS)
    assert as_strings.equals(as_numbers)


def test_zero_timestamp_means_time_of_receipt() -> None:
    batch = _decode(
        "facts",
        "application/json",
        b'[{"service":"a"},{"service":"b","timestamp_unix_nano":5000000000000000000}]',
        RECEIVED_NS,
    )
    assert batch.column("timestamp").cast("int64").to_pylist() == [RECEIVED_NS, 5 * 10**18]


def test_active_decoder_is_reported() -> None:
    from gravixd.config import load

    _, name = select_protobuf_decoder(load({}, {"GRAVIXD_NATIVE": "0"}).config)
    assert name == "pure"


@settings(max_examples=60, deadline=None)
@given(
    maps=st.lists(
        st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=5),
        min_size=0,
        max_size=150,
    )
)
def test_attributes_are_sorted_the_same_on_the_python_and_the_arrow_paths(
    maps: list[dict[str, str]],
) -> None:
    # Up to 64 rows sort in Python, more in Arrow compute: both give sorted, unique keys.
    expected = [sorted(m.items()) for m in maps]
    assert attributes_column(maps).to_pylist() == expected
    big = maps * (65 // max(len(maps), 1) + 1)
    assert attributes_column(big).to_pylist() == [sorted(m.items()) for m in big]


_SEVERITY_SPELLINGS = {
    0: ["UNSPECIFIED", "severity_unspecified"],
    1: ["DEBUG", "trace", "Debug", "SEVERITY_TRACE"],
    2: ["info", "informational", "NOTICE"],
    3: ["warn", "Warning", "SEVERITY_WARN"],
    4: ["err", "ERROR", "severity_error"],
    5: ["crit", "critical", "alert", "emerg", "emergency", "fatal", "PANIC"],
}


def _rfc3339(nanos: int, offset_minutes: int) -> str:
    seconds, fraction = divmod(nanos, 10**9)
    offset = timezone(timedelta(minutes=offset_minutes))
    when = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)).astimezone(offset)
    text = when.replace(tzinfo=None).isoformat(timespec="seconds")
    sign, minutes = ("-", -offset_minutes) if offset_minutes < 0 else ("+", offset_minutes)
    return f"{text}.{fraction:09d}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@pytest.mark.parametrize("stream", list(STREAMS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_json_conveniences_are_the_same_events(stream: str, data: st.DataObject) -> None:
    """null for a default, an RFC 3339 `timestamp`, severity names: the same rows as the
    canonical form, on the small-request and the columnar path alike."""
    items = data.draw(batches(stream, max_size=24))
    convenient = []
    for item in items:
        item = dict(item)
        defaults = STREAM_DEFAULTS[stream]
        for key in defaults:
            if item[key] == defaults[key] and data.draw(st.booleans()):
                item[key] = None
        nanos = item["timestamp_unix_nano"]
        if nanos and data.draw(st.booleans()):
            del item["timestamp_unix_nano"]
            item["timestamp"] = _rfc3339(nanos, data.draw(st.integers(-23 * 60, 23 * 60)))
        if stream == "events" and item.get("severity") is not None:
            item["severity"] = data.draw(st.sampled_from(_SEVERITY_SPELLINGS[item["severity"]]))
        convenient.append(item)
    expected = _decode(stream, "application/json", msgspec.json.encode(items), RECEIVED_NS)
    got = _decode(stream, "application/json", msgspec.json.encode(convenient), RECEIVED_NS)
    assert got.equals(expected)
    as_ndjson = b"\n".join(msgspec.json.encode(i) for i in convenient)
    assert _decode(stream, "application/x-ndjson", as_ndjson, RECEIVED_NS).equals(expected)
