"""Spool segments, sans-I/O: ids, object keys, IPC record framing and the torn-tail scan.

A spool segment is an Arrow IPC *stream*: the schema message, then one encapsulated record
batch message per group commit, appended and fsynced. A crash can leave a torn last message;
`scan_segment` finds the longest prefix of whole, valid batches. Sealing turns that prefix
into the uploaded object (an Arrow IPC *file*, compressed, or Parquet).

Segment ids are ULIDs (48-bit millisecond time, 80 random bits, Crockford base32): sortable
by creation time and unique across hosts sharing a bucket. The object key is derived from
the id alone, so a re-upload after a crash overwrites the same key instead of duplicating.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Final

import pyarrow as pa

from ..schema import STREAMS

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE: Final = {c: i for i, c in enumerate(_CROCKFORD)}
SEGMENT_ID_LENGTH: Final = 26

# The IPC end-of-stream marker: continuation token, then a zero metadata length.
END_OF_STREAM: Final = b"\xff\xff\xff\xff\x00\x00\x00\x00"

FORMAT_EXTENSIONS: Final = {"arrow": ".arrow", "parquet": ".parquet"}
OPEN_EXTENSION: Final = ".arrows"  # an IPC stream being appended to


def new_segment_id(unix_ms: int, random_80_bits: int) -> str:
    """A ULID string for a segment created at `unix_ms`."""
    value = (unix_ms << 80) | (random_80_bits & ((1 << 80) - 1))
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def segment_created_at(segment_id: str) -> dt.datetime:
    """The UTC creation time encoded in a segment id.

    Raises:
        ValueError: not a segment id.
    """
    if len(segment_id) != SEGMENT_ID_LENGTH or any(c not in _DECODE for c in segment_id):
        raise ValueError(f"Expected a {SEGMENT_ID_LENGTH}-character ULID, got {segment_id!r}")
    unix_ms = 0
    for char in segment_id[:10]:
        unix_ms = (unix_ms << 5) | _DECODE[char]
    return dt.datetime.fromtimestamp(unix_ms / 1000, tz=dt.UTC)


def partition_of(segment_id: str) -> str:
    """`dt=YYYY-MM-DD/hour=HH` of the UTC hour a segment was created in."""
    created = segment_created_at(segment_id)
    return f"dt={created:%Y-%m-%d}/hour={created:%H}"


def hour_of_unix_ms(unix_ms: int) -> int:
    """A monotonic hour number: segments rotate when it changes."""
    return unix_ms // 3_600_000


def object_key(stream: str, segment_id: str, segment_format: str) -> str:
    """`{stream}/dt=YYYY-MM-DD/hour=HH/{segment_id}.arrow` (or `.parquet`)."""
    return f"{stream}/{partition_of(segment_id)}/{segment_id}{FORMAT_EXTENSIONS[segment_format]}"


def stream_header(stream: str) -> bytes:
    """The bytes that open a spool segment: the stream's schema message."""
    return STREAMS[stream].serialize().to_pybytes()  # type: ignore[no-any-return]


@dataclass(slots=True)
class ScanResult:
    """What a spool segment holds.

    Attributes:
        batches: every whole, valid record batch, in order.
        good_bytes: length of the prefix that holds them (truncate the file to this).
        total_bytes: the file's length.
        error: why the scan stopped early (torn or corrupt tail), or None.
        readable: False when not even the schema could be read (quarantine it).
    """

    batches: list[pa.RecordBatch] = field(default_factory=list)
    good_bytes: int = 0
    total_bytes: int = 0
    error: str | None = None
    readable: bool = True

    @property
    def torn(self) -> bool:
        return self.good_bytes < self.total_bytes

    @property
    def rows(self) -> int:
        return sum(b.num_rows for b in self.batches)


def scan_segment(stream: str, data: bytes | pa.Buffer, validate: bool = True) -> ScanResult:
    """Find the longest prefix of whole, valid record batches in a spool segment.

    `validate=False` skips the full check of each batch's buffers: for segments this process
    wrote itself and fsynced, which the sealer reads back right away.
    """
    buffer = pa.py_buffer(data) if isinstance(data, bytes) else data
    result = ScanResult(total_bytes=buffer.size)
    expected_schema = STREAMS[stream]
    source = pa.BufferReader(buffer)
    try:
        message = pa.ipc.read_message(source)
        schema = pa.ipc.read_schema(message)
    except (EOFError, OSError, pa.ArrowException) as exc:
        result.readable = False
        result.error = (
            f"Expected an Arrow IPC stream schema at byte 0, got unreadable bytes ({exc})"
        )
        return result
    if not schema.equals(expected_schema):
        result.readable = False
        result.error = f"Expected the `{stream}` schema, got {schema}"
        return result
    result.good_bytes = source.tell()
    while True:
        offset = source.tell()
        try:
            message = pa.ipc.read_message(source)
        except EOFError:
            break  # end-of-stream marker, or the file ends on a message boundary
        except (OSError, pa.ArrowException) as exc:
            result.error = f"torn or corrupt record batch message at byte {offset} ({exc})"
            break
        try:
            batch = pa.ipc.read_record_batch(message, schema)
            if validate:
                batch.validate(full=True)
        except (OSError, pa.ArrowException) as exc:
            result.error = f"invalid record batch at byte {offset} ({exc})"
            break
        result.batches.append(batch)
        result.good_bytes = source.tell()
    if result.good_bytes + len(END_OF_STREAM) == result.total_bytes and result.error is None:
        result.good_bytes = result.total_bytes  # a sealed-off stream: the marker is not a tear
    return result
