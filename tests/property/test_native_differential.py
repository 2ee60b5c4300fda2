"""Differential property tests: the native C decoder against the pure (upb) path.

For any body, both paths must agree: the same record batch (schema, values, no nulls), or
both reject it with the same reason (and, for contract violations, the same message).
Bodies come three ways: valid batches encoded by the `protobuf` package; hand-built wire
bytes with what the package never writes (duplicates, unknown fields of every wire type,
wrong wire types, groups, padded varints, bad UTF-8); and random mutations of both.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from native_wire import (
    EGROUP,
    I32,
    I64,
    LEN,
    RECEIVED_NS,
    SGROUP,
    VARINT,
    assert_same,
    batches_equal,
    item,
    ld,
    tag,
    varint,
)

from gravixd.core.decode import decode_protobuf_pure
from gravixd.core.frame_decode import PythonFrameDecoder
from gravixd.native import NativeFrameDecoder, decode_protobuf
from gravixd.proto.gravix.v1 import events_pb2
from gravixd.schema import STREAMS

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.one_of(st.integers(0, 4096), st.integers(0, 2**64 - 1))
UINT32 = st.one_of(st.integers(0, 999), st.integers(0, 2**32 - 1))
TEXT = st.text(max_size=20)
SERVICE = st.one_of(st.sampled_from(["checkout", "cart", "é"]), TEXT)
ATTRIBUTES = st.dictionaries(TEXT, TEXT, max_size=6)

FACT = st.builds(
    events_pb2.RequestFact,
    timestamp_unix_nano=st.one_of(st.just(0), INT64),
    service=SERVICE,
    route=TEXT,
    method=st.sampled_from(["GET", "POST", ""]),
    status_code=UINT32,
    duration_ms=st.floats(allow_nan=True, allow_infinity=True),
    bytes_in=UINT64,
    bytes_out=UINT64,
    trace_id=TEXT,
    attributes=ATTRIBUTES,
)
EVENT = st.builds(
    events_pb2.ServiceEvent,
    timestamp_unix_nano=st.one_of(st.just(0), INT64),
    service=SERVICE,
    kind=TEXT,
    severity=st.one_of(st.integers(0, 5), st.integers(-(2**31), 2**31 - 1)),
    message=TEXT,
    trace_id=TEXT,
    attributes=ATTRIBUTES,
)


@st.composite
def encoded_batches(draw: st.DrawFn) -> tuple[str, bytes]:
    stream = draw(st.sampled_from(["facts", "events"]))
    if stream == "facts":
        batch: Any = events_pb2.RequestFactBatch(facts=draw(st.lists(FACT, max_size=8)))
    else:
        batch = events_pb2.ServiceEventBatch(events=draw(st.lists(EVENT, max_size=8)))
    return stream, batch.SerializeToString()


# --- hand-built wire bytes -------------------------------------------------------------

STRING_BYTES = st.one_of(
    TEXT.map(str.encode),
    st.binary(max_size=6),  # mostly invalid UTF-8
)


@st.composite
def unknown_fields(draw: st.DrawFn, depth: int = 2) -> bytes:
    field = draw(st.integers(1, 40))
    kind = draw(st.sampled_from([VARINT, I64, LEN, I32, SGROUP] if depth else [VARINT, LEN]))
    if kind == VARINT:
        return tag(field, VARINT) + varint(draw(st.integers(0, 2**64 - 1)))
    if kind == I64:
        return tag(field, I64) + draw(st.binary(min_size=8, max_size=8))
    if kind == I32:
        return tag(field, I32) + draw(st.binary(min_size=4, max_size=4))
    if kind == LEN:
        return ld(field, draw(st.binary(max_size=8)))
    inner = b"".join(draw(st.lists(unknown_fields(depth - 1), max_size=3)))
    return tag(field, SGROUP) + inner + tag(field, EGROUP)


@st.composite
def map_entries(draw: st.DrawFn, field: int) -> bytes:
    parts = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just(1), STRING_BYTES),
                st.tuples(st.just(2), STRING_BYTES),
                st.tuples(st.just(0), unknown_fields()),
            ),
            max_size=3,
        )
    )
    return ld(field, b"".join(ld(f, v) if f else v for f, v in parts))


def _known(stream: str) -> dict[int, Any]:
    """Field number -> strategy for the field's encoded bytes (right or wrong wire type)."""
    text = {2: "service", 3: "route", 4: "method", 9: "trace_id"}
    if stream == "events":
        text = {2: "service", 3: "kind", 5: "message", 6: "trace_id"}
    fields: dict[int, Any] = {n: STRING_BYTES.map(lambda b, n=n: ld(n, b)) for n in text}
    fields[1] = INT64.map(lambda v: tag(1, VARINT) + varint(v))
    if stream == "facts":
        fields[5] = UINT64.map(lambda v: tag(5, VARINT) + varint(v))
        fields[6] = st.binary(min_size=8, max_size=8).map(lambda b: tag(6, I64) + b)
        fields[7] = UINT64.map(lambda v: tag(7, VARINT) + varint(v))
        fields[8] = UINT64.map(lambda v: tag(8, VARINT) + varint(v))
        fields[10] = map_entries(10)
    else:
        fields[4] = UINT64.map(lambda v: tag(4, VARINT) + varint(v))
        fields[7] = map_entries(7)
    return fields


def _wrong_wire_type(field: int) -> Any:
    return st.sampled_from([VARINT, I64, LEN, I32]).map(
        lambda wt: (
            tag(field, wt) + {VARINT: b"\x01", I64: b"\0" * 8, LEN: b"\x01x", I32: b"\0" * 4}[wt]
        )
    )


@st.composite
def hand_built_batches(draw: st.DrawFn) -> tuple[str, bytes]:
    stream = draw(st.sampled_from(["facts", "events"]))
    known = _known(stream)
    items = []
    for _ in range(draw(st.integers(0, 5))):
        chunks = [ld(2, b"svc")] if draw(st.booleans()) else []
        for _ in range(draw(st.integers(0, 8))):
            field = draw(st.sampled_from(sorted(known)))
            choice = draw(st.integers(0, 9))
            if choice < 6:
                chunks.append(draw(known[field]))  # repeated fields: the last wins
            elif choice < 8:
                chunks.append(draw(unknown_fields()))
            else:
                chunks.append(draw(_wrong_wire_type(field)))
        items.append(item(b"".join(chunks)))
        if draw(st.booleans()):
            items.append(draw(unknown_fields()))  # unknown fields of the batch itself
    return stream, b"".join(items)


@SETTINGS
@given(encoded_batches())
def test_valid_batches_decode_identically(case: tuple[str, bytes]) -> None:
    assert_same(*case)


@SETTINGS
@given(hand_built_batches())
def test_hand_built_wire_bytes_decode_identically(case: tuple[str, bytes]) -> None:
    assert_same(*case)


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> tuple[str, bytes]:
    stream, body = draw(base)
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(data):
            data[at] = draw(st.sampled_from([0x00, 0x0A, 0x0B, 0x0C, 0x7F, 0x80, 0xFF, 0xC0, 0xED]))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 16))]
    return stream, bytes(data)


@SETTINGS
@given(mutated(encoded_batches()))
def test_mutated_valid_bytes_agree(case: tuple[str, bytes]) -> None:
    assert_same(*case)


@SETTINGS
@given(mutated(hand_built_batches()))
def test_mutated_hand_built_bytes_agree(case: tuple[str, bytes]) -> None:
    assert_same(*case)


@SETTINGS
@given(st.lists(FACT, max_size=8))
def test_tcp_frames_turned_into_a_batch_decode_as_the_batch(facts: list[Any]) -> None:
    # The raw-TCP helper's transformation: each delimited RequestFact gets tag 0x0a.
    frames = b"".join(b"\x0a" + varint(f.ByteSize()) + f.SerializeToString() for f in facts)
    native = assert_same("facts", frames)
    whole = events_pb2.RequestFactBatch(facts=facts).SerializeToString()
    if native[0] == "ok":
        assert batches_equal(native[1], decode_protobuf_pure("facts", whole, RECEIVED_NS))


# --- raw TCP: the C stream entry point against ProtobufFramer + a batch decoder ----------


def _message_bytes(draw: st.DrawFn, stream: str) -> bytes:
    """The bytes of one frame's message: valid, breaking the contract, or hand-built."""
    kind = draw(st.integers(0, 9))
    message: Any
    if kind < 5:
        message = draw(FACT if stream == "facts" else EVENT)
    elif kind == 5:  # well-formed, but an empty service: rejected alone, the stream goes on
        message = draw(FACT if stream == "facts" else EVENT)
        message.service = ""
    elif kind < 9:  # what the package never writes; may parse, break the contract, or not
        _, body = draw(hand_built_batches())
        return draw(st.sampled_from([body, body[: len(body) // 2]]))
    else:
        return draw(st.binary(max_size=12))
    return bytes(message.SerializeToString())


@st.composite
def frame_streams(draw: st.DrawFn) -> tuple[str, bytes, int]:
    """(stream, bytes a connection sends, max_frame_bytes)."""
    stream = draw(st.sampled_from(["facts", "events"]))
    max_frame_bytes = draw(st.sampled_from([1 << 20, 160]))
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        message = _message_bytes(draw, stream)
        prefix = varint(len(message))
        choice = draw(st.integers(0, 19))
        if choice == 0:  # a padded 6-byte length prefix: a frame, but no protobuf length
            prefix = bytes(b | 0x80 for b in prefix) + b"\x80" * (5 - len(prefix)) + b"\x00"
        elif choice == 1:  # framing lost: a length above the limit
            prefix = varint(max_frame_bytes + draw(st.integers(1, 2**70)))
        elif choice == 2:  # framing lost: 10 bytes with the continuation bit
            prefix = b"\x80" * 10
        parts.append(prefix + message)
    wire = b"".join(parts)
    if draw(st.booleans()):  # the connection closes inside a frame
        wire = wire[: draw(st.integers(0, len(wire)))]
    return stream, wire, max_frame_bytes


def _feed_all(decoder: Any, chunks: list[bytes]) -> tuple[Any, ...]:
    """Everything a connection would see: rows, rejected frames, error, half frame at EOF."""
    batches, rejected, error = [], [], None
    for chunk in chunks:
        out = decoder.feed(chunk, RECEIVED_NS)
        batches += out.batches
        rejected += out.rejected
        if out.error is not None:
            error = out.error
            break
    truncated = decoder.eof() if error is None else None
    return batches, rejected, error, truncated


def _rows(stream: str, batches: list[Any]) -> Any:
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=STREAMS[stream])
    return pa.concat_batches(batches)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_streams())
def test_stream_entry_point_agrees_with_framer_and_decoder_at_every_split(
    case: tuple[str, bytes, int],
) -> None:
    stream, wire, max_frame_bytes = case
    pure = _feed_all(PythonFrameDecoder(decode_protobuf_pure, stream, max_frame_bytes), [wire])
    # The native batch decoder behind the Python framer words parse errors as C does.
    worded = _feed_all(PythonFrameDecoder(decode_protobuf, stream, max_frame_bytes), [wire])
    splits = [[wire[:cut], wire[cut:]] for cut in range(len(wire) + 1)]
    splits.append([wire[i : i + 1] for i in range(len(wire))])  # byte by byte
    for chunks in splits:
        batches, rejected, error, truncated = _feed_all(
            NativeFrameDecoder(stream, max_frame_bytes), chunks
        )
        assert batches_equal(_rows(stream, batches), _rows(stream, pure[0])), chunks
        for batch in batches:
            batch.validate(full=True)
        assert rejected == pure[1] == worded[1], chunks
        assert truncated == pure[3], chunks
        if error is None:
            assert pure[2] is None, chunks
        else:
            assert pure[2] is not None, chunks
            assert (error.reason, error.byte_offset) == (pure[2].reason, pure[2].byte_offset)
            assert error.message == worded[2].message, chunks
