"""The native protobuf fast path: the only module that touches the compiled cffi `lib`.

`gravixd._native` (built from native/ at install) decodes a `RequestFactBatch` /
`ServiceEventBatch` straight into Arrow column buffers that it malloc'd, and exports them
through the Arrow C Data Interface: one C call fills an `ArrowArray` (a struct array, i.e. a
record batch) whose release callback frees every buffer, and one pyarrow call imports it
against the schema of gravixd/schema.py, zero-copy, with no Python per column. The C call
releases the GIL (cffi API mode does), so a large body may decode in a worker thread.

`decode_otlp_protobuf` does the same for OTLP/HTTP protobuf requests (spans -> facts, log
records -> events), or hands the body back to gravixd.core.otlp's Python mapping, the
reference, when it holds something C does not map itself.

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
from .core.frame_decode import DecodedFrames, FrameDecoder, PythonFrameDecoder, RejectedFrame
from .core.framing import (
    FramingError,
    TruncatedFrame,
    frame_too_large,
    read_varint,
    varint_too_long,
)
from .core.otlp import (
    MAX_ERROR_MESSAGES,
    SPAN_KIND_NAMES,
    Fallback,
    OtlpBatch,
    OtlpWalker,
    Signal,
    TooManyRecords,
    record_path,
    rejection,
)
from .core.protobuf_checks import WrongWire, wrong_wire_error
from .errors import DecodeError
from .schema import EVENTS_SCHEMA, FACTS_SCHEMA, MAX_INT64, MAX_STATUS_CODE, SEVERITY_ALIASES

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
_ERROR_TEXTS: Final = {
    "GX_ERR_TRUNCATED_VARINT": "a truncated varint",
    "GX_ERR_VARINT_TOO_LONG": "a varint longer than 10 bytes",
    "GX_ERR_BAD_TAG": "an invalid field tag",
    "GX_ERR_BAD_WIRE_TYPE": "an invalid wire type",
    "GX_ERR_BAD_LENGTH": "an invalid length prefix",
    "GX_ERR_LENGTH_PAST_END": "a length past the end of its message",
    "GX_ERR_TRUNCATED_FIXED": "a truncated fixed-width value",
    "GX_ERR_UNEXPECTED_END_GROUP": "an end-group tag outside its group",
    "GX_ERR_UNTERMINATED_GROUP": "a group without its end-group tag",
    "GX_ERR_TOO_DEEP": "messages and groups nested more than 100 deep",
    "GX_ERR_INVALID_UTF8": "invalid UTF-8 in a string field",
    "GX_ERR_TOO_LARGE": "more than 2 GiB of column data",
}
# The codes by name from the header (cffi exposes its enums on `lib`); -1 when not built.
_ERRORS: Final = {getattr(lib, name): text for name, text in _ERROR_TEXTS.items()} if lib else {}
_NO_MEMORY: Final = lib.GX_ERR_NO_MEMORY if lib else -1
_INVALID: Final = lib.GX_ERR_INVALID if lib else -1  # a contract violation: the status says which
_FRAME_TOO_LARGE: Final = lib.GX_ERR_FRAME_TOO_LARGE if lib else -1
_FRAME_VARINT: Final = lib.GX_ERR_FRAME_VARINT if lib else -1
_FALLBACK: Final = lib.GX_ERR_FALLBACK if lib else -1  # OTLP: a form only Python maps
_TOO_MANY_RECORDS: Final = lib.GX_ERR_TOO_MANY_RECORDS if lib else -1

# stream -> (the C stream number, the imported schema, the batch message's name).
_STREAMS: Final = {
    "facts": (0, FACTS_SCHEMA, "gravix.v1.RequestFactBatch"),
    "events": (1, EVENTS_SCHEMA, "gravix.v1.ServiceEventBatch"),
}


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
    try:
        number, schema, message = _STREAMS[stream]
    except KeyError:
        raise ValueError(f"unknown stream {stream!r}") from None
    status = ffi.new("gx_status *")
    array = ffi.new("struct ArrowArray *")
    code = lib.gx_decode_arrow(
        number, ffi.from_buffer("uint8_t[]", body), len(body), received_unix_nano, status, array
    )
    if code:
        raise _error(code, status, stream, message, len(body))
    # Takes ownership (the release callback moves to pyarrow); the schema is not re-parsed.
    return pa.RecordBatch._import_from_c(int(ffi.cast("uintptr_t", array)), schema)


def _error(code: int, status: Any, stream: str, message: str, size: int) -> Exception:
    if code == _NO_MEMORY:
        return MemoryError(f"decoding a {size}-byte protobuf body")
    if code == _INVALID:
        return _contract_error(status, stream)
    return DecodeError(
        f"Expected a `{message}` protobuf message, got "
        f"{_ERRORS.get(code, f'error {code}')} at byte {status.error_offset}",
        "invalid_protobuf",
    )


def _contract_error(status: Any, field: str) -> DecodeError:
    """The contract's checks, in the pure path's order and words."""
    if status.wrong_wire_row >= 0:  # another message: before any of its values
        wrong = WrongWire(
            bool(status.wrong_wire_batch), status.wrong_wire_row, status.wrong_wire_tag
        )
        return wrong_wire_error(field, wrong)
    if status.empty_service_row >= 0:
        row, name, expected, got = (
            status.empty_service_row,
            "service",
            "Expected `str` of length >= 1",
            "",
        )
    elif status.big_status_code_row >= 0:
        row, name, got = status.big_status_code_row, "status_code", status.big_status_code
        expected = f"Expected `int` <= {MAX_STATUS_CODE}"
    elif status.big_bytes_in_row >= 0:
        row, name, got = status.big_bytes_in_row, "bytes_in", status.big_bytes_in
        expected = f"Expected `int` <= {MAX_INT64}"
    else:
        row, name, got = status.big_bytes_out_row, "bytes_out", status.big_bytes_out
        expected = f"Expected `int` <= {MAX_INT64}"
    return DecodeError(f"{expected}, got `{got}` - at `$.{field}[{row}].{name}`")


class NativeFrameDecoder:
    """Raw TCP protobuf through the C stream entry point: varint-delimited `RequestFact` /
    `ServiceEvent` frames -> record batches, one C call a read (no Python per frame).

    The same answers as `PythonFrameDecoder(decode_protobuf_pure, ...)`: batches, rejected
    frames and the error that loses the framing, with the same offsets and messages. A
    partial last frame stays buffered for the next `feed`; `eof()` reports it.
    """

    def __init__(self, stream: str, max_frame_bytes: int) -> None:
        if lib is None:
            raise RuntimeError(f"gravixd._native is not built: {_IMPORT_ERROR}")
        if max_frame_bytes < 1:
            raise ValueError(f"Expected max_frame_bytes >= 1, got {max_frame_bytes}")
        self._stream = stream
        self._number, self._schema, self._message = _STREAMS[stream]
        self.max_frame_bytes = max_frame_bytes
        # The start of a frame not yet complete, as received: joined only once the frame
        # can be whole (`_needed`), so a large frame costs one copy and one C call.
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._needed = 0
        self._offset = 0  # stream offset of the first buffered byte
        self.error: FramingError | None = None

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def feed(self, data: bytes, received_unix_nano: int) -> DecodedFrames:
        """Take the next bytes; decode the whole frames among what is buffered.

        Raises:
            MemoryError: the column buffers could not be allocated.
            RuntimeError: called after a framing error.
        """
        if self.error is not None:
            raise RuntimeError("feed() after a framing error")
        out = DecodedFrames()
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if self._buffered < self._needed or not self._buffered:
            return out  # the partial frame is still short: nothing to decode yet
        chunks = self._chunks
        buffer = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        view = ffi.from_buffer("uint8_t[]", buffer)
        status = ffi.new("gx_status *")
        array = ffi.new("struct ArrowArray *")
        start = 0  # of `buffer`: where this call's input starts
        while True:
            code = lib.gx_decode_stream_arrow(
                self._number,
                view + start,
                len(buffer) - start,
                received_unix_nano,
                self.max_frame_bytes,
                status,
                array,
            )
            if array.release != ffi.NULL:
                address = int(ffi.cast("uintptr_t", array))
                out.batches.append(pa.RecordBatch._import_from_c(address, self._schema))
            if code == 0:
                needed = start + status.needed  # of `buffer`, 0: unknown yet
                start += status.consumed
                break
            if code == _NO_MEMORY:
                raise MemoryError(f"decoding {len(buffer) - start} bytes of protobuf frames")
            if code == _INVALID:  # skip this frame; the framing holds
                offset = self._offset + start + status.frame_start
                error = _contract_error(status, self._stream)
                message = f"{error.message} - at byte {offset}"
                out.rejected.append(RejectedFrame(error.reason, message, offset))
                start += status.frame_end
                continue
            out.error = self._framing_error(code, status, buffer, start)
            start += status.consumed
            needed = 0
            break
        self._offset += start
        rest = buffer[start:] if start else buffer
        self._chunks = [rest] if rest else []
        self._buffered = len(rest)
        self._needed = needed - start if needed > start else 0
        if out.error is not None:
            self.error = out.error
            self._chunks, self._buffered, self._needed = [], 0, 0
        return out

    def _framing_error(self, code: int, status: Any, buffer: bytes, start: int) -> FramingError:
        if status.frame_start < 0:  # over 2 GiB in one call: nothing was taken
            offset = self._offset + start
            return FramingError(
                f"Expected at most 2 GiB of frames in one read, got {len(buffer) - start} "
                f"bytes - at byte {offset}",
                offset,
                "frame_too_large",
            )
        offset = self._offset + start + status.frame_start
        if code == _FRAME_VARINT:
            return varint_too_long(offset)
        if code == _FRAME_TOO_LARGE:
            length, _ = read_varint(buffer, start + status.frame_start)
            return frame_too_large(length, self.max_frame_bytes, offset)
        # Worded as decoding the frame alone as a one-entry batch (tag byte + frame) would.
        at = status.error_offset - status.frame_start + 1
        message = (
            f"Expected a `{self._message}` protobuf message, got "
            f"{_ERRORS.get(code, f'error {code}')} at byte {at} - at byte {offset}"
        )
        return FramingError(message, offset, "invalid_protobuf")

    def eof(self) -> TruncatedFrame | None:
        """The stream ended: report a half-written frame, if any."""
        if self.error is not None or not self._buffered:
            return None
        truncated = TruncatedFrame(self._offset, self._buffered)
        self._offset += self._buffered
        self._chunks, self._buffered, self._needed = [], 0, 0
        return truncated


def open_frame_decoder(decoder: ProtobufDecoder, stream: str, max_frame_bytes: int) -> FrameDecoder:
    """The raw TCP protobuf decoder for a connection whose daemon decodes with `decoder`:
    the C stream entry point when that is the native decoder, else `ProtobufFramer` feeding
    `decoder` (the pure path, `GRAVIXD_NATIVE=0`, or a test's decoder)."""
    if decoder is decode_protobuf and AVAILABLE:
        return NativeFrameDecoder(stream, max_frame_bytes)
    return PythonFrameDecoder(decoder, stream, max_frame_bytes)


def exported_schema(stream: str) -> pa.Schema:
    """The schema the C decoder exports for `stream` (tests hold it equal to schema.py's)."""
    if lib is None:
        raise RuntimeError(f"gravixd._native is not built: {_IMPORT_ERROR}")
    schema = ffi.new("struct ArrowSchema *")
    if lib.gx_export_schema(_STREAMS[stream][0], schema):
        raise MemoryError("gx_export_schema")
    return pa.Schema._import_from_c(int(ffi.cast("uintptr_t", schema)))


def column_table(stream: str) -> list[tuple[str, str, int]]:
    """The C decoder's column table for `stream` (native/gravix_columns.h): (name, kind,
    proto field number) a column, kind as in schema.Column ("fixed", "string", "map")."""
    if lib is None:
        raise RuntimeError(f"gravixd._native is not built: {_IMPORT_ERROR}")
    kinds = {b"f": "fixed", b"s": "string", b"m": "map"}
    name, fmt = ffi.new("const char **"), ffi.new("const char **")
    kind, number = ffi.new("char *"), ffi.new("int *")
    table: list[tuple[str, str, int]] = []
    while lib.gx_column_info(_STREAMS[stream][0], len(table), name, fmt, kind, number):
        table.append((ffi.string(name[0]).decode(), kinds[kind[0]], int(number[0])))
    return table


def live_exports() -> int:
    """Decoded batches whose C buffers are not yet freed (for leak tests)."""
    return int(lib.gx_live_exports()) if lib is not None else 0


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


# --- OTLP/HTTP protobuf requests ---------------------------------------------------------------

# signal name -> (the C signal number, the imported schema).
_OTLP_SIGNALS: Final = {"traces": (0, FACTS_SCHEMA), "logs": (1, EVENTS_SCHEMA)}
# gx_otlp_status.ignored_by_kind's slots: OTLP's span kinds 0..5, then any other number.
_SPAN_KIND_SLOTS: Final = (*SPAN_KIND_NAMES, "unknown")


def _register_severity_aliases() -> bool:
    """Hands schema.py's severity names to C (one table): False if C could not take them
    all, and then log records go to the Python mapping."""
    if lib is None:
        return False
    return all(
        lib.gx_otlp_severity_alias(name.encode(), number)
        for name, number in SEVERITY_ALIASES.items()
    )


_SEVERITY_ALIASES_REGISTERED: Final = _register_severity_aliases()


def decode_otlp_protobuf(
    signal: Signal, body: bytes, received_unix_nano: int, max_records: int
) -> OtlpBatch | Fallback:
    """An `Export…ServiceRequest` protobuf body mapped in C (an `OtlpWalker`).

    Returns:
        the same OtlpBatch as gravixd.core.otlp's Python mapping gives, or a Fallback when
        C leaves the body to it (a record Python rejects or a value only Python writes:
        `error_offset` None; or a body C could not parse: upb has the last word, and
        `error_offset` says where C stopped).

    Raises:
        TooManyRecords: more than `max_records` spans or log records (counted as walked).
        MemoryError: the column buffers could not be allocated.
    """
    if lib is None:
        raise RuntimeError(f"gravixd._native is not built: {_IMPORT_ERROR}")
    number, schema = _OTLP_SIGNALS[signal.name]
    if signal.name == "logs" and not _SEVERITY_ALIASES_REGISTERED:
        return Fallback(None)
    status = ffi.new("gx_otlp_status *")
    array = ffi.new("struct ArrowArray *")
    code = lib.gx_decode_otlp_arrow(
        number,
        ffi.from_buffer("uint8_t[]", body),
        len(body),
        received_unix_nano,
        max_records,
        status,
        array,
    )
    if code == 0:
        batch = pa.RecordBatch._import_from_c(int(ffi.cast("uintptr_t", array)), schema)
        ignored = {
            kind: int(count)
            for kind, count in zip(_SPAN_KIND_SLOTS, status.ignored_by_kind, strict=True)
            if count
        }
        result = OtlpBatch(batch, ignored_by_kind=ignored)
        return _with_rejections(result, signal, body, status) if status.rejected else result
    if code == _TOO_MANY_RECORDS:
        raise TooManyRecords(signal, max_records, int(status.error_offset), retryable=False)
    if code == _NO_MEMORY:
        raise MemoryError(f"decoding a {len(body)}-byte OTLP protobuf body")
    if code == _FALLBACK:
        return Fallback(None)
    return Fallback(int(status.error_offset))


# gx_otlp_status.rejected_by_reason's slots (GX_REJECT_*): otlp.py's reasons.
_REJECT_REASONS: Final = (
    "invalid_trace_id",
    "invalid_time",
    "invalid_status_code",
    "invalid_bytes_in",
    "invalid_bytes_out",
)


def _with_rejections(
    result: OtlpBatch, signal: Signal, body: bytes, status: Any
) -> OtlpBatch | Fallback:
    """The records C left out, counted by reason, the first ones worded by the Python
    mapping itself (each record parsed alone): its messages, never a paraphrase. Should
    Python take a record C rejected, the body is Python's (Fallback)."""
    result.rejected = int(status.rejected)
    result.rejected_reasons = {
        reason: int(count)
        for reason, count in zip(_REJECT_REASONS, status.rejected_by_reason, strict=True)
        if count
    }
    for k in range(min(result.rejected, len(status.rejections))):
        x = status.rejections[k]
        verdict = rejection(signal.name, body[x.offset : x.offset + x.length])
        if verdict is None or verdict[0] != _REJECT_REASONS[x.reason]:
            return Fallback(None)
        if len(result.errors) < MAX_ERROR_MESSAGES:
            where = record_path(signal.name, x.resource, x.scope, x.record)
            result.errors.append(f"{verdict[1]} - at `{where}`")
    return result


def otlp_walker_for(decoder: ProtobufDecoder) -> OtlpWalker | None:
    """The OTLP protobuf walker that goes with the daemon's protobuf decoder: C when that is
    the native decoder, else None (the Python mapping: `GRAVIXD_NATIVE=0`, or not built)."""
    return decode_otlp_protobuf if decoder is decode_protobuf and AVAILABLE else None
