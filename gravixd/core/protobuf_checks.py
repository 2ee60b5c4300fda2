"""Is a protobuf body the message it claims to be? A `RequestFact` posted where a
`RequestFactBatch` belongs, or a facts batch posted to `/v1/events`, parses as protobuf
(every field it does not know is skipped) and would be stored wrong or not at all.

Two signs, checked alike by the pure path (here) and the C decoder (native/gravix_decode.c,
which records the first wrong wire type as it parses): a known field with another wire type
than the schema's (the batch's field 1, or an entry's field), and a non-empty body that
yields no event. Each becomes a `DecodeError` (reason `wrong_message`) that says which field,
and which message the body probably is. Sans-I/O; never reads outside the body.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from google.protobuf.descriptor import FieldDescriptor

from ..errors import DecodeError
from ..proto.gravix.v1 import events_pb2

__all__ = ["WrongWire", "find_wrong_wire", "no_event_error", "wrong_wire_error"]

_REASON: Final = "wrong_message"
_WIRE_NAMES: Final = {
    0: "a varint",
    1: "a 64-bit value",
    2: "a length-delimited value",
    3: "a group",
    4: "a group end",
    5: "a 32-bit value",
}
_FIXED64: Final = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FIXED64,
                   FieldDescriptor.TYPE_SFIXED64}  # fmt: skip
_FIXED32: Final = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_FIXED32,
                   FieldDescriptor.TYPE_SFIXED32}  # fmt: skip


def _wire_type(field: FieldDescriptor) -> int:
    if field.type in _FIXED64:
        return 1
    if field.type in _FIXED32:
        return 5
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES,
                      FieldDescriptor.TYPE_MESSAGE):  # fmt: skip
        return 2
    return 0


# Per stream: (batch message, entry message); field number -> (name, wire type), from the
# generated descriptors (the C decoder's tables spell the same).
_MESSAGES: Final = {
    "facts": (events_pb2.RequestFactBatch.DESCRIPTOR, events_pb2.RequestFact.DESCRIPTOR),
    "events": (events_pb2.ServiceEventBatch.DESCRIPTOR, events_pb2.ServiceEvent.DESCRIPTOR),
}
_FIELDS: Final = {
    stream: {f.number: (f.name, _wire_type(f)) for f in entry.fields}
    for stream, (_, entry) in _MESSAGES.items()
}
_OTHER: Final = {"facts": "events", "events": "facts"}


class WrongWire(NamedTuple):
    """The first known field with another wire type: in the batch itself (`in_batch`, its
    field 1, after `row` entries) or in entry `row`; `tag` as on the wire."""

    in_batch: bool
    row: int
    tag: int


def find_wrong_wire(stream: str, body: bytes) -> WrongWire | None:
    """The first wrong wire type of a batch body that upb parsed (so it is well-formed):
    the batch's own first, else the first entry's in wire order."""
    entries: list[tuple[int, int]] = []
    for tag, start, end in _fields(body, 0, len(body)):
        if tag >> 3 != 1:
            continue
        if tag & 7 != 2:
            return WrongWire(True, len(entries), tag)
        entries.append((start, end))
    known = _FIELDS[stream]
    for row, (start, end) in enumerate(entries):
        for tag, _, _ in _fields(body, start, end):
            field = known.get(tag >> 3)
            if field is not None and tag & 7 != field[1]:
                return WrongWire(False, row, tag)
    return None


def wrong_wire_error(stream: str, wrong: WrongWire) -> DecodeError:
    """What `wrong` means, in the words both decoders use."""
    batch, entry = _MESSAGES[stream]
    got = _WIRE_NAMES.get(wrong.tag & 7, f"wire type {wrong.tag & 7}")
    if wrong.in_batch:
        return DecodeError(
            f"Expected field 1 (`{stream}`) of `{batch.full_name}` as {_WIRE_NAMES[2]} "
            f"(a `{entry.name}`), got {got} - at `$`: probably a single `{entry.full_name}`; "
            f"wrap it in a `{batch.name}`",
            _REASON,
        )
    number = wrong.tag >> 3
    name, wire = _FIELDS[stream][number]
    other = _OTHER[stream]
    theirs = _FIELDS[other].get(number)
    if theirs is not None and theirs[1] == wrong.tag & 7:  # the other stream's field fits
        probably = f"a `{_MESSAGES[other][0].full_name}`; post it to /v1/{other}"
    else:
        probably = f"another message than a `{batch.full_name}`"
    return DecodeError(
        f"Expected field {number} (`{name}`) of `{entry.full_name}` as {_WIRE_NAMES[wire]}, "
        f"got {got} - at `$.{stream}[{wrong.row}].{name}`: probably {probably}",
        _REASON,
    )


def no_event_error(stream: str, size_bytes: int) -> DecodeError:
    """A non-empty body that holds no entry of the batch: never `202 {"accepted": 0}`."""
    batch, entry = _MESSAGES[stream]
    return DecodeError(
        f"Expected a `{batch.full_name}` with at least one `{stream}` entry (field 1), got "
        f"{size_bytes} bytes holding none - at `$`: probably a single `{entry.full_name}` "
        f"(wrap it in a `{batch.name}`) or another message",
        _REASON,
    )


def _fields(body: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """(tag, value start, value end) of each top-level field of body[start:end], a message
    upb accepted (groups are skipped whole)."""
    fields = []
    at = start
    while at < end:
        tag, at = _varint(body, at)
        value = at
        wire = tag & 7
        if wire == 0:
            _, at = _varint(body, at)
        elif wire == 1:
            at += 8
        elif wire == 2:
            length, value = _varint(body, at)
            at = value + length
        elif wire == 5:
            at += 4
        elif wire == 3:
            at = _skip_group(body, at, end, tag >> 3)
        fields.append((tag, value, at))
    return fields


def _skip_group(body: bytes, at: int, end: int, number: int) -> int:
    while at < end:
        tag, at = _varint(body, at)
        wire = tag & 7
        if wire == 4 and tag >> 3 == number:
            return at
        if wire == 0:
            _, at = _varint(body, at)
        elif wire == 1:
            at += 8
        elif wire == 2:
            length, at = _varint(body, at)
            at += length
        elif wire == 5:
            at += 4
        elif wire == 3:
            at = _skip_group(body, at, end, tag >> 3)
    return at


def _varint(body: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = body[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, at
        shift += 7
