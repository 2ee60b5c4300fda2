"""Payload bytes -> Arrow record batches, for both streams. Sans-I/O: no trio, no clock.

Three wire forms reach here: JSON (one object or an array), NDJSON (one object a line) and
protobuf (a `*Batch` message). Each yields a `pa.RecordBatch` with exactly the schema in
`gravixd.schema`, so every later stage is wire-form agnostic. JSON goes through msgspec
Structs (the schema is the type); protobuf through a pluggable function, so that the native
C decoder (`gravixd.native`) and the pure `protobuf` package path are interchangeable and the
runtime picks one at start.

Errors are `DecodeError`s that say what was expected, what came and where, in msgspec's own
words (``Expected `int` <= 999 - at `$[3].status_code` ``). A request is all-or-nothing.

`received_unix_nano` is passed in: it replaces `timestamp_unix_nano == 0` ("time of receipt").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Final, TypeAlias

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
    TIMESTAMP_TYPE,
    severity_name,
)

JSON_TYPES: Final = frozenset({"application/json"})
NDJSON_TYPES: Final = frozenset({"application/x-ndjson", "application/jsonl", "application/ndjson"})
PROTOBUF_TYPES: Final = frozenset({"application/x-protobuf", "application/protobuf"})
CONTENT_TYPES: Final = JSON_TYPES | NDJSON_TYPES | PROTOBUF_TYPES

# What decode() returns: columns, or a small request's rows (see `Rows`).
Decoded: TypeAlias = "pa.RecordBatch | Rows"
# (stream, body, received_unix_nano) -> batch; raises DecodeError.
ProtobufDecoder: TypeAlias = Callable[[str, bytes, int], pa.RecordBatch]

# --- the JSON shape of the contract (DESIGN.md section 1) -----------------------------------

NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]
StatusCode = Annotated[int, msgspec.Meta(ge=0, le=MAX_STATUS_CODE)]
# proto3 JSON lets 64-bit integers come as numbers or decimal strings.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=MAX_INT64)] | str
UInt64 = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)] | str


class RequestFact(msgspec.Struct, gc=False):
    service: NonEmptyStr
    timestamp_unix_nano: Int64 = 0
    route: str = ""
    method: str = ""
    status_code: StatusCode = 0
    duration_ms: float = 0.0
    bytes_in: UInt64 = 0
    bytes_out: UInt64 = 0
    trace_id: str = ""
    attributes: dict[str, str] = {}


class ServiceEvent(msgspec.Struct, gc=False):
    service: NonEmptyStr
    timestamp_unix_nano: Int64 = 0
    kind: str = ""
    severity: int | str = 0
    message: str = ""
    trace_id: str = ""
    attributes: dict[str, str] = {}


_STRUCTS: Final = {"facts": RequestFact, "events": ServiceEvent}
_BODY_DECODERS: Final = {
    stream: msgspec.json.Decoder(list[struct] | struct)  # type: ignore[valid-type]
    for stream, struct in _STRUCTS.items()
}
_LINE_DECODERS: Final = {stream: msgspec.json.Decoder(s) for stream, s in _STRUCTS.items()}

# "SEVERITY_ERROR" and "ERROR" both name 4.
_SEVERITY_BY_NAME: Final = {
    **{name: i for i, name in enumerate(SEVERITY_NAMES)},
    **{f"SEVERITY_{name}": i for i, name in enumerate(SEVERITY_NAMES)},
}


def decode(
    stream: str,
    media_type: str,
    body: bytes,
    received_unix_nano: int,
    protobuf_decoder: ProtobufDecoder | None = None,
) -> Decoded:
    """Decode a request body of `media_type` into a record batch of `stream` (or, for a
    small JSON request, validated `Rows` that the spool batches with others).

    Args:
        stream: "facts" or "events".
        media_type: the Content-Type without parameters, lower case; one of CONTENT_TYPES.
        protobuf_decoder: the protobuf path to use; the pure one when None.

    Raises:
        DecodeError: the body is not a valid payload; nothing of it is accepted.
        ValueError: unknown stream or media type (a caller bug: check CONTENT_TYPES first).
    """
    if media_type in JSON_TYPES:
        return decode_json(stream, body, received_unix_nano)
    if media_type in NDJSON_TYPES:
        return decode_ndjson(stream, body, received_unix_nano)
    if media_type in PROTOBUF_TYPES:
        return (protobuf_decoder or decode_protobuf_pure)(stream, body, received_unix_nano)
    raise ValueError(f"unsupported media type {media_type!r}")


def decode_json(stream: str, body: bytes, received_unix_nano: int) -> Decoded:
    """One JSON object or an array of them."""
    try:
        decoded = _BODY_DECODERS[stream].decode(body)
    except msgspec.ValidationError as exc:
        raise DecodeError(str(exc), "validation") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        message, reason = _syntax_error(exc, body, "Expected a JSON object or array")
        raise DecodeError(message, reason) from None
    except RecursionError:
        raise DecodeError(_TOO_DEEP, "invalid_json") from None
    items, item_path = (decoded, "$[{}]") if isinstance(decoded, list) else ([decoded], "$")
    if len(items) <= SMALL_REQUEST_ROWS:
        return _small_rows(stream, items, received_unix_nano, item_path)
    return _to_batch(stream, items, received_unix_nano, item_path=item_path)


# Requests this small skip Arrow here: building ten one-row columns costs more than
# everything else a single-event request does. They are validated and normalized now and
# become columns together, one batch per group commit (`rows_to_batch`).
SMALL_REQUEST_ROWS: Final = 16


class Rows:
    """Decoded, validated events of one small request, not yet columnar.

    Every field is final: 64-bit integers are ints, a zero timestamp is the receipt time,
    severity is a number. `rows_to_batch` turns any number of these into one record batch
    and cannot fail.
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
    # Timestamps are already resolved: a zero left here was sent as "receipt time" and set.
    if stream == "facts":
        return _facts_batch(items, 0)
    return _events_batch(items, 0)


def _small_rows(
    stream: str,
    items: list[Any],
    received_unix_nano: int,
    item_path: str,
    ndjson_lines: bytes | None = None,
) -> Rows:
    try:
        for index, item in enumerate(items):
            item.timestamp_unix_nano = (
                _int64_value(index, "timestamp_unix_nano", item.timestamp_unix_nano, -(2**63))
                or received_unix_nano
            )
            if stream == "facts":
                item.bytes_in = _int64_value(index, "bytes_in", item.bytes_in, 0)
                item.bytes_out = _int64_value(index, "bytes_out", item.bytes_out, 0)
            else:
                item.severity = _severity_number(index, item.severity)
    except _FieldError as exc:
        where = f"line {_line_of_item(ndjson_lines, exc.index)}: " if ndjson_lines else ""
        path = f"{item_path.format(exc.index)}.{exc.field}"
        raise DecodeError(f"{where}{exc.expected}, got `{exc.got}` - at `{path}`") from None
    return Rows(stream, items)


def _int64_value(index: int, field: str, value: int | str, minimum: int) -> int:
    if isinstance(value, str):
        # Only ASCII digits and a sign: Python's int() would also take "١٢", "1_000", " 12 ".
        if not _DECIMAL.fullmatch(value):
            raise _FieldError(index, field, "Expected `int` or decimal string", value)
        try:
            value = int(value, 10)
        except ValueError:  # more digits than Python converts (4300): far out of range
            raise _FieldError(
                index, field, f"Expected `int` >= {minimum} and <= {MAX_INT64}", value
            ) from None
        if not minimum <= value <= MAX_INT64:
            raise _FieldError(
                index, field, f"Expected `int` >= {minimum} and <= {MAX_INT64}", value
            )
    return value


_DECIMAL: Final = re.compile(r"[+-]?[0-9]+")


def _severity_number(index: int, value: int | str) -> int:
    name = _severity(index, value)  # validates names and numbers alike
    return value if isinstance(value, int) else SEVERITY_NAMES.index(name)


def decode_ndjson(stream: str, body: bytes, received_unix_nano: int) -> Decoded:
    """One JSON object a line; blank lines are skipped. Any bad line rejects the body."""
    try:
        items = _LINE_DECODERS[stream].decode_lines(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        # Slow path, only to say which line is wrong.
        _, errors = decode_ndjson_lenient(stream, body, received_unix_nano)
        if not errors:  # a "blank" line to bytes.strip (e.g. b"\x0b") that msgspec refuses
            raise DecodeError(f"Expected one JSON object a line: {exc}", "invalid_json") from None
        raise DecodeError(errors[0].message, errors[0].reason) from None
    if len(items) <= SMALL_REQUEST_ROWS:
        return _small_rows(stream, items, received_unix_nano, "$", ndjson_lines=body)
    return _to_batch(stream, items, received_unix_nano, item_path="$", ndjson_lines=body)


class LineError(msgspec.Struct, frozen=True):
    """A rejected NDJSON line: 1-based line number, byte offset of its start, message."""

    line: int
    byte_offset: int
    message: str
    reason: str


def decode_ndjson_lenient(
    stream: str, body: bytes, received_unix_nano: int, first_line: int = 1, first_offset: int = 0
) -> tuple[pa.RecordBatch, list[LineError]]:
    """Decode NDJSON, skipping bad lines (the raw TCP contract) and reporting each.

    `first_line` and `first_offset` place `body` within a longer stream, for messages.
    """
    decoder = _LINE_DECODERS[stream]
    items: list[Any] = []
    errors: list[LineError] = []
    offset = first_offset
    for number, line in enumerate(body.split(b"\n"), start=first_line):
        start, offset = offset, offset + len(line) + 1
        if not line.strip():
            continue
        try:
            item = decoder.decode(line)
            # The checks beyond msgspec's (decimal strings, severity names), per line.
            _small_rows(stream, [item], received_unix_nano, "$")
        except msgspec.ValidationError as exc:
            errors.append(LineError(number, start, f"line {number}: {exc}", "validation"))
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            message, reason = _syntax_error(exc, line, "Expected a JSON object")
            errors.append(LineError(number, start, f"line {number}: {message}", reason))
        except RecursionError:
            errors.append(LineError(number, start, f"line {number}: {_TOO_DEEP}", "invalid_json"))
        except DecodeError as exc:
            errors.append(LineError(number, start, f"line {number}: {exc.message}", exc.reason))
        else:
            items.append(item)
    return rows_to_batch(stream, [Rows(stream, items)]), errors


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


def _to_batch(
    stream: str,
    items: Sequence[Any],
    received_unix_nano: int,
    item_path: str,
    ndjson_lines: bytes | None = None,
) -> pa.RecordBatch:
    """`item_path` formats an item's index into its JSON path ("$[{}]" or "$")."""
    try:
        if stream == "facts":
            return _facts_batch(items, received_unix_nano)
        return _events_batch(items, received_unix_nano)
    except _FieldError as exc:
        where = f"line {_line_of_item(ndjson_lines, exc.index)}: " if ndjson_lines else ""
        path = f"{item_path.format(exc.index)}.{exc.field}"
        raise DecodeError(f"{where}{exc.expected}, got `{exc.got}` - at `{path}`") from None


class _FieldError(Exception):
    def __init__(self, index: int, field: str, expected: str, got: object) -> None:
        self.index, self.field, self.expected, self.got = index, field, expected, got


def _line_of_item(body: bytes, index: int) -> int:
    """1-based line number of the `index`-th non-blank NDJSON line."""
    seen = -1
    for number, line in enumerate(body.split(b"\n"), start=1):
        if line.strip():
            seen += 1
            if seen == index:
                return number
    return 0


def _int64_column(values: list[Any], field: str, minimum: int) -> pa.Array:
    """An int64 column from ints or decimal strings (proto3 JSON allows both)."""
    try:
        return pa.array(values, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass  # some values are strings: convert one by one to say which is wrong
    # msgspec already range-checked the ints; the strings are checked here.
    converted = [_int64_value(i, field, value, minimum) for i, value in enumerate(values)]
    return pa.array(converted, pa.int64())


def timestamp_column(nanos: pa.Array, received_unix_nano: int) -> pa.Array:
    """int64 nanoseconds -> timestamp[ns, UTC], 0 meaning "time of receipt"."""
    if received_unix_nano:  # 0: the zeros were already replaced (small requests' rows)
        nanos = pc.if_else(pc.equal(nanos, 0), pa.scalar(received_unix_nano, pa.int64()), nanos)
    return nanos.view(TIMESTAMP_TYPE)


_PYTHON_SORT_MAX_ROWS: Final = 64


def attributes_column(maps: Sequence[Mapping[str, str]]) -> pa.Array:
    """map<string,string> from dicts, built from flat key/value columns (the fast way).

    Entries are stored sorted by key (keys are unique): the canonical order every decoder
    produces, whatever order the wire had (protobuf map order is unspecified). The sort is
    one Arrow sort over (row, key), not a Python sort per row.
    """
    if len(maps) <= _PYTHON_SORT_MAX_ROWS:
        # A few rows (one group commit of small requests): sorting each in Python beats
        # the fixed cost of the five Arrow compute calls below (~38 µs for 6 rows).
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


def _facts_batch(items: Sequence[RequestFact], received_unix_nano: int) -> pa.RecordBatch:
    nanos = _int64_column([f.timestamp_unix_nano for f in items], "timestamp_unix_nano", -(2**63))
    columns = [
        timestamp_column(nanos, received_unix_nano),
        pa.array([f.service for f in items], pa.string()),
        pa.array([f.route for f in items], pa.string()),
        pa.array([f.method for f in items], pa.string()),
        pa.array([f.status_code for f in items], pa.int32()),
        pa.array([f.duration_ms for f in items], pa.float64()),
        _int64_column([f.bytes_in for f in items], "bytes_in", 0),
        _int64_column([f.bytes_out for f in items], "bytes_out", 0),
        pa.array([f.trace_id for f in items], pa.string()),
        attributes_column([f.attributes for f in items]),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=FACTS_SCHEMA)


def _severity(index: int, value: int | str) -> str:
    if isinstance(value, str):
        number = _SEVERITY_BY_NAME.get(value.upper())
        if number is None:
            names = ", ".join(SEVERITY_NAMES)
            raise _FieldError(index, "severity", f"Expected one of {names} (or a number)", value)
        return SEVERITY_NAMES[number]
    if not 0 <= value <= 2**31 - 1:
        raise _FieldError(index, "severity", "Expected a severity number >= 0", value)
    return severity_name(value)


def _events_batch(items: Sequence[ServiceEvent], received_unix_nano: int) -> pa.RecordBatch:
    nanos = _int64_column([e.timestamp_unix_nano for e in items], "timestamp_unix_nano", -(2**63))
    columns = [
        timestamp_column(nanos, received_unix_nano),
        pa.array([e.service for e in items], pa.string()),
        pa.array([e.kind for e in items], pa.string()),
        pa.array([_severity(i, e.severity) for i, e in enumerate(items)], pa.string()),
        pa.array([e.message for e in items], pa.string()),
        pa.array([e.trace_id for e in items], pa.string()),
        attributes_column([e.attributes for e in items]),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=EVENTS_SCHEMA)


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
    items = getattr(batch, field)
    try:
        if stream == "facts":
            return _facts_batch_pb(items, received_unix_nano)
        return _events_batch_pb(items, received_unix_nano)
    except _FieldError as exc:
        raise DecodeError(
            f"{exc.expected}, got `{exc.got}` - at `$.{field}[{exc.index}].{exc.field}`"
        ) from None


def _check_services(services: list[str]) -> None:
    if not all(services):
        raise _FieldError(services.index(""), "service", "Expected `str` of length >= 1", "")


def _check_max(values: list[int], field: str, maximum: int) -> None:
    if values and max(values) > maximum:
        index = next(i for i, v in enumerate(values) if v > maximum)
        raise _FieldError(index, field, f"Expected `int` <= {maximum}", values[index])


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
