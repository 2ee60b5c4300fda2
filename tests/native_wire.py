"""Helpers for the native decoder's tests: hand-built protobuf wire bytes, and the check
that the native and pure paths give the same outcome for a body.

The wire builders exist so tests can write what the `protobuf` package never emits
(duplicate fields, wrong wire types, groups, padded varints, bad UTF-8) and hold the C
decoder to upb's behaviour on each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from gravixd.core.decode import decode_protobuf_pure
from gravixd.errors import DecodeError

RECEIVED_NS = 1_800_000_000_123_456_789

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


def varint(value: int) -> bytes:
    """Unsigned LEB128; negative numbers as their 64-bit two's complement (10 bytes)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag(field, LEN) + varint(len(payload)) + payload


def item(payload: bytes) -> bytes:
    """One RequestFact / ServiceEvent entry (field 1) of a batch."""
    return ld(1, payload)


def entry(key: bytes | None = b"k", value: bytes | None = b"v") -> bytes:
    """The payload of one map entry (key = 1, value = 2); None leaves the field out."""
    out = b""
    if key is not None:
        out += ld(1, key)
    if value is not None:
        out += ld(2, value)
    return out


Outcome = tuple[Any, ...]


def outcome(
    decoder: Callable[[str, bytes, int], pa.RecordBatch], stream: str, body: bytes
) -> Outcome:
    """("ok", batch) or ("error", reason, message); parse error messages differ between the
    paths by design (the native one gives a byte offset), so only their reason counts."""
    try:
        return ("ok", decoder(stream, body, RECEIVED_NS))
    except DecodeError as exc:
        if exc.reason == "validation":
            return ("error", exc.reason, exc.message)
        return ("error", exc.reason)


def batches_equal(a: pa.RecordBatch, b: pa.RecordBatch) -> bool:
    """Schema, values and nulls equal; doubles compared bit for bit (NaN payloads too)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.columns, b.columns, strict=True):
        if pa.types.is_floating(x.type):
            x, y = x.view(pa.int64()), y.view(pa.int64())
        if not x.equals(y):
            return False
    return True


def assert_same(stream: str, body: bytes) -> Outcome:
    """Decode `body` through both paths and assert identical outcomes; returns the native one."""
    from gravixd.native import decode_protobuf

    native = outcome(decode_protobuf, stream, body)
    pure = outcome(decode_protobuf_pure, stream, body)
    assert native[0] == pure[0], f"native {native!r} != pure {pure!r} for {body!r}"
    if native[0] == "ok":
        assert batches_equal(native[1], pure[1]), (native[1], pure[1], body)
        native[1].validate(full=True)
        for column in native[1].columns:
            assert column.null_count == 0
            assert column.buffers()[0] is None  # no validity bitmap, as the pure path
    else:
        assert native == pure, body
    return native
