"""Decoding errors say what was expected, what came and where; good input lands whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from gravixd.core import decode as decode_module
from gravixd.core.decode import (
    as_record_batch,
    decode,
    decode_ndjson_lenient,
    decode_protobuf_pure,
    decode_valid,
)
from gravixd.errors import DecodeError
from gravixd.proto.gravix.v1 import events_pb2 as pb

NOW = 1_700_000_000_000_000_000

# (stream, content type, body, expected message, reason)
CASES = [
    (
        "facts",
        "application/json",
        b'[{"service":"a"},{"service":"b","status_code":"x"}]',
        "Expected `int`, got `str` - at `$[1].status_code`",
        "validation",
    ),
    (
        "facts",
        "application/json",
        b'{"service":"a","status_code":1000}',
        "Expected `int` <= 999 - at `$.status_code`",
        "validation",
    ),
    (
        "facts",
        "application/json",
        b'[{"route":"/x"}]',
        "Object missing required field `service` - at `$[0]`",
        "validation",
    ),
    (
        "facts",
        "application/json",
        b'[{"service":""}]',
        "Expected `str` of length >= 1 - at `$[0].service`",
        "validation",
    ),
    (
        "facts",
        "application/json",
        b'[{"service":"a","bytes_in":-1}]',
        "Expected `int` >= 0 - at `$[0].bytes_in`",
        "validation",
    ),
    (
        "facts",
        "application/json",
        b'[{"service":"a","bytes_out":"12x"}]',
        "Expected `int` or decimal string, got `12x` - at `$[0].bytes_out`",
        "validation",
    ),
    (
        "facts",
        "application/json",
        b'[{"service":"a","attributes":{"k":1}}]',
        "Expected `str`, got `int` - at `$[0].attributes[...]`",
        "validation",
    ),
    (
        "facts",
        "application/json",
        b'[{"service":"a"}',
        "Expected a JSON object or array: Input data was truncated",
        "invalid_json",
    ),
    (
        "facts",
        "application/json",
        b'"just a string"',
        "Expected `object | array`, got `str`",
        "validation",
    ),
    (
        "facts",
        "application/json",
        b'{"service":"caf\xe9"}',
        "Expected UTF-8 text, got invalid byte 0xe9 at byte 15",
        "invalid_utf8",
    ),
    (
        "events",
        "application/json",
        b'[{"service":"a","severity":"LOUD"}]',
        "Expected a severity number or name (any case, with or without SEVERITY_; DEBUG: "
        "trace, verbose, debug; INFO: info, information, informational, notice; WARN: warn, "
        "warning; ERROR: err, error; FATAL: crit, critical, alert, emerg, emergency, fatal, "
        "panic), got `LOUD` - at `$[0].severity`",
        "validation",
    ),
    (
        "facts",
        "application/x-ndjson",
        b'{"service":"a"}\n\n{"service":"b","status_code":-4}\n',
        "line 3: Expected `int` >= 0 - at `$.status_code`",
        "validation",
    ),
    (
        "facts",
        "application/x-ndjson",
        b'{"service":"a"}\n{"service":"b",\n',
        "line 2: Expected a JSON object: Input data was truncated",
        "invalid_json",
    ),
    ("facts", "application/x-protobuf", b"\x0a\x05\x12\x03api\x0a", None, "invalid_protobuf"),
    (
        "facts",
        "application/x-protobuf",
        pb.RequestFactBatch(
            facts=[pb.RequestFact(service="a"), pb.RequestFact(route="/x")]
        ).SerializeToString(),
        "Expected `str` of length >= 1, got `` - at `$.facts[1].service`",
        "validation",
    ),
    (
        "facts",
        "application/x-protobuf",
        pb.RequestFactBatch(
            facts=[pb.RequestFact(service="a", status_code=1000)]
        ).SerializeToString(),
        "Expected `int` <= 999, got `1000` - at `$.facts[0].status_code`",
        "validation",
    ),
    (
        "facts",
        "application/x-protobuf",
        pb.RequestFactBatch(
            facts=[pb.RequestFact(service="a", bytes_in=2**64 - 1)]
        ).SerializeToString(),
        f"Expected `int` <= {2**63 - 1}, got `{2**64 - 1}` - at `$.facts[0].bytes_in`",
        "validation",
    ),
]


def _decode(stream: str, *args: Any) -> Any:
    """decode() as a record batch, whether it deferred a small request's columns or not."""
    return as_record_batch(stream, decode(stream, *args))


@pytest.mark.parametrize(("stream", "media_type", "body", "message", "reason"), CASES)
def test_bad_payloads_are_rejected_with_a_clear_message(
    stream: str, media_type: str, body: bytes, message: str | None, reason: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        _decode(stream, media_type, body, NOW, decode_protobuf_pure)
    assert caught.value.reason == reason
    if message is not None:
        assert caught.value.message == message
    else:
        assert "gravix.v1.RequestFactBatch" in caught.value.message


def test_unknown_json_keys_and_protobuf_fields_are_ignored() -> None:
    batch = _decode("facts", "application/json", b'{"service":"a","new_field":[1,2]}', NOW)
    assert batch.column("service").to_pylist() == ["a"]
    # Field 99 (varint) in a RequestFact: a newer emitter's field.
    fact = pb.RequestFact(service="a").SerializeToString() + b"\x98\x06\x07"
    body = b"\x0a" + bytes([len(fact)]) + fact
    assert decode_protobuf_pure("facts", body, NOW).column("service").to_pylist() == ["a"]


def test_severity_names_and_numbers() -> None:
    body = (
        b'[{"service":"a","severity":"SEVERITY_ERROR"},{"service":"a","severity":"warn"},'
        b'{"service":"a","severity":1},{"service":"a","severity":42},{"service":"a"}]'
    )
    batch = _decode("events", "application/json", body, NOW)
    assert batch.column("severity").to_pylist() == ["ERROR", "WARN", "DEBUG", "42", "UNSPECIFIED"]


def test_attributes_are_stored_sorted_by_key() -> None:
    batch = _decode(
        "facts", "application/json", b'{"service":"a","attributes":{"z":"1","a":"2"}}', NOW
    )
    assert batch.column("attributes").to_pylist() == [[("a", "2"), ("z", "1")]]


def test_lenient_ndjson_skips_bad_lines_and_says_where() -> None:
    body = b'{"service":"a"}\n{"service":\n{"service":"c"}\n{"status_code":1}\n'
    batch, errors = decode_ndjson_lenient("facts", body, NOW, first_line=10, first_offset=1000)
    assert batch.column("service").to_pylist() == ["a", "c"]
    assert [(e.line, e.byte_offset, e.reason) for e in errors] == [
        (11, 1016, "invalid_json"),
        (13, 1044, "validation"),
    ]
    assert errors[1].message == "line 13: Object missing required field `service`"


def test_empty_array_is_an_empty_batch() -> None:
    assert _decode("facts", "application/json", b"[]", NOW).num_rows == 0


# Invalid UTF-8 anywhere: the reason and the byte are gravixd's, whatever msgspec raises (it
# raised UnicodeDecodeError up to 0.22, its own DecodeError without a position from 0.23).
# (Unknown keys are skipped unread, as msgspec does: their bytes are never stored.)
UTF8_CASES = [
    ("application/json", b'{"service":"caf\xe9"}', "invalid byte 0xe9 at byte 15"),
    (
        "application/json",
        b'[{"service":"a","attributes":{"k\xe9":"v"}}]',
        "invalid byte 0xe9 at byte 32",
    ),
    (
        "application/json",
        b'{"service":"a","attributes":{"k":"\xed\xa0\x80"}}',
        "invalid byte 0xed at byte 34",
    ),
    (
        "application/x-ndjson",
        b'{"service":"a"}\n{"service":"\xe9"}\n',
        "invalid byte 0xe9 at byte 12",
    ),
]


@pytest.mark.parametrize(("media_type", "body", "where"), UTF8_CASES)
def test_invalid_utf8_is_classified_and_placed(media_type: str, body: bytes, where: str) -> None:
    with pytest.raises(DecodeError) as caught:
        _decode("facts", media_type, body, NOW)
    assert caught.value.reason == "invalid_utf8"
    assert caught.value.message.endswith(f"Expected UTF-8 text, got {where}")


def test_a_syntax_error_before_the_bad_byte_is_reported_as_such() -> None:
    with pytest.raises(DecodeError) as caught:
        _decode("facts", "application/json", b'{"service" "a", "route":"\xe9"}', NOW)
    assert caught.value.reason == "invalid_json"


@pytest.mark.parametrize(
    "raised",
    [
        UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "unexpected end of data"),  # msgspec <= 0.22
        msgspec.DecodeError("Invalid UTF-8 encoded string"),  # msgspec 0.23
    ],
)
def test_either_msgspec_error_form_is_invalid_utf8(
    raised: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both forms msgspec has used, whichever msgspec is installed."""

    class Raising:
        def decode(self, _body: bytes) -> Any:
            raise raised

    monkeypatch.setitem(decode_module._BODY_DECODERS, "facts", Raising())
    with pytest.raises(DecodeError) as caught:
        _decode("facts", "application/json", b'{"service":"caf\xe9"}', NOW)
    assert (caught.value.reason, caught.value.message) == (
        "invalid_utf8",
        "Expected UTF-8 text, got invalid byte 0xe9 at byte 15",
    )


@pytest.mark.parametrize(
    "text", ["١٢", "1_000", " 12 ", "12 ", "\t12", "0x1f", "1e3", "", "+", "--1"]
)
@pytest.mark.parametrize("media_type", ["application/json", "application/x-ndjson"])
def test_int64_strings_are_ascii_digits_only(text: str, media_type: str) -> None:
    """Python's int() takes other scripts' digits, underscores and spaces; proto3 JSON does not."""
    body = msgspec.json.encode({"service": "a", "bytes_in": text})
    with pytest.raises(DecodeError) as caught:
        _decode("facts", media_type, body, NOW)
    expected = f"Expected `int` or decimal string, got `{text}` - at `$.bytes_in`"
    assert caught.value.message.removeprefix("line 1: ") == expected
    assert caught.value.reason == "validation"


def test_int64_strings_with_a_sign_are_accepted() -> None:
    body = (
        b'[{"service":"a","bytes_in":"+12","bytes_out":"007",'
        b'"timestamp_unix_nano":"+1700000000000000000"}]'
    )
    batch = _decode("facts", "application/json", body, NOW)
    assert batch.column("bytes_in").to_pylist() == [12]
    assert batch.column("bytes_out").to_pylist() == [7]
    assert batch.column("timestamp").cast("int64").to_pylist() == [1_700_000_000_000_000_000]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (rb'{"service":"\ud800"}', r"`\ud800` at byte 12"),
        (rb'{"service":"a","route":"x\uDBFFy"}', r"`\uDBFF` at byte 25"),
        (rb'{"service":"\udc00"}', r"`\udc00` at byte 12"),
        (rb'{"service":"\ud83d\ud83d\ude00"}', r"`\ud83d` at byte 12"),
    ],
)
def test_lone_surrogate_escapes_say_so(body: bytes, where: str) -> None:
    """msgspec calls a lone "\\ud800" "Input data was truncated"."""
    for media_type in ("application/json", "application/x-ndjson"):
        with pytest.raises(DecodeError) as caught:
            _decode("facts", media_type, body, NOW)
        expected = f"Expected valid Unicode, got lone surrogate escape {where}"
        assert caught.value.message.removeprefix("line 1: ") == expected
        assert caught.value.reason == "invalid_utf8"


def test_surrogate_pairs_and_escaped_backslashes_are_text() -> None:
    body = rb'[{"service":"\ud83d\ude00"},{"service":"\\ud800"}]'
    batch = _decode("facts", "application/json", body, NOW)
    assert batch.column("service").to_pylist() == ["\U0001f600", "\\ud800"]


# --- JSON conveniences (DESIGN.md section 2) --------------------------------------------------


def _utc_nanos(*when: int, fraction_ns: int = 0) -> int:
    return int(datetime(*when, tzinfo=UTC).timestamp()) * 10**9 + fraction_ns


def _both_paths(stream: str, item: dict[str, Any]) -> list[Any]:
    """`item` decoded alone (a small request's rows) and among 20 (the columnar path)."""
    one = _decode(stream, "application/json", msgspec.json.encode(item), NOW)
    many = _decode(stream, "application/json", msgspec.json.encode([item] * 20), NOW)
    assert many.slice(0, 1).equals(one)
    ndjson = b"\n".join([msgspec.json.encode(item)] * 20)
    assert _decode(stream, "application/x-ndjson", ndjson, NOW).equals(many)
    nanos = one.column("timestamp").cast("int64").to_pylist()
    rest = one.drop_columns(["timestamp"]).to_pylist()
    return [{**r, "timestamp": t} for r, t in zip(rest, nanos, strict=True)]


@pytest.mark.parametrize(
    ("stream", "item"),
    [
        (
            "facts",
            {"service": "a", "timestamp_unix_nano": None, "route": None, "method": None,
             "status_code": None, "duration_ms": None, "bytes_in": None, "bytes_out": None,
             "trace_id": None, "attributes": None, "timestamp": None},
        ),
        (
            "events",
            {"service": "a", "timestamp_unix_nano": None, "kind": None, "severity": None,
             "message": None, "trace_id": None, "attributes": None, "timestamp": None},
        ),
    ],
)  # fmt: skip
def test_null_means_the_default(stream: str, item: dict[str, Any]) -> None:
    expected = _both_paths(stream, {"service": "a"})
    assert _both_paths(stream, item) == expected
    assert expected[0]["timestamp"] == NOW


@pytest.mark.parametrize("media_type", ["application/json", "application/x-ndjson"])
def test_null_service_is_still_required(media_type: str) -> None:
    with pytest.raises(DecodeError) as caught:
        _decode("facts", media_type, b'{"service":null}', NOW)
    assert (
        caught.value.message.removeprefix("line 1: ")
        == "Expected `str`, got `null` - at `$.service`"
    )


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        (
            "2026-12-01T07:40:00.123456789+02:00",
            _utc_nanos(2026, 12, 1, 5, 40, fraction_ns=123_456_789),
        ),
        ("2026-12-01T05:40:00Z", _utc_nanos(2026, 12, 1, 5, 40)),
        ("2026-12-01t05:40:00.5z", _utc_nanos(2026, 12, 1, 5, 40, fraction_ns=500_000_000)),
        ("2026-12-01 05:40:00.000001+00:00", _utc_nanos(2026, 12, 1, 5, 40, fraction_ns=1000)),
        ("2026-11-30T23:10:00-06:30", _utc_nanos(2026, 12, 1, 5, 40)),
        ("2016-12-31T23:59:60Z", _utc_nanos(2017, 1, 1)),  # a leap second, as POSIX counts it
        ("2016-12-31T15:59:60-08:00", _utc_nanos(2017, 1, 1)),  # the same, RFC 3339 §5.7
        ("2017-01-01T05:29:60+05:30", _utc_nanos(2017, 1, 1)),
        ("1970-01-01T00:00:00.000000001Z", 1),  # next to the epoch: kept as that instant
        ("1969-12-31T23:59:59Z", -(10**9)),
    ],
)  # fmt: skip
def test_rfc3339_timestamps(text: str, nanos: int) -> None:
    for stream in ("facts", "events"):
        rows = _both_paths(stream, {"service": "a", "timestamp": text})
        assert rows[0]["timestamp"] == nanos


TIMESTAMP_ERRORS = [
    (  # before: stored as the time of receipt (0 means "receipt" in timestamp_unix_nano)
        {"timestamp": "1970-01-01T00:00:00Z"},
        'Expected a time other than the Unix epoch, got `1970-01-01T00:00:00Z`: 0 means "no '
        'time, use the time of receipt" here; leave `timestamp` out for that - at `$.timestamp`',
    ),
    (
        {"timestamp": "1970-01-01T02:00:00.000+02:00"},
        "Expected a time other than the Unix epoch, got `1970-01-01T02:00:00.000+02:00`: 0 "
        'means "no time, use the time of receipt" here; leave `timestamp` out for that - at '
        "`$.timestamp`",
    ),
    (  # before: 12:35:00; only a UTC day's last minute has a second 60
        {"timestamp": "2026-12-01T12:34:60Z"},
        "Expected seconds 00..59 (60 only in a leap second, 23:59:60 UTC), got "
        "`2026-12-01T12:34:60Z` - at `$.timestamp`",
    ),
    (
        {"timestamp": "2016-12-31T23:59:60+01:00"},
        "Expected seconds 00..59 (60 only in a leap second, 23:59:60 UTC), got "
        "`2016-12-31T23:59:60+01:00` - at `$.timestamp`",
    ),
    (
        {"timestamp": "2026-12-01T07:40:00.1234567891Z"},
        "Expected at most 9 fractional digits, got `2026-12-01T07:40:00.1234567891Z` - at "
        "`$.timestamp`",
    ),
    (
        {"timestamp": "2026-12-01T07:40:00"},
        "Expected an RFC 3339 time such as `2026-12-01T07:40:00.123456789+02:00`, got "
        "`2026-12-01T07:40:00` - at `$.timestamp`",
    ),
    (
        {"timestamp": "2026-02-30T07:40:00Z"},
        "Expected a valid calendar date, got `2026-02-30T07:40:00Z` - at `$.timestamp`",
    ),
    (
        {"timestamp": "2026-12-01T24:00:00Z"},
        "Expected a valid time of day, got `2026-12-01T24:00:00Z` - at `$.timestamp`",
    ),
    (
        {"timestamp": "2300-01-01T00:00:00Z"},
        "Expected a time between 1677-09-21 and 2262-04-11 (int64 nanoseconds), got "
        "`2300-01-01T00:00:00Z` - at `$.timestamp`",
    ),
    (
        {"timestamp": 1700000000},
        "Expected an RFC 3339 time such as `2026-12-01T07:40:00.123456789+02:00` (Unix time goes "
        "in `timestamp_unix_nano`, in nanoseconds), got `1700000000` - at `$.timestamp`",
    ),
    (
        {"timestamp": "2026-12-01T07:40:00Z", "timestamp_unix_nano": 1_790_000_000_000_000_000},
        "Expected `timestamp` or `timestamp_unix_nano`, got both - at `$.timestamp`",
    ),
    (
        {"timestamp_unix_nano": 1_700_000_000},
        "Expected Unix time in nanoseconds (>= 10^17, after 1973-03-03) or 0, got `1700000000`, "
        "which looks like seconds (times 10^9 is nanoseconds) - at `$.timestamp_unix_nano`",
    ),
    (
        {"timestamp_unix_nano": "1700000000000"},
        "Expected Unix time in nanoseconds (>= 10^17, after 1973-03-03) or 0, got "
        "`1700000000000`, which looks like milliseconds (times 10^6 is nanoseconds) - at "
        "`$.timestamp_unix_nano`",
    ),
    (
        {"timestamp_unix_nano": 1_700_000_000_000_000},
        "Expected Unix time in nanoseconds (>= 10^17, after 1973-03-03) or 0, got "
        "`1700000000000000`, which looks like microseconds (times 10^3 is nanoseconds) - at "
        "`$.timestamp_unix_nano`",
    ),
    (
        {"timestamp_unix_nano": -5},
        "Expected Unix time in nanoseconds (>= 10^17, after 1973-03-03) or 0, got `-5` - at "
        "`$.timestamp_unix_nano`",
    ),
]


@pytest.mark.parametrize(("fields", "message"), TIMESTAMP_ERRORS)
@pytest.mark.parametrize("count", [1, 20])
def test_timestamp_mistakes_are_400s_that_say_what_was_meant(
    fields: dict[str, Any], message: str, count: int
) -> None:
    good = {"service": "a"}
    items = [good] * (count - 1) + [{"service": "a", **fields}]
    body = msgspec.json.encode(items if count > 1 else items[0])
    for stream in ("facts", "events"):
        with pytest.raises(DecodeError) as caught:
            _decode(stream, "application/json", body, NOW)
        where = "$" if count == 1 else f"$[{count - 1}]"
        assert caught.value.message == message.replace("`$.", f"`{where}.")
        assert caught.value.reason == "validation"


SEVERITY_SPELLINGS = {
    "UNSPECIFIED": ["unspecified", "SEVERITY_UNSPECIFIED"],
    "DEBUG": ["trace", "debug", "DEBUG", "Debug", "SEVERITY_DEBUG", "severity_trace"]
    + ["verbose", "Verbose", "VERBOSE", "SEVERITY_VERBOSE"],  # Serilog, .NET
    "INFO": ["info", "informational", "notice", "NOTICE", "SEVERITY_INFO"]
    + ["Information", "information", "INFORMATION"],  # .NET's LogLevel, Serilog
    "WARN": ["warn", "warning", "Warning", "SEVERITY_WARN", "SEVERITY_WARNING"],
    "ERROR": ["err", "error", "ERR", "SEVERITY_ERROR"],
    "FATAL": ["crit", "critical", "alert", "emerg", "emergency", "fatal", "panic", "PANIC"],
}


@pytest.mark.parametrize(
    ("name", "stored"),
    [(name, stored) for stored, names in SEVERITY_SPELLINGS.items() for name in names],
)
def test_severity_names_of_syslog_and_opentelemetry(name: str, stored: str) -> None:
    rows = _both_paths("events", {"service": "a", "severity": name})
    assert rows[0]["severity"] == stored


# --- partial acceptance (invalid_events = "skip") ----------------------------------------------


def _valid(stream: str, media_type: str, body: bytes) -> Any:
    return decode_valid(stream, media_type, body, NOW, decode_protobuf_pure)


@pytest.mark.parametrize("count", [3, 40])  # small-request rows, and columns
def test_skip_keeps_the_valid_events_and_says_where_the_others_are(count: int) -> None:
    items: list[dict[str, Any]] = [{"service": "a", "trace_id": str(i)} for i in range(count)]
    items[1] = {"service": "a", "status_code": "x"}
    items[2] = {"service": "a", "timestamp_unix_nano": 1_700_000_000}
    result = _valid("facts", "application/json", msgspec.json.encode(items))
    assert as_record_batch("facts", result.decoded).column("trace_id").to_pylist() == [
        str(i) for i in range(count) if i not in (1, 2)
    ]
    assert (result.rejected, result.rejected_reasons) == (2, {"validation": 2})
    assert [(e.path, e.reason) for e in result.errors] == [
        ("$[1].status_code", "validation"),
        ("$[2].timestamp_unix_nano", "validation"),
    ]
    assert result.errors[0].message == "Expected `int`, got `str` - at `$[1].status_code`"
    assert "which looks like seconds" in result.errors[1].message


def test_skip_in_ndjson_names_lines_and_skips_bad_json_too() -> None:
    body = b'{"service":"a"}\n{"service":\n{"service":"b","severity":"loud"}\n{"service":"c"}\n'
    result = _valid("events", "application/x-ndjson", body)
    assert as_record_batch("events", result.decoded).column("service").to_pylist() == ["a", "c"]
    assert [(e.line, e.path, e.reason) for e in result.errors] == [
        (2, "$", "invalid_json"),
        (3, "$.severity", "validation"),
    ]


def test_skip_in_protobuf_leaves_out_invalid_messages() -> None:
    facts = [pb.RequestFact(service="a", trace_id="0"), pb.RequestFact(route="/x")]
    facts += [pb.RequestFact(service="a", trace_id="2", status_code=1000)]
    facts += [pb.RequestFact(service="b", trace_id="3")]
    body = pb.RequestFactBatch(facts=facts).SerializeToString()
    result = _valid("facts", "application/x-protobuf", body)
    assert result.decoded.column("trace_id").to_pylist() == ["0", "3"]
    assert [e.path for e in result.errors] == ["$.facts[1].service", "$.facts[2].status_code"]


@pytest.mark.parametrize(
    ("media_type", "body", "reason"),
    [
        ("application/json", b'[{"service":"a"},{"service":', "invalid_json"),  # no events
        ("application/json", b'[{"service":""},{"route":"/x"}]', "validation"),  # none valid
        ("application/json", b'{"service":""}', "validation"),
        ("application/x-ndjson", b'{"service":""}\n{"route":"/x"}\n', "validation"),
        ("application/x-protobuf", b"\x0a\x05\x12\x03api\x0a", "invalid_protobuf"),
    ],
)
def test_skip_still_rejects_a_body_without_a_valid_event(
    media_type: str, body: bytes, reason: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        _valid("facts", media_type, body)
    assert caught.value.reason == reason


def test_skip_reports_a_bounded_number_of_errors() -> None:
    body = msgspec.json.encode([{"service": ""}] * 500 + [{"service": "a"}])
    result = _valid("facts", "application/json", body)
    assert (result.decoded.num_rows, result.rejected, len(result.errors)) == (1, 500, 20)


@pytest.mark.parametrize("media_type", ["application/json", "application/x-ndjson"])
def test_an_unknown_severity_name_among_many_is_placed(media_type: str) -> None:
    items: list[dict[str, Any]] = [{"service": "a", "severity": "warning"}] * 40
    items[17] = {"service": "a", "severity": "loud"}
    if media_type == "application/json":
        body, where = msgspec.json.encode(items), "at `$[17].severity`"
    else:
        body, where = b"\n".join(map(msgspec.json.encode, items)), "at `$.severity`"
    with pytest.raises(DecodeError) as caught:
        _decode("events", media_type, body, NOW)
    assert caught.value.message.endswith(f"got `loud` - {where}")
    if media_type == "application/x-ndjson":
        assert caught.value.message.startswith("line 18: ")


@pytest.mark.parametrize("severity", [6, 9, 2**31 - 1])
def test_severity_numbers_beyond_the_names_are_stored_as_text(severity: int) -> None:
    """docs/http-api.md: 6..2147483647 (a newer emitter's enum value) is kept as its text."""
    rows = _both_paths("events", {"service": "a", "severity": severity})
    assert rows[0]["severity"] == str(severity)


@pytest.mark.parametrize("count", [1, 20])
@pytest.mark.parametrize("severity", [-1, 2**31, 2**70])
def test_severity_numbers_out_of_the_enums_range(count: int, severity: int) -> None:
    body = msgspec.json.encode([{"service": "a", "severity": severity}] * count)
    with pytest.raises(DecodeError) as caught:
        _decode("events", "application/json", body, NOW)
    assert caught.value.message == (
        f"Expected a severity number 0..2147483647, got `{severity}` - at `$[0].severity`"
    )


def test_json_lines_sent_as_application_json_are_ndjson() -> None:
    """Fluent Bit before 3.0 sends `format json_lines` with Content-Type application/json."""
    lines = b'{"service":"a","kind":"log","message":"one"}\n{"service":"b","kind":"log"}\n'
    batch = _decode("events", "application/json", lines, NOW)
    assert batch.column("service").to_pylist() == ["a", "b"]
    with pytest.raises(DecodeError) as caught:
        _decode("events", "application/json", lines + b'{"service":""}\n', NOW)
    assert caught.value.message == "line 3: Expected `str` of length >= 1 - at `$.service`"
    # One pretty-printed object with a mistake keeps its JSON error (its first line is `{`).
    with pytest.raises(DecodeError) as caught:
        _decode("events", "application/json", b'{\n "service": "a",\n}\n', NOW)
    assert caught.value.message.startswith("Expected a JSON object or array: JSON is malformed")


def test_unknown_keys_past_the_per_event_limit_are_dropped_and_counted() -> None:
    """A body of thousands of tiny unknown keys must not hold many times its size in memory:
    32 are kept per event (in wire order), the rest counted as over the limit."""
    from gravixd.core.unknown_fields import MAX_KEPT_PER_EVENT, UnknownFields

    extra = {f"k{i:02d}": i for i in range(MAX_KEPT_PER_EVENT + 8)}
    unknown = UnknownFields()
    body = json.dumps({"service": "a", **extra}).encode()
    decoded = decode("facts", "application/json", body, NOW, unknown=unknown)
    batch = as_record_batch("facts", decoded)
    kept = dict(batch.column("attributes")[0].as_py())
    assert kept == {f"k{i:02d}": str(i) for i in range(MAX_KEPT_PER_EVENT)}
    assert (unknown.found, unknown.over_limit) == (MAX_KEPT_PER_EVENT + 8, 8)
