"""Raw TCP protobuf, sans-I/O: a byte stream of delimited messages -> record batches.

A connection's reader feeds what `receive_some` returned and gets back the record batches of
the whole frames, the frames rejected on the way and the error that lost the framing, each
with its byte offset in the connection's stream. Two implementations give the same answers
(tests/property/test_native_differential.py holds them to that, at every split point):

- `PythonFrameDecoder`: `ProtobufFramer` splits the frames, then one call of any
  `ProtobufDecoder` decodes them all as one `*Batch` body; on error, frame by frame.
- `gravixd.native.NativeFrameDecoder`: one C call frames and decodes (no Python per frame).

What a frame can do to its connection (DESIGN.md section 2): a well-formed frame that breaks
the contract (say an empty `service`) is rejected alone and the stream goes on, since its
length prefix was right; a frame that does not parse, or a length prefix that is too long or
too large, loses the framing: the frames before it are accepted, and the connection must be
closed (`error` is set, and `feed` accepts nothing more). No trio, no clock: "now" is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from ..errors import DecodeError
from .decode import ProtobufDecoder
from .framing import FramingError, ProtobufFramer, TruncatedFrame

# A frame that parsed but is not a valid entry is skipped; the framing holds (any other
# error means the length prefixes cannot be trusted).
_FRAME_SKIPPED = ("validation", "wrong_message")

__all__ = ["DecodedFrames", "FrameDecoder", "PythonFrameDecoder", "RejectedFrame"]


@dataclass(frozen=True, slots=True)
class RejectedFrame:
    """A whole frame skipped: `reason` is a metric label ("validation")."""

    reason: str
    message: str
    byte_offset: int


@dataclass(slots=True)
class DecodedFrames:
    """What one `feed` produced, in stream order: batches of the good frames, the frames
    rejected among them, then possibly the error that ended the framing."""

    batches: list[pa.RecordBatch] = field(default_factory=list)
    rejected: list[RejectedFrame] = field(default_factory=list)
    error: FramingError | None = None


class FrameDecoder(Protocol):
    @property
    def buffered_bytes(self) -> int: ...

    def feed(self, data: bytes, received_unix_nano: int) -> DecodedFrames: ...

    def eof(self) -> TruncatedFrame | None: ...


class PythonFrameDecoder:
    """`ProtobufFramer` + a `ProtobufDecoder` (the pure path, or any decoder a test gives)."""

    def __init__(self, decoder: ProtobufDecoder, stream: str, max_frame_bytes: int) -> None:
        self._decoder = decoder
        self._stream = stream
        self._framer = ProtobufFramer(max_frame_bytes)
        self.error: FramingError | None = None

    @property
    def buffered_bytes(self) -> int:
        return self._framer.buffered_bytes

    def feed(self, data: bytes, received_unix_nano: int) -> DecodedFrames:
        if self.error is not None:
            raise RuntimeError("feed() after a framing error")
        feed = self._framer.feed(data)
        frames, decoder, stream, now = feed.frames, self._decoder, self._stream, received_unix_nano
        out = DecodedFrames()
        if len(frames):
            try:
                out.batches.append(decoder(stream, frames.batch_body(), now))
            except DecodeError:
                # Find the bad frames one by one: skip invalid ones, stop at one that
                # does not parse.
                good: list[int] = []
                for index in range(len(frames)):
                    try:
                        decoder(stream, frames.entry_body(index), now)
                    except DecodeError as exc:
                        offset = frames.offset_of(index)
                        message = f"{exc.message} - at byte {offset}"
                        if exc.reason not in _FRAME_SKIPPED:
                            out.error = FramingError(message, offset, exc.reason)
                            break
                        out.rejected.append(RejectedFrame(exc.reason, message, offset))
                        continue
                    good.append(index)
                if good:
                    out.batches.append(decoder(stream, frames.batch_body(good), now))
        if out.error is None:
            out.error = feed.error
        self.error = out.error
        return out

    def eof(self) -> TruncatedFrame | None:
        return None if self.error is not None else self._framer.eof()
