"""OTLP's JSON encoding -> protobuf messages, driven by the messages' own descriptors. Sans-I/O.

OTLP/JSON is proto3's JSON mapping with one deviation that matters to a reader: trace and
span ids are hex, not base64 (OTLP specification, "JSON Protobuf Encoding"). The `protobuf`
package's `json_format` cannot read that and is slow (~100 ms for 1000 spans); this reader
walks the JSON value once, setting fields found by their descriptors (names come from
`opentelemetry-proto`, nothing is restated here), ~10x faster. Per proto3 JSON and OTLP:
keys are the lowerCamelCase JSON names (the proto names are taken too); unknown keys are
ignored; `null` is the default; 64-bit integers come as numbers or decimal strings; enums as
numbers (names taken too); doubles as numbers or "NaN"/"Infinity"/"-Infinity"; other bytes
fields as base64.

Errors are `DecodeError`s naming what was expected, what came and the JSON path
(``Expected `int` or decimal string, got `str` 'soon' - at
`$.resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano` ``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from ..errors import DecodeError

# OTLP: these bytes fields are hex in JSON, in every message that has them.
HEX_ID_FIELDS: Final = frozenset({"trace_id", "span_id", "parent_span_id"})

_HEX: Final = re.compile(r"(?:[0-9a-fA-F]{2})*")
_INTEGER: Final = re.compile(r"-?[0-9]+")
_NON_FINITE: Final = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_INTEGER_TYPES: Final = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


class _PathError(Exception):
    """A bad value; each level it passes up through prepends its key to `path`."""

    def __init__(self, expected: str, got: object) -> None:
        self.expected, self.got, self.path = expected, got, ""


def parse(document: object, message: Any) -> None:
    """Fill `message` (an empty protobuf message) from a decoded OTLP JSON document.

    Raises:
        DecodeError: a value does not fit its field; the message says which, and where.
    """
    try:
        _fill(message, document)
    except _PathError as exc:
        raise DecodeError(
            f"{exc.expected}, got {describe(exc.got)} - at `${exc.path}`", "validation"
        ) from None
    except RecursionError:
        raise DecodeError(
            "Expected JSON nested less than ~1000 levels deep, got deeper nesting", "invalid_json"
        ) from None


# One plan per message class: JSON key -> (field name, how to set it).
_Setter = Callable[[Any, str, object], None]
_PLANS: dict[type, dict[str, tuple[str, _Setter]]] = {}


def _fill(message: Any, document: object) -> None:
    if type(document) is not dict:
        raise _PathError("Expected an object", document)
    plan = _PLANS.get(type(message)) or _plan(message)
    for key, value in document.items():
        entry = plan.get(key)
        if entry is None or value is None:
            continue  # unknown keys are ignored (OTLP); null is the default (proto3 JSON)
        name, setter = entry
        try:
            setter(message, name, value)
        except _PathError as exc:
            exc.path = f".{key}{exc.path}"
            raise


def _plan(message: Any) -> dict[str, tuple[str, _Setter]]:
    descriptor: Descriptor = message.DESCRIPTOR
    plan: dict[str, tuple[str, _Setter]] = {}
    for field in descriptor.fields:
        setter = _setter(field)
        plan[field.json_name] = plan[field.name] = (field.name, setter)
    _PLANS[type(message)] = plan
    return plan


def _setter(field: FieldDescriptor) -> _Setter:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return _unsupported(field)  # no map fields in OTLP traces or logs
    convert = _converter(field)
    if field.message_type is not None:
        if field.is_repeated:
            return _set_repeated_message
        return _set_message
    if field.is_repeated:

        def set_repeated(message: Any, name: str, value: object) -> None:
            if not isinstance(value, list):
                raise _PathError("Expected an array", value)
            target = getattr(message, name)
            for index, item in enumerate(value):
                try:
                    target.append(convert(item))
                except _PathError as exc:
                    exc.path = f"[{index}]{exc.path}"
                    raise

        return set_repeated

    def set_scalar(message: Any, name: str, value: object) -> None:
        try:
            setattr(message, name, convert(value))
        except ValueError:  # upb's range check (e.g. a uint32 given -1)
            raise _PathError(f"Expected a value that fits {_type_name(field)}", value) from None

    return set_scalar


def _set_message(message: Any, name: str, value: object) -> None:
    child = getattr(message, name)
    child.SetInParent()  # `{}` still sets the field (and a oneof: AnyValue's arrayValue)
    _fill(child, value)


def _set_repeated_message(message: Any, name: str, value: object) -> None:
    if not isinstance(value, list):
        raise _PathError("Expected an array", value)
    target = getattr(message, name)
    for index, item in enumerate(value):
        try:
            _fill(target.add(), item)
        except _PathError as exc:
            exc.path = f"[{index}]{exc.path}"
            raise


def _unsupported(field: FieldDescriptor) -> _Setter:
    def setter(message: Any, name: str, value: object) -> None:
        raise _PathError(f"Expected no `{field.json_name}` (not read by gravixd)", value)

    return setter


def _converter(field: FieldDescriptor) -> Callable[[object], object]:
    kind = field.type
    if kind in _INTEGER_TYPES:
        return _integer
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return _number
    if kind == FieldDescriptor.TYPE_BOOL:
        return _bool
    if kind == FieldDescriptor.TYPE_STRING:
        return _string
    if kind == FieldDescriptor.TYPE_BYTES:
        return _hex if field.name in HEX_ID_FIELDS else _base64
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = {v.name: v.number for v in field.enum_type.values}
        return lambda value: _enum(value, numbers)
    return lambda value: value  # messages are filled, not converted


def _integer(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _PathError("Expected `int` or decimal string", value)


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        special = _NON_FINITE.get(value)
        if special is not None:
            return special
        try:
            return float(value)
        except ValueError:
            pass
    raise _PathError('Expected a number (or "NaN", "Infinity", "-Infinity")', value)


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise _PathError("Expected `bool`", value)


def _string(value: object) -> str:
    if isinstance(value, str):
        return value
    raise _PathError("Expected `str`", value)


def _hex(value: object) -> bytes:
    if isinstance(value, str) and _HEX.fullmatch(value):
        return bytes.fromhex(value)
    raise _PathError("Expected a hex string (OTLP JSON encodes ids in hex)", value)


def _base64(value: object) -> bytes:
    if isinstance(value, str):
        try:
            # proto3 JSON: standard or URL-safe alphabet, padding optional.
            text = value.replace("-", "+").replace("_", "/")
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except binascii.Error:
            pass
    raise _PathError("Expected a base64 string", value)


def _enum(value: object, numbers: dict[str, int]) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # proto3 enums are open: an unknown number is kept
    if isinstance(value, str) and value in numbers:
        return numbers[value]
    raise _PathError("Expected an enum number", value)


def _type_name(field: FieldDescriptor) -> str:
    names = {
        FieldDescriptor.TYPE_INT32: "int32",
        FieldDescriptor.TYPE_UINT32: "uint32",
        FieldDescriptor.TYPE_FIXED32: "fixed32",
        FieldDescriptor.TYPE_SFIXED32: "sfixed32",
        FieldDescriptor.TYPE_SINT32: "sint32",
        FieldDescriptor.TYPE_INT64: "int64",
        FieldDescriptor.TYPE_UINT64: "uint64",
        FieldDescriptor.TYPE_FIXED64: "fixed64",
        FieldDescriptor.TYPE_SFIXED64: "sfixed64",
        FieldDescriptor.TYPE_SINT64: "sint64",
    }
    return f"`{names.get(field.type, 'its type')}`"


def describe(value: object) -> str:
    """A JSON value for an error message: its JSON type, and the value when short."""
    kinds = {dict: "object", list: "array", str: "str", int: "int", float: "float", bool: "bool"}
    text = repr(value)
    text = text if len(text) <= 80 else text[:80] + "..."
    kind = kinds.get(type(value))
    if kind in ("object", "array"):
        return f"`{kind}`"
    return f"`{kind}` {text}" if kind else text
