"""The native protobuf fast path: the only module that touches the compiled cffi `lib`.

`gravixd._native` (built from native/ at install) decodes a `RequestFactBatch` /
`ServiceEventBatch` straight into Arrow column buffers that it malloc'd; this module wraps
them with `pa.foreign_buffer` and `pa.Array.from_buffers`, without copying. All buffers of a
batch belong to one `gx_result`, freed (by `ffi.gc`) once the last Arrow buffer over it is
released. The C call releases the GIL (cffi API mode does), so a large body may decode in a
worker thread.

`decode_protobuf` is a drop-in for `gravixd.core.decode.decode_protobuf_pure`: the same input
gives the same record batch or the same kind of `DecodeError` (property tests hold it to
that). It must never be imported for `lib` by anything else; callers use the functions here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Final

import pyarrow as pa

from .core.decode import ProtobufDecoder, decode_protobuf_pure
from .errors import DecodeError
from .schema import ATTRIBUTES_TYPE, EVENTS_SCHEMA, FACTS_SCHEMA, MAX_INT64, MAX_STATUS_CODE

log = logging.getLogger(__name__)

try:
    from ._native import ffi, lib  # type: ignore[import-not-found,unused-ignore]
except ImportError as exc:  # not built: no C compiler at install time
    ffi = lib = None
    _IMPORT_ERROR: str | None = str(exc)
else:
    _IMPORT_ERROR = None

AVAILABLE: Final[bool] = lib is not None

# What each C error code means, as "got ..." text (gravix_decode.h lists the codes).
_ERRORS: Final = {
    1: "a truncated varint",
    2: "a varint longer than 10 bytes",
    3: "an invalid field tag",
    4: "an invalid wire type",
    5: "an invalid length prefix",
    6: "a length past the end of its message",
    7: "a truncated fixed-width value",
    8: "an end-group tag outside its group",
    9: "a group without its end-group tag",
    10: "messages and groups nested more than 100 deep",
    11: "invalid UTF-8 in a string field",
    12: "more than 2 GiB of column data",
}
_NO_MEMORY: Final = 13

_STRING_COLUMNS: Final = {
    "facts": ("service", "route", "method", "trace_id"),
    "events": ("service", "kind", "severity", "message", "trace_id"),
}
_MESSAGE_NAMES: Final = {
    "facts": "gravix.v1.RequestFactBatch",
    "events": "gravix.v1.ServiceEventBatch",
}
_ENTRIES_TYPE: Final = pa.struct(
    [pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())]
)


def decode_protobuf(stream: str, body: bytes, received_unix_nano: int) -> pa.RecordBatch:
    """A `RequestFactBatch`/`ServiceEventBatch` through the C decoder.

    Args:
        stream: "facts" or "events".
        body: the serialized batch message.
        received_unix_nano: replaces `timestamp_unix_nano == 0`.

    Raises:
        DecodeError: malformed protobuf ("invalid_protobuf", with the byte offset) or a
            contract violation ("validation", the pure path's exact message).
        MemoryError: the column buffers could not be allocated.
        RuntimeError: the extension is not built (check AVAILABLE first).
    """
    if lib is None:
        raise RuntimeError(f"gravixd._native is not built: {_IMPORT_ERROR}")
    if stream == "facts":
        decode_c, schema, field = lib.gx_decode_facts, FACTS_SCHEMA, "facts"
    elif stream == "events":
        decode_c, schema, field = lib.gx_decode_events, EVENTS_SCHEMA, "events"
    else:
        raise ValueError(f"unknown stream {stream!r}")
    result = lib.gx_result_new()
    if result == ffi.NULL:
        raise MemoryError("gx_result_new")
    result = ffi.gc(result, lib.gx_result_free)
    code = decode_c(ffi.from_buffer("uint8_t[]", body), len(body), received_unix_nano, result)
    if code:
        if code == _NO_MEMORY:
            raise MemoryError(f"decoding a {len(body)}-byte protobuf body")
        raise DecodeError(
            f"Expected a `{_MESSAGE_NAMES[stream]}` protobuf message, got "
            f"{_ERRORS.get(code, f'error {code}')} at byte {result.error_offset}",
            "invalid_protobuf",
        )
    _check(result, field)
    return pa.RecordBatch.from_arrays(_columns(stream, result), schema=schema)


def _check(result: Any, field: str) -> None:
    """The contract's checks, in the pure path's order and words."""
    if result.empty_service_row >= 0:
        row, name, expected, got = (
            result.empty_service_row,
            "service",
            "Expected `str` of length >= 1",
            "",
        )
    elif field == "facts" and result.big_status_code_row >= 0:
        row, name, got = result.big_status_code_row, "status_code", result.big_status_code
        expected = f"Expected `int` <= {MAX_STATUS_CODE}"
    elif field == "facts" and result.big_bytes_in_row >= 0:
        row, name, got = result.big_bytes_in_row, "bytes_in", result.big_bytes_in
        expected = f"Expected `int` <= {MAX_INT64}"
    elif field == "facts" and result.big_bytes_out_row >= 0:
        row, name, got = result.big_bytes_out_row, "bytes_out", result.big_bytes_out
        expected = f"Expected `int` <= {MAX_INT64}"
    else:
        return
    raise DecodeError(f"{expected}, got `{got}` - at `$.{field}[{row}].{name}`")


def _columns(stream: str, result: Any) -> list[pa.Array]:
    rows = result.rows
    slot = iter(range(len(result.buffers)))

    def buffer() -> pa.Buffer:
        b = result.buffers[next(slot)]
        return pa.foreign_buffer(int(ffi.cast("uintptr_t", b.data)), b.len, base=result)

    def fixed(type_: pa.DataType) -> pa.Array:
        return pa.Array.from_buffers(type_, rows, [None, buffer()], null_count=0)

    def string(length: int = rows) -> pa.Array:
        return pa.Array.from_buffers(pa.string(), length, [None, buffer(), buffer()], null_count=0)

    def attributes() -> pa.Array:
        offsets = buffer()
        entries = result.map_entries
        keys, values = string(entries), string(entries)
        items = pa.StructArray.from_arrays([keys, values], fields=list(_ENTRIES_TYPE))
        return pa.Array.from_buffers(
            ATTRIBUTES_TYPE, rows, [None, offsets], null_count=0, children=[items]
        )

    # Slot order is gravix_decode.h's enum, which follows the schema's column order.
    if stream == "facts":
        return [
            fixed(pa.int64()).view(FACTS_SCHEMA.field("timestamp").type),
            string(), string(), string(),
            fixed(pa.int32()), fixed(pa.float64()), fixed(pa.int64()), fixed(pa.int64()),
            string(),
            attributes(),
        ]  # fmt: skip
    return [
        fixed(pa.int64()).view(EVENTS_SCHEMA.field("timestamp").type),
        string(), string(), string(), string(), string(),
        attributes(),
    ]  # fmt: skip


def select_protobuf_decoder(
    environ: Mapping[str, str] = os.environ,
) -> tuple[ProtobufDecoder, str]:
    """The protobuf path the daemon should use, and its name ("native" or "pure").

    `GRAVIXD_NATIVE=0` forces the pure path; without the extension the pure path is used
    and one line is logged saying why.
    """
    if environ.get("GRAVIXD_NATIVE", "").strip().lower() in {"0", "false", "no", "off"}:
        return decode_protobuf_pure, "pure"
    if not AVAILABLE:
        log.warning(
            "native protobuf decoder not built (%s); using the pure protobuf path", _IMPORT_ERROR
        )
        return decode_protobuf_pure, "pure"
    return decode_protobuf, "native"
