"""The raw TCP framers: each input whole, split at every byte boundary, and byte by byte.

What a user relies on: every complete line/frame comes out exactly once, in order, whatever
the segmentation TCP chose; bad units are reported with the right line and byte offset.
"""

from __future__ import annotations

import pytest

from gravixd.core.framing import (
    FrameBatch,
    FramingError,
    Lines,
    NdjsonFramer,
    OversizeLine,
    ProtobufFramer,
    TrailingLine,
    TruncatedFrame,
    encode_varint,
)
from gravixd.proto.gravix.v1 import events_pb2

# --- helpers ---------------------------------------------------------------------------------


def splits(data: bytes) -> list[list[bytes]]:
    """The whole input, every two-piece split, and byte by byte."""
    cases = [[data]]
    cases += [[data[:i], data[i:]] for i in range(1, len(data))]
    cases.append([data[i : i + 1] for i in range(len(data))])
    return cases


def run_ndjson(pieces: list[bytes], max_line_bytes: int = 1024) -> list[object]:
    framer = NdjsonFramer(max_line_bytes)
    events: list[object] = []
    for piece in pieces:
        events += framer.feed(piece)
    events += framer.eof()
    return events


def lines_of(events: list[object]) -> list[tuple[int, int, bytes]]:
    """(line number, byte offset, content) of every line handed out, whatever the chunking."""
    out = []
    for event in events:
        if isinstance(event, Lines):
            offset = event.first_offset
            for number, line in enumerate(event.body.split(b"\n")[:-1], start=event.first_line):
                out.append((number, offset, line))
                offset += len(line) + 1
        elif isinstance(event, TrailingLine):
            out.append((event.line, event.byte_offset, event.body))
    return out


def oversize_of(events: list[object]) -> list[tuple[int, int, int]]:
    return [(e.line, e.byte_offset, e.length_bytes) for e in events if isinstance(e, OversizeLine)]


def frame(message: bytes) -> bytes:
    return encode_varint(len(message)) + message


def run_protobuf(
    pieces: list[bytes], max_frame_bytes: int = 1 << 20
) -> tuple[list[bytes], FramingError | None, TruncatedFrame | None]:
    framer = ProtobufFramer(max_frame_bytes)
    messages: list[bytes] = []
    for piece in pieces:
        feed = framer.feed(piece)
        messages += feed.frames.messages()
        if feed.error is not None:
            return messages, feed.error, None
    return messages, None, framer.eof()


# --- ndjson ----------------------------------------------------------------------------------

NDJSON = b'{"service":"a"}\n{"service":"bb"}\n\n{"service":"ccc"}\n'
EXPECTED_LINES = [
    (1, 0, b'{"service":"a"}'),
    (2, 16, b'{"service":"bb"}'),
    (3, 33, b""),
    (4, 34, b'{"service":"ccc"}'),
]


@pytest.mark.parametrize("pieces", splits(NDJSON), ids=lambda p: f"{len(p)}-pieces")
def test_ndjson_lines_survive_any_split(pieces: list[bytes]) -> None:
    events = run_ndjson(pieces)
    assert lines_of(events) == EXPECTED_LINES
    assert not oversize_of(events)


def test_ndjson_hands_out_whole_chunks_for_one_decode() -> None:
    framer = NdjsonFramer(1024)
    assert framer.feed(b'{"a":1}\n{"b"') == [Lines(b'{"a":1}\n', 1, 0)]
    assert framer.feed(b':2}\n{"c":3}\n') == [Lines(b'{"b":2}\n{"c":3}\n', 2, 8)]
    assert framer.buffered_bytes == 0


@pytest.mark.parametrize("pieces", splits(b'{"a":1}\n{"service":"x"}'), ids=lambda p: f"{len(p)}")
def test_ndjson_last_line_without_newline_is_handed_out_at_eof(pieces: list[bytes]) -> None:
    events = run_ndjson(pieces)
    assert lines_of(events) == [(1, 0, b'{"a":1}'), (2, 8, b'{"service":"x"}')]
    assert isinstance(events[-1], TrailingLine)


def test_ndjson_blank_tail_at_eof_is_nothing() -> None:
    assert run_ndjson([b'{"a":1}\n  ']) == [Lines(b'{"a":1}\n', 1, 0)]


LONG = b"x" * 20
OVERSIZE_INPUT = b"ok1\n" + LONG + b"\nok2\n" + LONG + LONG + b"\nok3\n"


@pytest.mark.parametrize("pieces", splits(OVERSIZE_INPUT), ids=lambda p: f"{len(p)}-pieces")
def test_ndjson_oversize_lines_are_skipped_and_reported(pieces: list[bytes]) -> None:
    events = run_ndjson(pieces, max_line_bytes=10)
    assert lines_of(events) == [(1, 0, b"ok1"), (3, 25, b"ok2"), (5, 70, b"ok3")]
    assert oversize_of(events) == [(2, 4, 20), (4, 29, 40)]


def test_ndjson_line_of_exactly_the_limit_is_kept() -> None:
    events = run_ndjson([b"x" * 10 + b"\n" + b"y" * 11 + b"\n"], max_line_bytes=10)
    assert lines_of(events) == [(1, 0, b"x" * 10)]
    assert oversize_of(events) == [(2, 11, 11)]


def test_ndjson_oversize_memory_stays_bounded() -> None:
    framer = NdjsonFramer(100)
    for _ in range(1000):
        assert framer.feed(b"z" * 1000) == []
        assert framer.buffered_bytes <= 100
    events = framer.feed(b"\nok\n")
    assert oversize_of(events) == [(1, 0, 1_000_000)]
    assert lines_of(events) == [(2, 1_000_001, b"ok")]


def test_ndjson_oversize_unfinished_at_eof_is_reported() -> None:
    events = run_ndjson([b"ok\n", b"z" * 50], max_line_bytes=10)
    assert lines_of(events) == [(1, 0, b"ok")]
    assert oversize_of(events) == [(2, 3, 50)]
    assert "Expected a line of at most 10 bytes, got 50 bytes - at line 2, byte 3" in (
        events[-1].message  # type: ignore[union-attr]
    )


# --- protobuf --------------------------------------------------------------------------------

MESSAGES = [
    b"",
    b"a",
    b"b" * 127,  # the largest 1-byte varint
    b"c" * 128,  # the smallest 2-byte varint
    events_pb2.RequestFact(service="checkout", route="/x", status_code=200).SerializeToString(),
    b"d" * 300,
]
WIRE = b"".join(frame(m) for m in MESSAGES)


def test_protobuf_frames_whole_and_byte_by_byte() -> None:
    for pieces in (splits(WIRE)[0], splits(WIRE)[-1]):
        messages, error, truncated = run_protobuf(pieces)
        assert (messages, error, truncated) == (MESSAGES, None, None)


def test_protobuf_frames_survive_every_split() -> None:
    for pieces in splits(WIRE)[1:-1]:
        assert run_protobuf(pieces) == (MESSAGES, None, None)


def test_protobuf_batch_body_is_one_batch_message() -> None:
    facts = [events_pb2.RequestFact(service=f"s{i}", duration_ms=i) for i in range(300)]
    wire = b"".join(frame(f.SerializeToString()) for f in facts)
    batch = ProtobufFramer(1 << 20).feed(wire).frames
    assert len(batch) == 300
    decoded = events_pb2.RequestFactBatch.FromString(batch.batch_body())
    assert list(decoded.facts) == facts
    one = events_pb2.RequestFactBatch.FromString(batch.entry_body(7))
    assert list(one.facts) == [facts[7]]
    assert batch.offset_of(7) == sum(len(frame(f.SerializeToString())) for f in facts[:7])
    picked = events_pb2.RequestFactBatch.FromString(batch.batch_body([1, 5]))
    assert list(picked.facts) == [facts[1], facts[5]]


def test_protobuf_empty_feed_is_an_empty_batch() -> None:
    feed = ProtobufFramer(10).feed(b"")
    assert feed.frames == FrameBatch([], 0) and feed.frames.batch_body() == b""


@pytest.mark.parametrize("cut", range(1, len(WIRE)))
def test_protobuf_half_frame_at_eof_is_truncated(cut: int) -> None:
    ends = []
    position = 0
    for message in MESSAGES:
        position += len(frame(message))
        ends.append(position)
    whole = [m for m, end in zip(MESSAGES, ends, strict=True) if end <= cut]
    last_end = max([0] + [end for end in ends if end <= cut])
    messages, error, truncated = run_protobuf([WIRE[:cut]])
    assert messages == whole and error is None
    if cut == last_end:
        assert truncated is None
    else:
        assert truncated == TruncatedFrame(last_end, cut - last_end)


@pytest.mark.parametrize(
    ("prefix", "max_frame_bytes", "reason", "offset"),
    [
        (b"\x80" * 10 + b"\x01", 1 << 20, "varint_too_long", 4),
        (b"\xff" * 11, 1 << 20, "varint_too_long", 4),
        (encode_varint(1 << 21), 1 << 20, "frame_too_large", 4),
        (encode_varint(101), 100, "frame_too_large", 4),
        (encode_varint(2**64 - 1), 1 << 20, "frame_too_large", 4),
    ],
)
def test_protobuf_framing_errors(
    prefix: bytes, max_frame_bytes: int, reason: str, offset: int
) -> None:
    wire = frame(b"ok") + b"\x00" + prefix + b"trailing"
    for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        messages, error, _ = run_protobuf(pieces, max_frame_bytes)
        assert messages == [b"ok", b""]
        assert error is not None and (error.reason, error.byte_offset) == (reason, offset)
        assert f"at byte {offset}" in error.message


def test_protobuf_frame_of_exactly_the_limit_is_kept() -> None:
    messages, error, _ = run_protobuf([frame(b"x" * 100)], max_frame_bytes=100)
    assert messages == [b"x" * 100] and error is None


def test_protobuf_feed_after_error_is_refused() -> None:
    framer = ProtobufFramer(10)
    assert framer.feed(encode_varint(11)).error is not None
    with pytest.raises(RuntimeError):
        framer.feed(b"\x00")
    assert framer.eof() is None


def test_encode_varint_matches_protobuf() -> None:
    for value in (0, 1, 127, 128, 300, 2**32, 2**63):
        message = events_pb2.RequestFact(bytes_in=value).SerializeToString()
        assert message == b"\x38" + encode_varint(value) if value else message == b""
    with pytest.raises(ValueError):
        encode_varint(-1)
