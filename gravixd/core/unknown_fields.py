"""JSON keys the schema does not know (`unknown_fields`): kept in `attributes` as text, or
dropped and counted. An ingestion daemon never silently loses a field a shipper sent
(`user`, `host`, `level`...).

Sans-I/O and stateless apart from one request's count: `UnknownFields` carries the mode and
counts the keys it found (the runtime turns the count into a metric once the request is
decoded). The JSON decoders call `merge` only for a body that the known-keys decoder refused,
so a body of known keys alone pays nothing here. This module must never raise for a value:
whatever JSON a key holds has a text form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias

import msgspec

__all__ = ["UNKNOWN_FIELDS_MODES", "UnknownFields", "UnknownFieldsMode", "value_text"]

UnknownFieldsMode: TypeAlias = Literal["attributes", "ignore"]
UNKNOWN_FIELDS_MODES: Final = ("attributes", "ignore")
# Unknown keys kept per event. Shippers add a handful (host, user, level, pid; nested
# metadata is one key holding JSON); a body of thousands of tiny keys would otherwise hold
# ~15x its size in Python objects while decoding, past what max_in_flight_bytes reserves.
MAX_KEPT_PER_EVENT: Final = 32


class UnknownFields:
    """What to do with one request's unknown top-level keys, and how many it found.

    `mode` "attributes": each lands in the event's `attributes` as text (`value_text`), a
    key already in `attributes` wins; "ignore": dropped. `found` counts the keys either way
    (per event: the same key in two events is two); past MAX_KEPT_PER_EVENT in one event
    they are dropped, counted in `over_limit`.
    """

    __slots__ = ("found", "mode", "over_limit")

    def __init__(self, mode: UnknownFieldsMode = "attributes") -> None:
        self.mode = mode
        self.found = 0
        self.over_limit = 0  # of `found`: dropped beyond MAX_KEPT_PER_EVENT

    def mark(self) -> tuple[int, int]:
        """The counts now, to `restore` if the event they go on to count is rejected."""
        return self.found, self.over_limit

    def restore(self, mark: tuple[int, int] = (0, 0)) -> None:
        self.found, self.over_limit = mark

    def merge(self, item: Any, keys: Mapping[str, Any], known: frozenset[str]) -> None:
        """Move the keys of `keys` not in `known` into `item.attributes`.

        `item` is a decoded Struct (with an `attributes` field), `keys` the same object
        decoded as key -> value (a Python value, or a `msgspec.Raw`). At most
        MAX_KEPT_PER_EVENT are kept, in wire order; the rest are dropped, counted in
        `over_limit`.
        """
        unknown = [key for key in keys if key not in known]
        if not unknown:
            return
        self.found += len(unknown)
        if self.mode != "attributes":
            return
        if len(unknown) > MAX_KEPT_PER_EVENT:
            self.over_limit += len(unknown) - MAX_KEPT_PER_EVENT
            del unknown[MAX_KEPT_PER_EVENT:]
        texts = {
            key: text if (text := keys[key]).__class__ is str else value_text(text)
            for key in unknown
        }
        item.attributes = texts | item.attributes if item.attributes else texts


_ANY: Final = msgspec.json.Decoder()
_encode: Final = msgspec.json.Encoder().encode


def value_text(value: object) -> str:
    """A JSON value (decoded, or a `msgspec.Raw`) as the text stored in `attributes`, by the
    rules OTLP attribute values follow: strings as they are; integers in decimal;
    `true`/`false`; other numbers in Python's shortest round-trip form (`0.5`, `1e+100`);
    arrays and objects as compact JSON; `null` as "" (OTLP's empty value). A number no float
    holds (`1e400`, only ever a Raw) keeps its JSON text.
    """
    if not isinstance(value, msgspec.Raw):
        return _text(value, b"")
    data = bytes(value)
    if data[:1] == b'"' and b"\\" not in data:
        # A string without escapes, the usual value: its text is what is between the quotes.
        # msgspec does not check the UTF-8 of values it skips: a bad byte becomes U+FFFD
        # here rather than rejecting an event for a key the schema does not even have.
        return data[1:-1].decode("utf-8", "replace")
    try:
        decoded = _ANY.decode(data)
    except msgspec.DecodeError:
        return data.decode("utf-8", "replace").strip()
    return _text(decoded, data)


def _text(value: object, data: bytes) -> str:
    if value is None:
        return ""
    if value.__class__ is str:
        return str(value)
    if value is True or value is False:
        return "true" if value else "false"
    if value.__class__ is float:
        return repr(value) if math.isfinite(value) else data.decode("utf-8", "replace").strip()
    if value.__class__ is int:
        return str(value)
    return _encode(value).decode()
