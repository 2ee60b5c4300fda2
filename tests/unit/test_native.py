"""The native protobuf decoder (gravixd.native) against the pure path, case by case.

Each wire corner case below was checked against upb (the `protobuf` package) and is held to
it: the native decoder must accept what upb accepts, reject what it rejects, and give the
identical table. The `accepted` column documents upb's behaviour, but for one rule both paths
add: a known field with another wire type (which upb skips as unknown) means another message
was posted (a lone RequestFact, a facts batch sent as events), refused as `wrong_message`.
"""

from __future__ import annotations

import logging
import math
import struct

import pyarrow as pa
import pytest
from native_wire import (
    EGROUP,
    I32,
    I64,
    RECEIVED_NS,
    SGROUP,
    VARINT,
    assert_same,
    entry,
    item,
    ld,
    tag,
    varint,
)

from gravixd import native
from gravixd.core.decode import decode, decode_protobuf_pure
from gravixd.errors import DecodeError
from gravixd.proto.gravix.v1 import events_pb2
from gravixd.schema import COLUMNS, EVENTS_SCHEMA, FACTS_SCHEMA, STREAMS

SVC = ld(2, b"a")  # service "a": a fact/event that passes validation


def groups(field: int, depth: int) -> bytes:
    return tag(field, SGROUP) * depth + tag(field, EGROUP) * depth


# (name, stream, body, accepted by upb)
CASES = [
    ("empty body", "facts", b"", True),
    ("one fact", "facts", item(SVC), True),
    ("empty fact fails validation", "facts", item(b""), False),
    ("known field, wrong wire type, refused", "facts", item(SVC + tag(2, VARINT) + b"\x05"), False),
    ("timestamp as length-delimited", "facts", item(SVC + ld(1, b"x")), False),
    ("batch field 1 as varint", "facts", b"\x08\x05", False),
    (
        "double then varint duration",
        "facts",
        item(SVC + tag(6, I64) + struct.pack("<d", 2.0) + tag(6, VARINT) + b"\x05"),
        False,
    ),
    ("status as fixed32", "facts", item(SVC + tag(5, I32) + b"\x01\x02\x03\x04"), False),
    ("severity as length-delimited", "events", item(SVC + ld(4, b"x")), False),
    ("attributes as varint", "facts", item(SVC + tag(10, VARINT) + b"\x01"), False),
    ("unknown group", "facts", item(SVC + tag(11, SGROUP) + b"\x08\x01" + tag(11, EGROUP)), True),
    (
        "unknown group, nested",
        "facts",
        item(SVC + tag(11, SGROUP) + groups(12, 1) + tag(11, EGROUP)),
        True,
    ),
    ("group with a mismatched end", "facts", item(SVC + tag(11, SGROUP) + tag(12, EGROUP)), False),
    ("end group at top level", "facts", tag(1, EGROUP), False),
    ("end group in a message", "facts", item(SVC + tag(11, EGROUP)), False),
    ("unterminated group", "facts", item(SVC + tag(11, SGROUP) + b"\x08\x01"), False),
    ("unterminated group at top level", "facts", item(SVC) + tag(1, SGROUP), False),
    (
        "group across a message end",
        "facts",
        b"\x0a\x04" + SVC + tag(11, SGROUP) + tag(11, EGROUP),
        False,
    ),
    ("top-level group", "facts", tag(1, SGROUP) + ld(1, b"\xff") + tag(1, EGROUP), False),
    (
        "field 0 in a group is tolerated",
        "facts",
        item(SVC + tag(11, SGROUP) + b"\x00\x00\x02\x01x\x05abcd\x03\x04" + tag(11, EGROUP)),
        True,
    ),
    (
        "group with bad wire type inside",
        "facts",
        item(SVC + tag(11, SGROUP) + b"\x0e" + tag(11, EGROUP)),
        False,
    ),
    (
        "group with past-end length inside",
        "facts",
        item(SVC + tag(11, SGROUP) + b"\x0a\x05ab" + tag(11, EGROUP)),
        False,
    ),
    ("wire type 6", "facts", item(SVC + b"\x5e"), False),
    ("wire type 7", "facts", item(SVC + b"\x5f"), False),
    ("field 0", "facts", item(SVC + b"\x00\x01"), False),
    ("field 0 at top level", "facts", b"\x00\x00", False),
    ("highest field number", "facts", item(SVC + varint((2**29 - 1) << 3) + b"\x00"), True),
    ("tag of 6 bytes", "facts", item(SVC + b"\xf8\xff\xff\xff\xff\x01\x00"), False),
    ("tag over 32 bits", "facts", item(SVC + b"\x80\x80\x80\x80\x10\x00"), False),
    ("tag padded to 5 bytes", "facts", item(b"\x92\x80\x80\x80\x00\x01a"), True),
    (
        "tag over 32 bits in a group",
        "facts",
        item(SVC + tag(11, SGROUP) + b"\x80\x80\x80\x80\x10\x00" + tag(11, EGROUP)),
        False,
    ),
    ("end-group tag padded", "facts", item(SVC + tag(11, SGROUP) + b"\xdc\x80\x80\x80\x00"), True),
    ("10-byte varint", "facts", item(SVC + b"\x08" + b"\xff" * 9 + b"\x01"), True),
    ("10-byte varint, bits past 64", "facts", item(SVC + b"\x08" + b"\xff" * 9 + b"\x7f"), True),
    ("varint overflowing to 0", "facts", item(SVC + b"\x08" + b"\x80" * 9 + b"\x02"), True),
    ("11-byte varint", "facts", item(SVC + b"\x08" + b"\xff" * 10 + b"\x01"), False),
    (
        "11-byte varint in a group",
        "facts",
        item(SVC + tag(11, SGROUP) + b"\x08" + b"\xff" * 10 + b"\x01" + tag(11, EGROUP)),
        False,
    ),
    ("truncated varint", "facts", item(SVC + b"\x08\x80"), False),
    ("truncated tag", "facts", item(SVC + b"\x80"), False),
    ("truncated fixed64", "facts", item(SVC + b"\x31\x00\x00"), False),
    ("truncated unknown fixed32", "facts", item(SVC + b"\x65\x00\x00"), False),
    ("length padded to 5 bytes", "facts", b"\x0a\x83\x80\x80\x80\x00" + SVC, True),
    ("length padded to 6 bytes", "facts", b"\x0a\x83\x80\x80\x80\x80\x00" + SVC, False),
    ("string length padded to 5", "facts", item(b"\x12\x81\x80\x80\x80\x00a"), True),
    ("length with bit 32", "facts", item(b"\x12\x81\x80\x80\x80\x10a"), False),
    ("length past the end", "facts", b"\x0a\x05" + SVC, False),
    ("length past a message end", "facts", b"\x0a\x03\x12\x05a" + b"bcdef", False),
    ("status 2^32 + 5 keeps low 32 bits", "facts", item(SVC + b"\x28" + varint(2**32 + 5)), True),
    ("status 1000", "facts", item(SVC + b"\x28" + varint(1000)), False),
    ("bytes_in 2^63", "facts", item(SVC + b"\x38" + varint(2**63)), False),
    ("bytes_out 2^64 - 1", "facts", item(SVC + b"\x40" + varint(2**64 - 1)), False),
    ("negative timestamp", "facts", item(SVC + b"\x08" + varint(-5)), True),
    ("severity 2^32 + 3", "events", item(SVC + b"\x20" + varint(2**32 + 3)), True),
    ("severity -1", "events", item(SVC + b"\x20" + varint(-1)), True),
    ("severity 2^31", "events", item(SVC + b"\x20" + varint(2**31)), True),
    ("severity 9", "events", item(SVC + b"\x20\x09"), True),
    ("empty map entry", "facts", item(SVC + ld(10, b"")), True),
    (
        "duplicate map keys: last wins",
        "facts",
        item(
            SVC + ld(10, entry(b"k", b"v")) + ld(10, entry(b"a", b"1")) + ld(10, entry(b"k", b"w"))
        ),
        True,
    ),
    ("map key given twice", "facts", item(SVC + ld(10, entry(b"k", None) + ld(1, b"j"))), True),
    ("map value missing", "events", item(SVC + ld(7, entry(b"k", None))), True),
    ("map key missing", "events", item(SVC + ld(7, entry(None, b"v"))), True),
    ("map entry key with wrong wire type", "facts", item(SVC + ld(10, b"\x08\x01")), True),
    ("map entry unknown field", "facts", item(SVC + ld(10, entry() + b"\x18\x01")), True),
    ("map entry group", "facts", item(SVC + ld(10, b"\x1b\x08\x01\x1c")), True),
    ("map entry end group", "facts", item(SVC + ld(10, b"\x0c")), False),
    ("map entry bad UTF-8 key", "facts", item(SVC + ld(10, entry(b"\xff", b"v"))), False),
    ("map entry bad UTF-8 value", "events", item(SVC + ld(7, entry(b"k", b"\xc0\x80"))), False),
    (
        "many map entries, unsorted, duplicated",
        "facts",
        item(SVC + b"".join(ld(10, entry(b"k%d" % (i % 23), b"v%d" % i)) for i in range(60))),
        True,
    ),
    ("bad UTF-8", "facts", item(ld(2, b"\xff")), False),
    ("surrogate", "facts", item(ld(2, b"\xed\xa0\x80")), False),
    ("overlong", "facts", item(ld(2, b"\xc0\x80")), False),
    ("above U+10FFFF", "facts", item(ld(2, b"\xf4\x90\x80\x80")), False),
    ("4-byte UTF-8", "facts", item(ld(2, "😀".encode())), True),
    ("NUL in a string", "facts", item(ld(2, b"\x00")), True),
    ("bad UTF-8 in an unknown field", "facts", item(SVC + ld(12, b"\xff")), True),
    ("bad UTF-8 later overwritten", "facts", item(ld(2, b"\xff") + SVC), False),
    ("bad UTF-8 in the middle of ASCII", "facts", item(ld(2, b"abcdefghij\xffklmnop")), False),
    ("truncated 3-byte sequence at the end", "facts", item(ld(2, b"abcdefgh\xe2\x82")), False),
    ("groups nested 99 deep in a fact", "facts", item(SVC + groups(11, 99)), True),
    ("groups nested 100 deep in a fact", "facts", item(SVC + groups(11, 100)), False),
    ("groups nested 100 deep at top level", "facts", groups(2, 100), True),
    ("groups nested 101 deep at top level", "facts", groups(2, 101), False),
    ("groups nested 98 deep in a map entry", "facts", item(SVC + ld(10, groups(3, 98))), True),
    ("groups nested 99 deep in a map entry", "facts", item(SVC + ld(10, groups(3, 99))), False),
    (
        "events: every field",
        "events",
        item(
            b"\x08\x07"
            + SVC
            + ld(3, b"deploy")
            + b"\x20\x04"
            + ld(5, b"msg")
            + ld(6, b"t")
            + ld(7, entry())
        ),
        True,
    ),
    ("events: empty service", "events", item(ld(3, b"deploy")), False),
]


@pytest.mark.parametrize(("name", "stream", "body", "accepted"), CASES, ids=[c[0] for c in CASES])
def test_wire_corner_cases_match_upb(name: str, stream: str, body: bytes, accepted: bool) -> None:
    result = assert_same(stream, body)
    assert (result[0] == "ok") == accepted, result


def test_extension_is_built() -> None:
    # CI installs with a C compiler: the fast path must really be there.
    assert native.AVAILABLE


def _fact(**fields: object) -> events_pb2.RequestFact:
    return events_pb2.RequestFact(**{"service": "svc", **fields})  # type: ignore[arg-type]


def _facts_body(*facts: events_pb2.RequestFact) -> bytes:
    return events_pb2.RequestFactBatch(facts=facts).SerializeToString()


def test_every_fact_field_lands_in_its_column() -> None:
    body = _facts_body(
        _fact(
            timestamp_unix_nano=-3, route="/u/{id}", method="GET", status_code=503,
            duration_ms=1.5, bytes_in=2**63 - 1, bytes_out=7, trace_id="ab",
            attributes={"z": "1", "a": "2", "é": "3"},
        ),
        _fact(timestamp_unix_nano=0),
    )  # fmt: skip
    batch = native.decode_protobuf("facts", body, RECEIVED_NS)
    assert batch.schema == FACTS_SCHEMA
    assert batch.column("timestamp").view(pa.int64()).to_pylist() == [-3, RECEIVED_NS]
    row = batch.drop_columns(["timestamp"]).to_pylist()[0]
    assert row == {
        "service": "svc", "route": "/u/{id}", "method": "GET", "status_code": 503,
        "duration_ms": 1.5, "bytes_in": 2**63 - 1, "bytes_out": 7, "trace_id": "ab",
        "attributes": [("a", "2"), ("z", "1"), ("é", "3")],  # sorted by key
    }  # fmt: skip


def test_severity_names_and_unknown_numbers() -> None:
    events = [events_pb2.ServiceEvent(service="s", severity=n) for n in (0, 1, 2, 3, 4, 5, 9, -1)]  # type: ignore[arg-type]
    body = events_pb2.ServiceEventBatch(events=events).SerializeToString()
    batch = native.decode_protobuf("events", body, RECEIVED_NS)
    assert batch.schema == EVENTS_SCHEMA
    assert batch.column("severity").to_pylist() == [
        "UNSPECIFIED", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "9", "-1",
    ]  # fmt: skip


def test_malformed_input_names_the_byte() -> None:
    body = item(SVC) + b"\x0a\x80"  # the second fact's length varint is cut short
    with pytest.raises(DecodeError) as info:
        native.decode_protobuf("facts", body, RECEIVED_NS)
    assert info.value.reason == "invalid_protobuf"
    assert info.value.message == (
        "Expected a `gravix.v1.RequestFactBatch` protobuf message, got a truncated varint at byte 6"
    )


_MAX = "Expected `int` <= 9223372036854775807"


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (
            [_fact()] * 3 + [_fact(status_code=1000)],
            "Expected `int` <= 999, got `1000` - at `$.facts[3].status_code`",
        ),
        # The pure path checks every service first, then status codes, then bytes.
        (
            [_fact(status_code=1000), _fact(service="")],
            "Expected `str` of length >= 1, got `` - at `$.facts[1].service`",
        ),
        (
            [_fact(bytes_out=2**64 - 1), _fact(bytes_in=2**63)],
            f"{_MAX}, got `9223372036854775808` - at `$.facts[1].bytes_in`",
        ),
    ],
)
def test_validation_messages_are_the_pure_paths(facts: list[object], message: str) -> None:
    body = _facts_body(*facts)  # type: ignore[arg-type]
    for decoder in (native.decode_protobuf, decode_protobuf_pure):
        with pytest.raises(DecodeError) as info:
            decoder("facts", body, RECEIVED_NS)
        assert (info.value.reason, info.value.message) == ("validation", message)


def test_plugs_into_decode() -> None:
    body = _facts_body(_fact(duration_ms=math.inf))
    batch = decode(
        "facts", "application/x-protobuf", body, 1, protobuf_decoder=native.decode_protobuf
    )
    assert batch.equals(decode("facts", "application/x-protobuf", body, 1))


def test_tcp_frames_prefixed_with_field_one_are_a_batch() -> None:
    # A raw-TCP RequestFact frame is a field-1 payload: tag 0x0a + varint length makes a batch.
    frames = [
        _fact(route=f"/r{i}", attributes={"i": str(i)}).SerializeToString() for i in range(300)
    ]
    body = b"".join(b"\x0a" + varint(len(f)) + f for f in frames)
    assert native.decode_protobuf("facts", body, 1).num_rows == 300
    assert_same("facts", body)


def test_accepts_bytearray_and_memoryview() -> None:
    body = _facts_body(_fact(), _fact(route="/x"))
    expected = native.decode_protobuf("facts", body, 1)
    for view in (bytearray(body), memoryview(body)):
        assert native.decode_protobuf("facts", view, 1).equals(expected)  # type: ignore[arg-type]


def test_batch_outlives_its_source_body() -> None:
    body = bytearray(_facts_body(_fact(route="/kept")))
    batch = native.decode_protobuf("facts", bytes(body), 1)
    body[:] = b"\x00" * len(body)
    del body
    assert batch.column("route").to_pylist() == ["/kept"]  # copied out of the body


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_gravixd_native_0_forces_the_pure_path(value: str) -> None:
    decoder, name = native.select_protobuf_decoder({"GRAVIXD_NATIVE": value})
    assert (decoder, name) == (decode_protobuf_pure, "pure")


def test_native_path_is_the_default_when_built() -> None:
    assert native.select_protobuf_decoder({}) == (native.decode_protobuf, "native")
    assert native.select_protobuf_decoder({"GRAVIXD_NATIVE": "1"})[1] == "native"


def test_falls_back_with_one_log_line_when_not_built(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(native, "AVAILABLE", False)
    with caplog.at_level(logging.WARNING, logger="gravixd.native"):
        assert native.select_protobuf_decoder({}) == (decode_protobuf_pure, "pure")
    assert len(caplog.records) == 1
    assert "pure protobuf path" in caplog.records[0].getMessage()


# upb keeps a map entry that holds any unknown field out of the map (as an unknown field of
# the message): such an entry neither adds nor overrides a key.
_K_V_UNKNOWN = ld(10, entry(b"k", b"v") + b"\x18\x01")
_UNKNOWN_IN_ENTRY = [
    ("entry with unknown field, then same key", _K_V_UNKNOWN + ld(10, entry(b"k", b"w"))),
    ("same key, then entry with unknown field", ld(10, entry(b"k", b"w")) + _K_V_UNKNOWN),
    ("key with wrong wire type, then key", ld(10, b"\x08\x01" + entry(b"k", b"w"))),
    ("unknown fixed32 in entry", ld(10, entry(b"k", None) + b"\x1d\x01\x02\x03\x04")),
]  # fmt: skip


@pytest.mark.parametrize(
    "attrs", [c[1] for c in _UNKNOWN_IN_ENTRY], ids=[c[0] for c in _UNKNOWN_IN_ENTRY]
)
def test_map_entry_with_unknown_field_is_dropped_as_upb_does(attrs: bytes) -> None:
    result = assert_same("facts", item(SVC + attrs))
    assert result[0] == "ok"
    assert result[1].column("attributes").to_pylist()[0] in ([], [("k", "w")])


@pytest.mark.parametrize("stream", ["facts", "events"])
def test_exported_arrow_schema_is_the_contracts(stream: str) -> None:
    # decode_protobuf imports the C arrays against schema.py's schema without reading the
    # C side's; this holds the two equal (names, types, nullability, the map's layout).
    assert native.exported_schema(stream).equals(STREAMS[stream])


@pytest.mark.parametrize("stream", ["facts", "events"])
def test_c_column_table_is_schema_pys(stream: str) -> None:
    # One table: the X-macro rows of native/gravix_columns.h (slots, buffers, names, tags)
    # are schema.COLUMNS' columns, kinds and proto field numbers, in order.
    expected = [(c.field.name, c.kind, c.proto_number) for c in COLUMNS[stream]]
    assert native.column_table(stream) == expected


def test_empty_body_is_an_empty_batch_with_the_schema() -> None:
    batch = native.decode_protobuf("events", b"", RECEIVED_NS)
    assert batch.num_rows == 0 and batch.schema.equals(STREAMS["events"])
    batch.validate(full=True)


def test_raw_tcp_uses_the_c_stream_entry_point_with_the_native_decoder() -> None:
    from gravixd.core.frame_decode import PythonFrameDecoder

    assert isinstance(
        native.open_frame_decoder(native.decode_protobuf, "facts", 1024), native.NativeFrameDecoder
    )
    # GRAVIXD_NATIVE=0 (or a test's decoder): the Python framer feeds that decoder.
    assert isinstance(
        native.open_frame_decoder(decode_protobuf_pure, "facts", 1024), PythonFrameDecoder
    )


def test_a_large_frame_in_small_reads_is_decoded_once_it_is_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The C stream entry point says where a partial frame ends, so the reads in between are
    # only buffered: no C call (and no re-scan of the buffer) per read. Counted, not timed.
    calls = []

    class CountingLib:
        def __getattr__(self, name: str) -> object:
            if name == "gx_decode_stream_arrow":
                calls.append(name)
            return getattr(lib, name)

    lib = native.lib
    monkeypatch.setattr(native, "lib", CountingLib())
    fact = events_pb2.RequestFact(service="checkout", route="/" + "r" * 1_000_000)
    message = fact.SerializeToString()
    wire = (varint(len(message)) + message) * 2
    wire = wire[: len(wire) - len(message) + 10]
    decoder = native.NativeFrameDecoder("facts", 4 * 2**20)
    batches = []
    for at in range(0, len(wire), 4096):
        batches += decoder.feed(wire[at : at + 4096], RECEIVED_NS).batches
    assert len(calls) <= 4  # the first read, the one that completes a frame, and so on
    assert [b.num_rows for b in batches] == [1]
    expected = decode_protobuf_pure("facts", item(message), RECEIVED_NS)
    assert batches[0].equals(expected)
    prefix_bytes = len(varint(len(message)))
    assert decoder.buffered_bytes == prefix_bytes + 10  # the second frame, still partial
    truncated = decoder.eof()
    assert truncated is not None and truncated.byte_offset == prefix_bytes + len(message)
