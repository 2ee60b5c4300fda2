"""Payload bytes -> Arrow record batches, for both streams. Sans-I/O: no trio, no clock.

Three wire forms reach here: JSON (one object or an array), NDJSON (one object a line) and
protobuf (a `*Batch` message). Each yields a `pa.RecordBatch` with exactly the schema in
`gravixd.schema`, so every later stage is wire-form agnostic. JSON goes through msgspec
Structs (the schema is the type); protobuf through a pluggable function, so that the native
C decoder (`gravixd.native`) and the pure `protobuf` package path are interchangeable and the
runtime picks one at start.

Errors are `DecodeError`s that say what was expected, what came and where, in msgspec's own
words (``Expected `int` <= 999 - at `$[3].status_code` ``). `decode` is all-or-nothing;
`decode_valid` leaves invalid events out and reports them (partial acceptance). JSON also
takes what emitters send beyond proto3 JSON (DESIGN.md section 2: nulls, RFC 3339
`timestamp`, severity names; `json_fields` converts each value), in every JSON form.

`received_unix_nano` is passed in: it replaces `timestamp_unix_nano == 0` ("time of receipt").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Annotated, Any, Final, TypeAlias, cast

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError as ProtobufDecodeError

from ..errors import DecodeError
from ..proto.gravix.v1 import events_pb2
from ..schema import (
    ATTRIBUTES_TYPE,
    EVENTS_SCHEMA,
    FACTS_SCHEMA,
    MAX_INT64,
    MAX_STATUS_CODE,
    SEVERITY_NAMES,
    STREAMS,
    TIMESTAMP_TYPE,
    severity_name,
)
from .framing import encode_varint
from .json_fields import (
    MIN_UNIX_NANO,
    FieldValueError,
    int64_of,
    rfc3339_unix_nano,
    severity_number_of,
    severity_of,
    unix_nano_of,
)
from .protobuf_checks import find_wrong_wire, no_event_error, wrong_wire_error
from .unknown_fields import UnknownFields

JSON_TYPES: Final = frozenset({"application/json"})
NDJSON_TYPES: Final = frozenset({"application/x-ndjson", "application/jsonl", "application/ndjson"})
PROTOBUF_TYPES: Final = frozenset({"application/x-protobuf", "application/protobuf"})
CONTENT_TYPES: Final = JSON_TYPES | NDJSON_TYPES | PROTOBUF_TYPES

# What decode() returns: columns, or a small request's rows (see `Rows`).
Decoded: TypeAlias = "pa.RecordBatch | Rows"
# (stream, body, received_unix_nano) -> batch; raises DecodeError.
ProtobufDecoder: TypeAlias = Callable[[str, bytes, int], pa.RecordBatch]

# --- the JSON shape of the contract (DESIGN.md sections 1-2) --------------------------------

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
StatusCode = Annotated[int, msgspec.Meta(ge=0, le=MAX_STATUS_CODE)]
# proto3 JSON lets 64-bit integers come as numbers or decimal strings.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=MAX_INT64)] | str | None
UInt64 = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)] | str | None

# `null` means the field's default (proto3 JSON), except for the required `service`.
# `timestamp` is the RFC 3339 alternative to timestamp_unix_nano; numbers are accepted by
# the type only to be refused with a message that points at timestamp_unix_nano.


class RequestFact(msgspec.Struct, gc=False):
    service: NonEmptyStr
    timestamp_unix_nano: Int64 = 0
    route: str | None = ""
    method: str | None = ""
    status_code: StatusCode | None = 0
    duration_ms: float | None = 0.0
    bytes_in: UInt64 = 0
    bytes_out: UInt64 = 0
    trace_id: str | None = ""
    attributes: dict[str, str] | None = None
    timestamp: str | int | float | None = None


class ServiceEvent(msgspec.Struct, gc=False):
    service: NonEmptyStr
    timestamp_unix_nano: Int64 = 0
    kind: str | None = ""
    severity: int | str | None = 0
    message: str | None = ""
    trace_id: str | None = ""
    attributes: dict[str, str] | None = None
    timestamp: str | int | float | None = None


# The same Structs refusing keys they do not know: the decoders every body meets first. A
# body they take has no unknown key, so it pays nothing for `unknown_fields`; only one they
# refuse is decoded again, by the Structs above and as key -> raw value maps (`_decode_keeping`).
class _KnownFact(RequestFact, forbid_unknown_fields=True):
    pass


class _KnownEvent(ServiceEvent, forbid_unknown_fields=True):
    pass


_STRUCTS: Final = {"facts": RequestFact, "events": ServiceEvent}
_KNOWN_STRUCTS: Final = {"facts": _KnownFact, "events": _KnownEvent}
_KNOWN_KEYS: Final = {
    stream: frozenset(struct.__struct_encode_fields__) for stream, struct in _STRUCTS.items()
}
_BODY_DECODERS: Final = {
    stream: msgspec.json.Decoder(list[struct] | struct)  # type: ignore[valid-type]
    for stream, struct in _KNOWN_STRUCTS.items()
}
_LINE_DECODERS: Final = {stream: msgspec.json.Decoder(s) for stream, s in _KNOWN_STRUCTS.items()}
# The lenient decoders (unknown keys skipped) and the key maps, by the shape decoded.
_RawObject: TypeAlias = dict[str, msgspec.Raw]
_LENIENT_DECODERS: Final = {
    "body": {
        stream: msgspec.json.Decoder(list[struct] | struct)  # type: ignore[valid-type]
        for stream, struct in _STRUCTS.items()
    },
    "line": {stream: msgspec.json.Decoder(struct) for stream, struct in _STRUCTS.items()},
    "slice": {
        stream: msgspec.json.Decoder(list[struct])  # type: ignore[valid-type]
        for stream, struct in _STRUCTS.items()
    },
}
# One object's keys, values as Python objects (one C pass); as raw JSON where a value cannot
# be built (1e400).
_KEY_DECODER: Final = msgspec.json.Decoder(dict[str, Any])
_RAW_KEY_DECODER: Final = msgspec.json.Decoder(_RawObject)
# For partial acceptance: the items of an array, each decoded on its own.
_RAW_ITEMS: Final = msgspec.json.Decoder(list[msgspec.Raw])


def decode(
    stream: str,
    media_type: str,
    body: bytes,
    received_unix_nano: int,
    protobuf_decoder: ProtobufDecoder | None = None,
    *,
    unknown: UnknownFields | None = None,
) -> Decoded:
    """Decode a request body of `media_type` into a record batch of `stream` (or, for a
    small JSON request, validated `Rows` that the spool batches with others).

    Args:
        stream: "facts" or "events".
        media_type: the Content-Type without parameters, lower case; one of CONTENT_TYPES.
        protobuf_decoder: the protobuf path to use; the pure one when None.
        unknown: what to do with JSON keys the schema does not know, and their count;
            None keeps them in `attributes`.

    Raises:
        DecodeError: the body is not a valid payload; nothing of it is accepted.
        ValueError: unknown stream or media type (a caller bug: check CONTENT_TYPES first).
    """
    if media_type in JSON_TYPES:
        return decode_json(stream, body, received_unix_nano, unknown)
    if media_type in NDJSON_TYPES:
        return decode_ndjson(stream, body, received_unix_nano, unknown)
    if media_type in PROTOBUF_TYPES:
        batch = (protobuf_decoder or decode_protobuf_pure)(stream, body, received_unix_nano)
        if not batch.num_rows and body:
            raise no_event_error(stream, len(body))  # never `202 {"accepted": 0}`
        return batch
    raise ValueError(f"unsupported media type {media_type!r}")


def decode_json(
    stream: str, body: bytes, received_unix_nano: int, unknown: UnknownFields | None = None
) -> Decoded:
    """One JSON object or an array of them; several objects one a line are NDJSON."""
    unknown = unknown or UnknownFields()
    try:
        expected = "Expected a JSON object or array"
        decoded = _parse_keeping(stream, "body", body, expected, unknown)
    except DecodeError:
        if several_json_objects(body):
            return decode_ndjson(stream, body, received_unix_nano, unknown)
        raise
    items, item_path = (decoded, "$[{}]") if isinstance(decoded, list) else ([decoded], "$")
    if len(items) <= SMALL_REQUEST_ROWS:
        return _small_rows(stream, items, received_unix_nano, item_path)
    return _to_batch(stream, items, received_unix_nano, item_path)


def several_json_objects(body: bytes) -> bool:
    """Whether a body that is not one JSON value is JSON objects one a line: what older
    Fluent Bit (before 3.0) sends as `json_lines` with `Content-Type: application/json`.

    True when its first two non-blank lines each look like a whole object (`{...}`), so a
    pretty-printed object (whose first line is `{`) with a syntax error keeps its JSON error;
    the NDJSON decoder then says which line is wrong, if any. Only asked once a body has
    failed to parse as JSON.
    """
    first, _, rest = body.lstrip().partition(b"\n")
    first = first.rstrip()
    return first.startswith(b"{") and first.endswith(b"}") and rest.lstrip().startswith(b"{")


def _parse_json(decoder: Any, data: bytes, expected: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise DecodeError(*_syntax_error(exc, data, expected)) from None
    except RecursionError:
        raise DecodeError(_TOO_DEEP, "invalid_json") from None


def _parse_keeping(
    stream: str, shape: str, data: bytes, expected: str, unknown: UnknownFields
) -> Any:
    """`_parse_json` of one JSON body, line or array item (`shape` "body" or "line"), with
    its unknown keys handled by `unknown`.

    Raises:
        DecodeError: as `_parse_json` does; an unknown key alone is no error.
    """
    known = _BODY_DECODERS[stream] if shape == "body" else _LINE_DECODERS[stream]
    try:
        return known.decode(data)
    except msgspec.ValidationError:
        pass  # an unknown key, or a real mistake: the lenient decoder tells which
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return _parse_json(known, data, expected)  # not JSON: raises with the diagnosis
    decoded = _parse_json(_LENIENT_DECODERS[shape][stream], data, expected)
    _merge_unknown(stream, shape, data, decoded, unknown)
    return decoded


def _decode_keeping(stream: str, shape: str, data: bytes, unknown: UnknownFields) -> Any:
    """msgspec's decode of an NDJSON chunk (`shape` "lines") or a JSON array slice ("slice"),
    unknown keys handled by `unknown`. Raises msgspec's own errors, as the decoders do."""
    lines = shape == "lines"
    known = _LINE_DECODERS[stream] if lines else _SLICE_DECODERS[stream]
    try:
        return known.decode_lines(data) if lines else known.decode(data)
    except msgspec.ValidationError:
        pass  # an unknown key, or a real mistake: the lenient decoder tells which
    if lines:
        items = _LENIENT_DECODERS["line"][stream].decode_lines(data)
    else:
        items = _LENIENT_DECODERS["slice"][stream].decode(data)
    _merge_unknown(stream, shape, data, items, unknown)
    return items


def _merge_unknown(
    stream: str, shape: str, data: bytes, decoded: Any, unknown: UnknownFields
) -> None:
    """Each decoded item's unknown keys, read from its own JSON object one at a time (the
    key maps of a whole 8 MiB body at once would hold ~10x its size)."""
    known = _KNOWN_KEYS[stream]
    if not isinstance(decoded, list):
        unknown.merge(decoded, _keys_of(data), known)
        return
    if shape == "lines":
        # The lines msgspec's decode_lines took: it skips only whitespace-only lines.
        objects: Any = [line for line in data.split(b"\n") if line.strip()]
    else:
        objects = _RAW_ITEMS.decode(data)
    for item, text in zip(decoded, objects, strict=True):
        unknown.merge(item, _keys_of(text), known)


def _keys_of(data: bytes | msgspec.Raw) -> dict[str, Any]:
    try:
        keys: dict[str, Any] = _KEY_DECODER.decode(data)
        return keys
    except (msgspec.DecodeError, RecursionError):
        # A value msgspec skipped but cannot build: a number out of range, bad UTF-8, a lone
        # surrogate, deep nesting. Raw values take anything the lenient decode took.
        return cast(dict[str, Any], _RAW_KEY_DECODER.decode(data))


def _validation_error(exc: msgspec.ValidationError, first_index: int = 0) -> DecodeError:
    # Every optional field takes null (its default): saying so in each message would
    # only distract from the type that was meant ("Expected `int`, got `str`").
    message = str(exc).replace(" | null`", "`")
    if first_index:  # a slice of an array: the index within the whole body
        message = _ITEM_INDEX.sub(lambda m: f" - at `$[{int(m[1]) + first_index}]", message)
    return DecodeError(message, "validation")


_ITEM_INDEX: Final = re.compile(r" - at `\$\[(\d+)\](?=[^`]*`$)")


# Requests this small skip Arrow here: building ten one-row columns costs more than
# everything else a single-event request does. They are validated and normalized now and
# become columns together, one batch per group commit (`rows_to_batch`).
SMALL_REQUEST_ROWS: Final = 16


class Rows:
    """Decoded, validated events of one small request, not yet columnar.

    Every field is final (`_normalize`): 64-bit integers are ints, the timestamp is
    nanoseconds with a zero replaced by the receipt time, severity is a number, attributes
    are sorted; a `null` left in a field is its default. `rows_to_batch` turns any number of
    these into one record batch and cannot fail.
    """

    __slots__ = ("items", "stream")

    def __init__(self, stream: str, items: list[Any]) -> None:
        self.stream = stream
        self.items = items

    @property
    def num_rows(self) -> int:
        return len(self.items)


def as_record_batch(stream: str, decoded: Decoded) -> pa.RecordBatch:
    """What `decode` returned, as a record batch (for callers that need columns now)."""
    return rows_to_batch(stream, [decoded]) if isinstance(decoded, Rows) else decoded


def rows_to_batch(stream: str, rows: Sequence[Rows]) -> pa.RecordBatch:
    items = [item for r in rows for item in r.items]
    return _finish(stream, _row_array(stream, items), 0, attributes_sorted=True)


def _small_rows(
    stream: str,
    items: list[Any],
    received_unix_nano: int,
    item_path: str,
    ndjson_lines: bytes | None = None,
) -> Rows:
    facts = stream == "facts"
    if not facts:
        _severity_numbers(items)
    for index, item in enumerate(items):
        nanos = item.timestamp_unix_nano
        # The usual values, checked inline (a function call per item costs more than all
        # of this): then only a zero timestamp needs setting.
        if (
            nanos.__class__ is int
            and (nanos >= MIN_UNIX_NANO or nanos == 0)
            and item.timestamp is None
            and (
                (item.bytes_in.__class__ is int and item.bytes_out.__class__ is int)
                if facts
                else (item.severity.__class__ is int and 0 <= item.severity <= _MAX_SEVERITY)
            )
        ):
            if not nanos:
                item.timestamp_unix_nano = received_unix_nano
            continue
        try:
            _normalize(stream, item, received_unix_nano)
        except _FieldError as exc:
            raise _decode_error(exc, index, item_path, ndjson_lines) from None
    return _as_rows(stream, items)


_MAX_SEVERITY: Final = 2**31 - 1


def _as_rows(stream: str, items: list[Any]) -> Rows:
    for item in items:
        attributes = item.attributes
        if attributes and len(attributes) > 1:
            # A few rows: sorting each in Python beats Arrow's fixed cost (~45 µs a batch).
            item.attributes = dict(sorted(attributes.items()))
    return Rows(stream, items)


class _FieldError(Exception):
    """One field of an item is wrong: `message` is "Expected ..., got ..."; `index` is the
    item's, where the raiser knows it."""

    def __init__(self, field: str, message: str, index: int = 0) -> None:
        self.field, self.message, self.index = field, message, index


def _decode_error(
    exc: _FieldError, index: int, item_path: str, ndjson_lines: bytes | None
) -> DecodeError:
    where = f"line {_line_of_item(ndjson_lines, index)}: " if ndjson_lines else ""
    return DecodeError(f"{where}{exc.message} - at `{item_path.format(index)}.{exc.field}`")


def _normalize(stream: str, item: Any, received_unix_nano: int) -> None:
    """Make one decoded item final (see `Rows`), or raise `_FieldError`. Not idempotent:
    `timestamp` is consumed (set to None) and a zero timestamp replaced."""
    field = "timestamp_unix_nano"
    try:
        nanos = unix_nano_of(item.timestamp_unix_nano)
        if item.timestamp is not None:
            if nanos:
                field = "timestamp"
                raise FieldValueError("Expected `timestamp` or `timestamp_unix_nano`, got both")
            field = "timestamp"
            nanos = rfc3339_unix_nano(item.timestamp)
            item.timestamp = None
        item.timestamp_unix_nano = nanos or received_unix_nano
        if stream == "facts":
            field = "bytes_in"
            item.bytes_in = int64_of(item.bytes_in, 0)
            field = "bytes_out"
            item.bytes_out = int64_of(item.bytes_out, 0)
        else:
            field = "severity"
            item.severity = severity_of(item.severity)
    except FieldValueError as exc:
        raise _FieldError(field, exc.message) from None


def decode_ndjson(
    stream: str, body: bytes, received_unix_nano: int, unknown: UnknownFields | None = None
) -> Decoded:
    """One JSON object a line; blank lines are skipped. Any bad line rejects the body."""
    try:
        items = _decode_keeping(stream, "lines", body, unknown or UnknownFields())
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # Slow path, only to say which line is wrong.
        _, errors = decode_ndjson_lenient(stream, body, received_unix_nano)
        if not errors:  # a "blank" line to bytes.strip (e.g. b"\x0b") that msgspec refuses
            raise DecodeError(f"Expected one JSON object a line: {exc}", "invalid_json") from None
        raise DecodeError(errors[0].message, errors[0].reason) from None
    if len(items) <= SMALL_REQUEST_ROWS:
        return _small_rows(stream, items, received_unix_nano, "$", ndjson_lines=body)
    return _to_batch(stream, items, received_unix_nano, "$", ndjson_lines=body)


# --- big bodies in slices ------------------------------------------------------------------
#
# One msgspec call over an 8 MiB JSON body holds the GIL ~25-60 ms, and building its columns
# as long again: in a worker thread too, the event loop waits that long. `decode_in_slices`
# does the same work in steps of ~2-5 ms that the runtime interleaves with other
# connections: the array is split first (`list[msgspec.Raw]` checks the syntax without
# building objects, ~7 ms for 8 MiB), NDJSON by lines; then each slice is typed-decoded, and
# once all are valid each slice becomes columns. The phases keep the one-shot order of the
# checks (msgspec's over the whole body first, then `_normalize`'s), so the first error and
# its message are the ones `decode` gives; the result equals `decode`'s.

# Events a step decodes: ~2 ms of msgspec, ~5 ms of columns for the bench's 260-byte facts.
DECODE_SLICE_ROWS: Final = 2048
_SLICE_DECODERS: Final = {
    stream: msgspec.json.Decoder(list[struct])  # type: ignore[valid-type]
    for stream, struct in _KNOWN_STRUCTS.items()
}
# Resume (`next`) until StopIteration, whose `value` is the result; other work may run
# between steps.
DecodeSteps: TypeAlias = Generator[None, None, Decoded]


def decode_in_slices(
    stream: str,
    media_type: str,
    body: bytes,
    received_unix_nano: int,
    slice_rows: int = DECODE_SLICE_ROWS,
    *,
    unknown: UnknownFields | None = None,
) -> DecodeSteps:
    """`decode` of a JSON or NDJSON body, in steps of at most `slice_rows` events.

    Raises (from a step):
        DecodeError: as `decode` does, with the same message.
        ValueError: a media type that is not JSON or NDJSON.
    """
    unknown = unknown or UnknownFields()
    if media_type in JSON_TYPES:
        return _json_in_slices(stream, body, received_unix_nano, slice_rows, unknown)
    if media_type in NDJSON_TYPES:
        return _ndjson_in_slices(stream, body, received_unix_nano, slice_rows, unknown)
    raise ValueError(f"decode_in_slices takes JSON or NDJSON, not {media_type!r}")


def _json_in_slices(
    stream: str, body: bytes, received_unix_nano: int, n: int, unknown: UnknownFields
) -> DecodeSteps:
    try:
        raw = _RAW_ITEMS.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        if several_json_objects(body):  # older Fluent Bit's json_lines: NDJSON, in slices
            return (yield from _ndjson_in_slices(stream, body, received_unix_nano, n, unknown))
        # One object (one event: no slices), or no JSON: `decode_json` says what, as always.
        return decode_json(stream, body, received_unix_nano, unknown)
    yield
    items: list[Any] = []
    for start in range(0, len(raw), n):
        try:
            chunk = b"[" + b",".join(raw[start : start + n]) + b"]"
            items += _decode_keeping(stream, "slice", chunk, unknown)
        except msgspec.ValidationError as exc:
            raise _validation_error(exc, start) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            # Bad text in a string (invalid UTF-8, a lone surrogate): the message places it
            # by its byte in the body, which only the whole body's decode knows.
            return decode_json(stream, body, received_unix_nano, UnknownFields(unknown.mode))
        yield
    del raw
    return (yield from _columns_in_slices(stream, items, received_unix_nano, "$[{}]", None, n))


def _ndjson_in_slices(
    stream: str, body: bytes, received_unix_nano: int, n: int, unknown: UnknownFields
) -> DecodeSteps:
    lines = body.split(b"\n")
    items: list[Any] = []
    for start in range(0, len(lines), n):
        try:
            items += _decode_keeping(stream, "lines", b"\n".join(lines[start : start + n]), unknown)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            yield from _first_line_error(stream, lines, received_unix_nano, n)
            return decode_ndjson(stream, body, received_unix_nano)  # raises, as it does
        yield
    del lines
    return (yield from _columns_in_slices(stream, items, received_unix_nano, "$", body, n))


def _first_line_error(
    stream: str, lines: list[bytes], received_unix_nano: int, n: int
) -> Generator[None, None, None]:
    """Raise the first bad line's error, as `decode_ndjson`'s slow path does (a line that
    msgspec takes can still fail `_normalize`, before the one that msgspec refused)."""
    offset = 0
    for start in range(0, len(lines), n):
        chunk = b"\n".join(lines[start : start + n])
        _, errors = decode_ndjson_lenient(stream, chunk, received_unix_nano, start + 1, offset)
        if errors:
            raise DecodeError(errors[0].message, errors[0].reason)
        offset += len(chunk) + 1
        yield


def _columns_in_slices(
    stream: str,
    items: list[Any],
    received_unix_nano: int,
    item_path: str,
    ndjson_lines: bytes | None,
    n: int,
) -> DecodeSteps:
    if len(items) <= SMALL_REQUEST_ROWS:
        return _small_rows(stream, items, received_unix_nano, item_path, ndjson_lines)
    batches = []
    for start in range(0, len(items), n):
        part = items[start : start + n]
        batches.append(
            _to_batch(stream, part, received_unix_nano, item_path, ndjson_lines, first_index=start)
        )
        yield
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


class LineError(msgspec.Struct, frozen=True):
    """A rejected NDJSON line: 1-based line number, byte offset of its start, message."""

    line: int
    byte_offset: int
    message: str
    reason: str


def decode_ndjson_lenient(
    stream: str,
    body: bytes,
    received_unix_nano: int,
    first_line: int = 1,
    first_offset: int = 0,
    unknown: UnknownFields | None = None,
) -> tuple[pa.RecordBatch, list[LineError]]:
    """Decode NDJSON, skipping bad lines (the raw TCP contract) and reporting each.

    `first_line` and `first_offset` place `body` within a longer stream, for messages.
    """
    unknown = unknown or UnknownFields()
    items: list[Any] = []
    errors: list[LineError] = []
    offset = first_offset
    for number, line in enumerate(body.split(b"\n"), start=first_line):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        found = unknown.mark()  # a rejected line's unknown keys are not counted
        try:
            item = _parse_keeping(stream, "line", line, "Expected a JSON object", unknown)
            _normalize(stream, item, received_unix_nano)
        except DecodeError as exc:
            unknown.restore(found)
            errors.append(LineError(number, start, f"line {number}: {exc.message}", exc.reason))
        except _FieldError as exc:
            unknown.restore(found)
            message = f"line {number}: {exc.message} - at `$.{exc.field}`"
            errors.append(LineError(number, start, message, "validation"))
        else:
            items.append(item)
    return _columns_of(stream, items), errors


# --- partial acceptance (DESIGN.md section 2: invalid_events = "skip") ---------------------

# Errors reported in a 202 (each costs a message); the rest are only counted.
MAX_REPORTED_ERRORS: Final = 20


class EventError(msgspec.Struct, frozen=True, omit_defaults=True):
    """One event left out: where it is (`path`, and `line` for NDJSON), why, and a bounded
    `reason` label. Encoded as is into a 202's `errors`."""

    path: str
    message: str
    reason: str
    line: int | None = None


class Partial(msgspec.Struct):
    """The valid events of a body (`decoded`) and what was left out: `rejected` in all,
    `rejected_reasons` by reason (for metrics), the first `errors`."""

    decoded: Any  # Decoded
    rejected: int = 0
    rejected_reasons: dict[str, int] = {}
    errors: list[EventError] = []


def decode_valid(
    stream: str,
    media_type: str,
    body: bytes,
    received_unix_nano: int,
    protobuf_decoder: ProtobufDecoder | None = None,
    *,
    unknown: UnknownFields | None = None,
) -> Partial:
    """Like `decode`, but an invalid event is left out rather than rejecting the body.

    Only events can be left out: a body that does not split into events (a JSON syntax
    error, a protobuf message that does not parse) is still rejected whole, as is one in
    which no event is valid.

    Raises:
        DecodeError: as `decode` does, in those two cases (the first event's error).
    """
    unknown = unknown or UnknownFields()
    try:
        args = (stream, media_type, body, received_unix_nano, protobuf_decoder)
        return Partial(decode(*args, unknown=unknown))
    except DecodeError as first:
        unknown.restore()  # counted again, over the valid events only
        pb = protobuf_decoder
        return valid_after_error(
            stream, media_type, body, received_unix_nano, pb, first, unknown=unknown
        )


def valid_after_error(
    stream: str,
    media_type: str,
    body: bytes,
    received_unix_nano: int,
    protobuf_decoder: ProtobufDecoder | None,
    first: DecodeError,
    *,
    unknown: UnknownFields | None = None,
) -> Partial:
    """`decode_valid` for a body that `decode` (or `decode_in_slices`) rejected with `first`.
    `unknown` counts the unknown keys of the valid events only."""
    unknown = unknown or UnknownFields()
    if media_type in NDJSON_TYPES or (media_type in JSON_TYPES and several_json_objects(body)):
        batch, line_errors = decode_ndjson_lenient(
            stream, body, received_unix_nano, unknown=unknown
        )
        errors = [
            EventError(_path_in(e.message, "$"), e.message, e.reason, e.line) for e in line_errors
        ]
        return _partial(batch, errors, first)
    if first.reason != "validation":
        raise first
    if media_type in JSON_TYPES:
        return _json_valid(stream, body, received_unix_nano, first, unknown)
    return _protobuf_valid(stream, body, received_unix_nano, protobuf_decoder, first)


def _partial(decoded: Decoded, errors: list[EventError], first: DecodeError) -> Partial:
    if not decoded.num_rows:
        raise first
    reasons: dict[str, int] = {}
    for error in errors:
        reasons[error.reason] = reasons.get(error.reason, 0) + 1
    return Partial(decoded, len(errors), reasons, errors[:MAX_REPORTED_ERRORS])


# msgspec's and gravixd's messages end with where: "... - at `$[3].status_code`".
_WHERE: Final = re.compile(r" - at `([^`]*)`$")


def _path_in(message: str, default: str) -> str:
    where = _WHERE.search(message)
    return where[1] if where else default


def _json_valid(
    stream: str, body: bytes, received_unix_nano: int, first: DecodeError, unknown: UnknownFields
) -> Partial:
    try:
        raw = _RAW_ITEMS.decode(body)
    except msgspec.ValidationError:
        raise first from None  # one object (or no object at all), and it is invalid
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # Validation stops at the first invalid event, so a syntax error after it (a lone
        # surrogate escape further on) is only met here: the body is not JSON, as a whole.
        raise DecodeError(*_syntax_error(exc, body, "Expected a JSON object or array")) from None
    items, errors = [], []
    for index, element in enumerate(raw):
        found = unknown.mark()  # a rejected event's unknown keys are not counted
        try:
            # bytes, not the Raw: a syntax error's diagnosis reads the text (`_syntax_error`).
            expected = "Expected a JSON object"
            item = _parse_keeping(stream, "line", bytes(element), expected, unknown)
            _normalize(stream, item, received_unix_nano)
        except DecodeError as exc:
            unknown.restore(found)
            message = exc.message.replace(" - at `$", f" - at `$[{index}]")
            if not _WHERE.search(message):
                message += f" - at `$[{index}]`"
            errors.append(EventError(_path_in(message, ""), message, exc.reason))
        except _FieldError as exc:
            unknown.restore(found)
            path = f"$[{index}].{exc.field}"
            errors.append(EventError(path, f"{exc.message} - at `{path}`", "validation"))
        else:
            items.append(item)
    if len(items) <= SMALL_REQUEST_ROWS:
        return _partial(_as_rows(stream, items), errors, first)
    return _partial(_columns_of(stream, items), errors, first)


def _protobuf_valid(
    stream: str,
    body: bytes,
    received_unix_nano: int,
    protobuf_decoder: ProtobufDecoder | None,
    first: DecodeError,
) -> Partial:
    """Each message decoded alone (as a one-message batch) to find the invalid ones; the
    rest decoded together, by the same decoder."""
    decoder = protobuf_decoder or decode_protobuf_pure
    message_type, field = _BATCH_MESSAGES[stream]
    good, errors = [], []
    for index, message in enumerate(getattr(message_type.FromString(body), field)):
        data = message.SerializeToString()
        one = b"\x0a" + encode_varint(len(data)) + data
        try:
            decoder(stream, one, received_unix_nano)
        except DecodeError as exc:
            text = exc.message.replace(f"`$.{field}[0]", f"`$.{field}[{index}]")
            errors.append(EventError(_path_in(text, f"$.{field}[{index}]"), text, exc.reason))
        else:
            good.append(one)
    batch = decoder(stream, b"".join(good), received_unix_nano)
    return _partial(batch, errors, first)


# msgspec raises RecursionError past Python's recursion limit (unknown keys are skipped
# recursively too); a hostile body must get its 400, not kill the connection handler.
_TOO_DEEP: Final = "Expected JSON nested less than ~1000 levels deep, got deeper nesting"


def _syntax_error(exc: Exception, data: bytes, expected: str) -> tuple[str, str]:
    """(message, reason) for `data` that msgspec could not parse as JSON.

    Whether the bytes are UTF-8 is decided here, never from msgspec's exception: up to 0.22
    it raised `UnicodeDecodeError`, from 0.23 its own `DecodeError` ("Invalid UTF-8 encoded
    string", no position). An earlier syntax error that msgspec placed before the bad byte
    is still reported as that syntax error.
    """
    placed = _BYTE_POSITION.search(str(exc))
    msgspec_byte = int(placed[1]) if placed and not isinstance(exc, UnicodeDecodeError) else None
    bad_byte = _first_invalid_utf8(data)
    if bad_byte is not None and (msgspec_byte is None or msgspec_byte >= bad_byte):
        got = f"invalid byte 0x{data[bad_byte]:02x} at byte {bad_byte}"
        return f"Expected UTF-8 text, got {got}", "invalid_utf8"
    # msgspec calls a lone surrogate escape ("\ud800") "Input data was truncated".
    surrogate = _first_lone_surrogate(data) if bad_byte is None else None
    if surrogate is not None and (msgspec_byte is None or msgspec_byte >= surrogate[0]):
        got = f"lone surrogate escape `{surrogate[1]}` at byte {surrogate[0]}"
        return f"Expected valid Unicode, got {got}", "invalid_utf8"
    return f"{expected}: {exc}", "invalid_json"


# msgspec's syntax errors end with "(byte N)".
_BYTE_POSITION: Final = re.compile(r"\(byte (\d+)\)")


# A JSON escape: \uXXXX or a one-character one. Scanned left to right, an escaped backslash
# is consumed whole, so the JSON text "\\ud800" (a backslash, then "ud800") is no surrogate.
_ESCAPE: Final = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)


def _first_lone_surrogate(data: bytes) -> tuple[int, str] | None:
    """(byte offset, escape) of the first UTF-16 surrogate escape without its other half."""
    high: re.Match[bytes] | None = None  # a high surrogate waiting for its low half
    for escape in _ESCAPE.finditer(data):
        unit = int(escape[1], 16) if escape[1] else -1
        if high is not None:
            if 0xDC00 <= unit <= 0xDFFF and escape.start() == high.end():
                high = None
                continue
            break
        if 0xD800 <= unit <= 0xDBFF:
            high = escape
        elif 0xDC00 <= unit <= 0xDFFF:
            return escape.start(), escape[0].decode()
    return (high.start(), high[0].decode()) if high is not None else None


def _first_invalid_utf8(data: bytes) -> int | None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return None


# --- building Arrow columns from decoded structs ------------------------------------------
#
# The decoded structs become one Arrow struct array in a single pyarrow call (`_row_array`:
# each struct as a tuple, converted field by field in C++), whose children are the columns.
# That beats one Python list and one pa.array call per column. A request whose values all
# fit the row types as they came (numbers, not decimal strings or names; no RFC 3339
# `timestamp`; no unit mistake) needs no Python per item; any other is normalized item by
# item first, which also finds the first wrong value and says where it is.

# The type of each struct field in the row array, in the Struct's field order. Fields that
# `_normalize` turns into numbers have the number's type; `timestamp` keeps its RFC 3339 text
# (it must be null for the columns to be usable as they are).
_ROW_FIELD_TYPES: Final[dict[str, pa.DataType]] = {
    **{f.name: f.type for schema in (FACTS_SCHEMA, EVENTS_SCHEMA) for f in schema},
    "timestamp_unix_nano": pa.int64(),
    "severity": pa.int64(),
    "timestamp": pa.string(),
}
_ROW_TYPES: Final = {
    stream: pa.struct([pa.field(name, _ROW_FIELD_TYPES[name]) for name in struct.__struct_fields__])
    for stream, struct in _STRUCTS.items()
}
# Stored column <- struct field (the stored `timestamp` comes from timestamp_unix_nano).
_SOURCE_FIELD: Final = {"timestamp": "timestamp_unix_nano"}
_SEVERITY_NAMES_ARRAY: Final = pa.array(SEVERITY_NAMES, pa.string())


def _row_array(stream: str, items: Sequence[Any]) -> pa.StructArray:
    return pa.array(list(map(_astuple, items)), type=_ROW_TYPES[stream])


_astuple: Final = msgspec.structs.astuple


def _columns_of(stream: str, items: list[Any]) -> pa.RecordBatch:
    """Final items (`_normalize`d) as a batch, built DECODE_SLICE_ROWS at a time: each
    pyarrow call then holds the GIL a few ms, so a worker thread building a big batch (the
    partial-acceptance slow paths) lets the event loop run in between."""
    n = DECODE_SLICE_ROWS
    if len(items) <= n:
        return _finish(stream, _row_array(stream, items), 0)
    parts = [
        _finish(stream, _row_array(stream, items[i : i + n]), 0) for i in range(0, len(items), n)
    ]
    return pa.concat_batches(parts)


def _to_batch(
    stream: str,
    items: list[Any],
    received_unix_nano: int,
    item_path: str,
    ndjson_lines: bytes | None = None,
    first_index: int = 0,
) -> pa.RecordBatch:
    """`item_path` formats an item's index into its JSON path ("$[{}]" or "$");
    `first_index` is the index of `items[0]` in the body (a slice of it)."""
    if stream == "events":
        _severity_numbers(items)
    try:
        rows = _row_array(stream, items)
        nanos = _timestamps_as_they_are(stream, items, rows, received_unix_nano)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        nanos = None  # a decimal string, a number in `timestamp`, an unknown severity name
    if nanos is not None:
        return _finish(stream, rows, 0, nanos=nanos)
    for index, item in enumerate(items):
        try:
            _normalize(stream, item, received_unix_nano)
        except _FieldError as exc:
            raise _decode_error(exc, first_index + index, item_path, ndjson_lines) from None
    return _finish(stream, _row_array(stream, items), 0)


def _severity_numbers(items: list[Any]) -> None:
    """Severity names to numbers in place, the common spellings by one dict lookup; a name
    no one uses is left for `_normalize` to report."""
    for item in items:
        value = item.severity
        if value.__class__ is str:
            number = severity_number_of(value)
            if number is not None:
                item.severity = number


def _timestamps_as_they_are(
    stream: str, items: list[Any], rows: pa.StructArray, received_unix_nano: int
) -> pa.Array | None:
    """The timestamp column (int64, a zero replaced by the receipt time) when no item needs
    `_normalize`: timestamp_unix_nano as it came, or RFC 3339 `timestamp`s parsed here,
    column-wise. None for anything `_normalize` must look at (and report)."""
    nanos = rows.field("timestamp_unix_nano")
    if nanos.null_count:
        nanos = pc.fill_null(nanos, 0)
    low = pc.min(nanos).as_py()
    if low is not None and low < MIN_UNIX_NANO:
        zero_or_big = pc.or_(pc.equal(nanos, 0), pc.greater_equal(nanos, MIN_UNIX_NANO))
        if not pc.all(zero_or_big).as_py():
            return None  # a unit mistake
    if stream == "events":
        bounds = pc.min_max(rows.field("severity"))
        smallest, largest = bounds["min"].as_py(), bounds["max"].as_py()
        if smallest is not None and (smallest < 0 or largest > _MAX_SEVERITY):
            return None
    texts = rows.field("timestamp")
    if texts.null_count != len(texts):
        if pc.any(pc.and_(pc.is_valid(texts), pc.not_equal(nanos, 0))).as_py():
            return None  # both given
        try:
            times = (i.timestamp for i in items)
            parsed = [0 if t is None else rfc3339_unix_nano(t) for t in times]
        except FieldValueError:
            return None
        nanos = pc.add(nanos, pa.array(parsed, pa.int64()))  # one of the two is 0 in a row
        low = pc.min(nanos).as_py()
    if low == 0:  # some "time of receipt"
        nanos = pc.if_else(pc.equal(nanos, 0), pa.scalar(received_unix_nano, pa.int64()), nanos)
    return nanos


def _finish(
    stream: str,
    rows: pa.StructArray,
    received_unix_nano: int,
    *,
    attributes_sorted: bool = False,
    nanos: pa.Array | None = None,
) -> pa.RecordBatch:
    """The stored columns from a row array whose values are final, nulls meaning defaults
    (`nanos`, when given, is the timestamp column instead of timestamp_unix_nano's)."""
    schema = STREAMS[stream]
    columns = []
    for field in schema:
        if field.name == "timestamp" and nanos is not None:
            columns.append(timestamp_column(nanos, received_unix_nano))
            continue
        child = rows.field(_SOURCE_FIELD.get(field.name, field.name))
        if field.name == "attributes":
            columns.append(_map_column(child, attributes_sorted))
            continue
        if child.null_count:
            child = pc.fill_null(child, _ZEROS[child.type])
        if field.name == "timestamp":
            columns.append(timestamp_column(child, received_unix_nano))
        elif field.name == "severity":
            columns.append(_severity_names(child))
        else:
            columns.append(child)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


_ZEROS: Final = {
    pa.string(): pa.scalar("", pa.string()),
    pa.int64(): pa.scalar(0, pa.int64()),
    pa.int32(): pa.scalar(0, pa.int32()),
    pa.float64(): pa.scalar(0.0, pa.float64()),
}


def _severity_names(numbers: pa.Array) -> pa.Array:
    high = pc.max(numbers).as_py()
    if high is None or high < len(SEVERITY_NAMES):
        return _SEVERITY_NAMES_ARRAY.take(numbers)
    # A newer emitter's enum value: stored as its number (see `schema.severity_name`).
    return pa.array([severity_name(n) for n in numbers.to_pylist()], pa.string())


def _line_of_item(body: bytes, index: int) -> int:
    """1-based line number of the `index`-th non-blank NDJSON line."""
    seen = -1
    for number, line in enumerate(body.split(b"\n"), start=1):
        if line.strip():
            seen += 1
            if seen == index:
                return number
    return 0


def timestamp_column(nanos: pa.Array, received_unix_nano: int) -> pa.Array:
    """int64 nanoseconds -> timestamp[ns, UTC], 0 meaning "time of receipt"."""
    if received_unix_nano:  # 0: the zeros were already replaced (small requests' rows)
        nanos = pc.if_else(pc.equal(nanos, 0), pa.scalar(received_unix_nano, pa.int64()), nanos)
    return nanos.view(TIMESTAMP_TYPE)


_PYTHON_SORT_MAX_ROWS: Final = 64


def attributes_column(maps: Sequence[Mapping[str, str]]) -> pa.Array:
    """map<string,string> from dicts, entries sorted by key (see `_sorted_map`)."""
    if len(maps) <= _PYTHON_SORT_MAX_ROWS:
        # A few rows (one group commit of small requests): sorting each in Python beats
        # the fixed cost of the Arrow compute calls in `_sorted_map` (~38 µs for 6 rows).
        offsets_list, keys_list, values_list = [0], [], []
        for attrs in maps:
            for key in sorted(attrs):
                keys_list.append(key)
                values_list.append(attrs[key])
            offsets_list.append(len(keys_list))
        return pa.MapArray.from_arrays(
            pa.array(offsets_list, pa.int32()),
            pa.array(keys_list, pa.string()),
            pa.array(values_list, pa.string()),
            type=ATTRIBUTES_TYPE,
        )
    offsets = pa.array(list(itertools.accumulate(map(len, maps), initial=0)), pa.int32())
    keys = pa.array(list(itertools.chain.from_iterable(maps)), pa.string())
    values = pa.array(list(itertools.chain.from_iterable(m.values() for m in maps)), pa.string())
    return _sorted_map(offsets, keys, values)


def _map_column(maps: pa.MapArray, already_sorted: bool) -> pa.Array:
    # `offsets` carries no validity: a null map (`"attributes": null`) becomes an empty one.
    offsets, keys, values = maps.offsets, maps.keys, maps.items
    if already_sorted:
        return pa.MapArray.from_arrays(offsets, keys, values, type=ATTRIBUTES_TYPE)
    return _sorted_map(offsets, keys, values)


def _sorted_map(offsets: pa.Array, keys: pa.Array, values: pa.Array) -> pa.Array:
    """Entries are stored sorted by key (keys are unique): the canonical order every decoder
    produces, whatever order the wire had (protobuf map order is unspecified). The sort is
    one Arrow sort over (row, key), not a Python sort per row."""
    if len(keys) > 1:
        rows = pc.list_parent_indices(pa.ListArray.from_arrays(offsets, keys))
        # Most emitters send keys in one order, often sorted: check that in bulk first.
        same_row = pc.equal(rows[1:], rows[:-1])
        out_of_order = pc.and_(same_row, pc.less(keys[1:], keys[:-1]))
        if pc.any(out_of_order).as_py():
            order = pc.sort_indices(
                pa.table({"row": rows, "key": keys}),
                sort_keys=[("row", "ascending"), ("key", "ascending")],
            )
            keys, values = keys.take(order), values.take(order)
    return pa.MapArray.from_arrays(offsets, keys, values, type=ATTRIBUTES_TYPE)


# --- the pure protobuf path ------------------------------------------------------------------

_BATCH_MESSAGES: Final[dict[str, tuple[Any, str]]] = {
    "facts": (events_pb2.RequestFactBatch, "facts"),
    "events": (events_pb2.ServiceEventBatch, "events"),
}


def decode_protobuf_pure(stream: str, body: bytes, received_unix_nano: int) -> pa.RecordBatch:
    """A `RequestFactBatch`/`ServiceEventBatch` through the `protobuf` package (upb)."""
    message_type, field = _BATCH_MESSAGES[stream]
    try:
        batch = message_type.FromString(body)
    except ProtobufDecodeError as exc:
        name = message_type.DESCRIPTOR.full_name
        raise DecodeError(
            f"Expected a `{name}` protobuf message, "
            f"got {len(body)} bytes that do not parse ({exc})",
            "invalid_protobuf",
        ) from None
    # A body of known fields in their wire types re-serializes to its own size; one that
    # does not (unknown fields, or a known field of another wire type, which upb keeps as
    # unknown) is walked to tell which (`protobuf_checks`).
    batch.DiscardUnknownFields()
    if batch.ByteSize() != len(body):
        wrong = find_wrong_wire(stream, body)
        if wrong is not None:
            raise wrong_wire_error(stream, wrong)
    items = getattr(batch, field)
    try:
        if stream == "facts":
            return _facts_batch_pb(items, received_unix_nano)
        return _events_batch_pb(items, received_unix_nano)
    except _FieldError as exc:
        raise DecodeError(f"{exc.message} - at `$.{field}[{exc.index}].{exc.field}`") from None


def _check_services(services: list[str]) -> None:
    if not all(services):
        raise _FieldError("service", "Expected `str` of length >= 1, got ``", services.index(""))


def _check_max(values: list[int], field: str, maximum: int) -> None:
    if values and max(values) > maximum:
        index = next(i for i, v in enumerate(values) if v > maximum)
        raise _FieldError(field, f"Expected `int` <= {maximum}, got `{values[index]}`", index)


def _facts_batch_pb(items: Any, received_unix_nano: int) -> pa.RecordBatch:
    services = [f.service for f in items]
    _check_services(services)
    status_codes = [f.status_code for f in items]
    _check_max(status_codes, "status_code", MAX_STATUS_CODE)
    bytes_in = [f.bytes_in for f in items]
    _check_max(bytes_in, "bytes_in", MAX_INT64)
    bytes_out = [f.bytes_out for f in items]
    _check_max(bytes_out, "bytes_out", MAX_INT64)
    nanos = pa.array([f.timestamp_unix_nano for f in items], pa.int64())
    columns = [
        timestamp_column(nanos, received_unix_nano),
        pa.array(services, pa.string()),
        pa.array([f.route for f in items], pa.string()),
        pa.array([f.method for f in items], pa.string()),
        pa.array(status_codes, pa.int32()),
        pa.array([f.duration_ms for f in items], pa.float64()),
        pa.array(bytes_in, pa.int64()),
        pa.array(bytes_out, pa.int64()),
        pa.array([f.trace_id for f in items], pa.string()),
        attributes_column([f.attributes for f in items]),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=FACTS_SCHEMA)


def _events_batch_pb(items: Any, received_unix_nano: int) -> pa.RecordBatch:
    services = [e.service for e in items]
    _check_services(services)
    nanos = pa.array([e.timestamp_unix_nano for e in items], pa.int64())
    columns = [
        timestamp_column(nanos, received_unix_nano),
        pa.array(services, pa.string()),
        pa.array([e.kind for e in items], pa.string()),
        pa.array([severity_name(e.severity) for e in items], pa.string()),
        pa.array([e.message for e in items], pa.string()),
        pa.array([e.trace_id for e in items], pa.string()),
        attributes_column([e.attributes for e in items]),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=EVENTS_SCHEMA)
