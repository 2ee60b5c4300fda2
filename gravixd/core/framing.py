"""Raw TCP framing, sans-I/O: bytes in, whole lines or frames out (DESIGN.md section 2).

Like h11, a framer never touches a socket: the runtime feeds it what `receive_some` returned
and gets back complete units plus what went wrong, each with its byte offset in the
connection's stream, so that logs can point at the exact place. No trio, no clock, no decode.

- `NdjsonFramer`: one JSON object a line. It hands out *chunks* of complete lines (everything
  up to the last newline seen) so that one decoder call handles thousands of lines. A line
  longer than `max_line_bytes` is skipped up to its newline and reported (`OversizeLine`):
  the stream goes on, and memory stays bounded by `max_line_bytes` plus one read.
- `ProtobufFramer`: varint length-delimited messages, as protobuf's `writeDelimitedTo`.
  A `RequestFact` frame is exactly the payload of one field-1 entry of a `RequestFactBatch`
  (same for events), so N frames become one `*Batch` body by prefixing each with the tag
  byte 0x0a: the wire already carries the varint length, so the body is the received bytes
  with one byte inserted per frame, and one decoder call handles them all. A varint longer
  than 10 bytes or a length above `max_frame_bytes` loses the framing (`FramingError`);
  the framer is then dead and the connection must be closed.

At EOF (`eof()`), a half-written frame is reported as `TruncatedFrame`. The last ndjson line
without a trailing newline is handed out as a `TrailingLine`: many shippers omit the final
newline, so a complete JSON object there is accepted; one that does not decode was cut off
(the runtime counts it as truncated).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "FrameBatch",
    "FramingError",
    "Lines",
    "NdjsonFramer",
    "OversizeLine",
    "ProtobufFramer",
    "TrailingLine",
    "TruncatedFrame",
    "encode_varint",
    "frame_too_large",
    "read_varint",
    "varint_too_long",
]

# The tag of field 1, wire type 2 (length-delimited): `(1 << 3) | 2`. It equals b"\n".
BATCH_ENTRY_TAG: Final = b"\x0a"
# A varint carries at most 64 bits: 10 bytes of 7 bits each.
MAX_VARINT_BYTES: Final = 10


# --- ndjson --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lines:
    """Complete lines: `body` ends with a newline. `first_line` is the 1-based number of its
    first line in the connection's stream, `first_offset` the byte offset of its start."""

    body: bytes
    first_line: int
    first_offset: int


@dataclass(frozen=True, slots=True)
class TrailingLine:
    """The last line of a stream that ended without a newline (only from `eof()`)."""

    body: bytes
    line: int
    byte_offset: int


@dataclass(frozen=True, slots=True)
class OversizeLine:
    """A line longer than the limit, skipped. `length_bytes` excludes the newline; at EOF it
    is what had arrived of a line that never ended."""

    line: int
    byte_offset: int
    length_bytes: int
    max_line_bytes: int

    @property
    def message(self) -> str:
        return (
            f"Expected a line of at most {self.max_line_bytes} bytes, got "
            f"{self.length_bytes} bytes - at line {self.line}, byte {self.byte_offset}"
        )


NdjsonEvent = Lines | TrailingLine | OversizeLine


class NdjsonFramer:
    """Splits a byte stream into chunks of whole lines, skipping oversize lines.

    Memory is bounded by `max_line_bytes` plus the size of one `feed`: a partial line longer
    than the limit is dropped as it arrives (only its length is remembered).
    """

    def __init__(self, max_line_bytes: int) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"Expected max_line_bytes >= 1, got {max_line_bytes}")
        self.max_line_bytes = max_line_bytes
        self._buffer = b""  # the start of a line not yet ended
        self._line = 1  # number of the line that `_buffer` starts
        self._offset = 0  # stream offset of `_buffer`'s first byte
        self._skipping = False  # inside an oversize line, discarding up to its newline
        self._skip_length = 0
        # A run of more than max_line_bytes non-newline bytes: found at C speed, and the
        # leftmost match of a greedy run starts exactly at its line's start.
        self._long_line = re.compile(b"[^\n]{%d,}" % (max_line_bytes + 1))

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[NdjsonEvent]:
        """Take the next bytes of the stream; return the complete lines and skipped lines."""
        events: list[NdjsonEvent] = []
        if self._skipping:
            newline = data.find(b"\n")
            if newline == -1:
                self._skip_length += len(data)
                return events
            self._skip_length += newline
            events.append(self._end_skip(newline + 1))
            data = data[newline + 1 :]
        buffer = self._buffer + data if self._buffer else data
        last_newline = buffer.rfind(b"\n")
        if last_newline == -1:
            self._buffer = buffer
        else:
            complete = buffer[: last_newline + 1]
            self._buffer = buffer[last_newline + 1 :]
            self._emit_complete(complete, events)
        if len(self._buffer) > self.max_line_bytes:
            self._skipping = True
            self._skip_length = len(self._buffer)
            self._buffer = b""
        return events

    def eof(self) -> list[NdjsonEvent]:
        """The stream ended: report an unfinished oversize line or hand out the last line."""
        events: list[NdjsonEvent] = []
        if self._skipping:
            events.append(self._end_skip(0))
        elif self._buffer.strip():
            events.append(TrailingLine(self._buffer, self._line, self._offset))
        self._offset += len(self._buffer)
        self._buffer = b""
        return events

    def _end_skip(self, consumed: int) -> OversizeLine:
        """The skipped line ended; `consumed` bytes of this feed belonged to it."""
        event = OversizeLine(self._line, self._offset, self._skip_length, self.max_line_bytes)
        self._offset += self._skip_length + (1 if consumed else 0)
        self._line += 1
        self._skipping = False
        self._skip_length = 0
        return event

    def _emit_complete(self, complete: bytes, events: list[NdjsonEvent]) -> None:
        # Fast path: a chunk no longer than the limit cannot hold an oversize line.
        start = 0
        if len(complete) > self.max_line_bytes:
            for match in self._long_line.finditer(complete):
                if match.start() > start:
                    self._emit_lines(complete[start : match.start()], events)
                length = match.end() - match.start()
                events.append(OversizeLine(self._line, self._offset, length, self.max_line_bytes))
                self._line += 1
                self._offset += length + 1
                start = match.end() + 1  # every match in `complete` ends at a newline
        if start < len(complete):
            self._emit_lines(complete[start:] if start else complete, events)

    def _emit_lines(self, body: bytes, events: list[NdjsonEvent]) -> None:
        events.append(Lines(body, self._line, self._offset))
        self._line += body.count(b"\n")
        self._offset += len(body)


# --- protobuf ------------------------------------------------------------------------------


class FramingError(Exception):
    """The length-delimited framing is lost; nothing after `byte_offset` can be trusted."""

    def __init__(self, message: str, byte_offset: int, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.byte_offset = byte_offset
        # A bounded metric label: "varint_too_long", "frame_too_large", or "invalid_protobuf"
        # (a frame that does not parse: its length was read, but what follows is suspect).
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FrameBatch:
    """Whole frames, each as it came on the wire (varint length + message).

    `first_offset` is the stream offset of the first frame. `batch_body()` is the
    `*Batch` message holding them all; `entry_body(i)` the one holding frame `i` alone.
    """

    delimited: list[bytes]
    first_offset: int

    def __len__(self) -> int:
        return len(self.delimited)

    def batch_body(self, indexes: list[int] | None = None) -> bytes:
        frames = self.delimited if indexes is None else [self.delimited[i] for i in indexes]
        if not frames:
            return b""
        return BATCH_ENTRY_TAG + BATCH_ENTRY_TAG.join(frames)

    def entry_body(self, index: int) -> bytes:
        return BATCH_ENTRY_TAG + self.delimited[index]

    def offset_of(self, index: int) -> int:
        return self.first_offset + sum(len(frame) for frame in self.delimited[:index])

    def messages(self) -> list[bytes]:
        """The message bytes of each frame, without their length prefix."""
        return [frame[_varint_length(frame) :] for frame in self.delimited]


@dataclass(frozen=True, slots=True)
class TruncatedFrame:
    """The stream ended inside a frame: `length_bytes` of it had arrived."""

    byte_offset: int
    length_bytes: int

    @property
    def message(self) -> str:
        return (
            f"Expected a whole frame before the end of the stream, got {self.length_bytes} "
            f"bytes of one - at byte {self.byte_offset}"
        )


@dataclass(slots=True)
class ProtobufFeed:
    """What one `feed` produced: whole frames, then possibly the error that ended framing."""

    frames: FrameBatch
    error: FramingError | None = field(default=None)


class ProtobufFramer:
    """Splits a byte stream into varint length-delimited frames."""

    def __init__(self, max_frame_bytes: int) -> None:
        if max_frame_bytes < 1:
            raise ValueError(f"Expected max_frame_bytes >= 1, got {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes
        self._buffer = b""  # the start of a frame not yet complete
        self._offset = 0  # stream offset of `_buffer`'s first byte
        self.error: FramingError | None = None

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> ProtobufFeed:
        """Take the next bytes; return the frames completed and the framing error, if any.

        Frames before an error are returned with it; after an error the framer accepts
        nothing more (`feed` raises `RuntimeError`): close the connection.
        """
        if self.error is not None:
            raise RuntimeError("feed() after a framing error")
        buffer = self._buffer + data if self._buffer else data
        size = len(buffer)
        max_frame = self.max_frame_bytes
        frames: list[bytes] = []
        append = frames.append
        position = 0
        error = None
        # The hot loop: most frames are under 16 KiB (a 1- or 2-byte varint).
        while position < size:
            length = buffer[position]
            if length < 0x80:
                header = 1
            elif position + 1 < size and buffer[position + 1] < 0x80:
                # A 2-byte varint (frames of 128 B to 16 KiB), inline: no call per frame.
                length = (length & 0x7F) | (buffer[position + 1] << 7)
                header = 2
            else:
                length, header = read_varint(buffer, position)
                if header == 0:  # the varint is incomplete, or too long
                    if size - position >= MAX_VARINT_BYTES:
                        error = varint_too_long(self._offset + position)
                    break
            if length > max_frame:
                error = frame_too_large(length, max_frame, self._offset + position)
                break
            end = position + header + length
            if end > size:
                break
            append(buffer[position:end])
            position = end
        batch = FrameBatch(frames, self._offset)
        self._offset += position
        self._buffer = buffer[position:]
        if error is not None:
            self.error = error
            self._buffer = b""
        return ProtobufFeed(batch, error)

    def eof(self) -> TruncatedFrame | None:
        """The stream ended: report a half-written frame, if any."""
        if self.error is not None or not self._buffer:
            return None
        truncated = TruncatedFrame(self._offset, len(self._buffer))
        self._offset += len(self._buffer)
        self._buffer = b""
        return truncated


# The two ways framing is lost, worded once for every framer (the native one included).
def frame_too_large(length: int, max_frame_bytes: int, byte_offset: int) -> FramingError:
    return FramingError(
        f"Expected a frame of at most {max_frame_bytes} bytes, got a length prefix "
        f"of {length} - at byte {byte_offset}",
        byte_offset,
        "frame_too_large",
    )


def varint_too_long(byte_offset: int) -> FramingError:
    return FramingError(
        f"Expected a varint length prefix of at most {MAX_VARINT_BYTES} bytes, got "
        f"{MAX_VARINT_BYTES} bytes with the continuation bit set - at byte {byte_offset}",
        byte_offset,
        "varint_too_long",
    )


def read_varint(buffer: bytes, position: int) -> tuple[int, int]:
    """(value, bytes used) of the varint at `position`; (0, 0) when it is incomplete or
    longer than MAX_VARINT_BYTES (the caller tells the two apart by what is buffered)."""
    value = 0
    shift = 0
    limit = min(len(buffer), position + MAX_VARINT_BYTES)
    index = position
    while index < limit:
        byte = buffer[index]
        value |= (byte & 0x7F) << shift
        index += 1
        if byte < 0x80:
            return value, index - position
        shift += 7
    return 0, 0


def _varint_length(frame: bytes) -> int:
    _, header = read_varint(frame, 0)
    return header


def encode_varint(value: int) -> bytes:
    """The protobuf varint of a non-negative int (used by emitters and tests)."""
    if value < 0:
        raise ValueError(f"Expected a non-negative int, got {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
