"""A big JSON or NDJSON body decoded in slices (so the event loop serves others between
them) gives exactly what the one-shot decode gives: the same batch, or the same error with
the same path, index and line number; with `?invalid=skip` the same partial acceptance."""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import STREAM_EVENTS

from gravixd.core.decode import (
    DecodeSteps,
    Partial,
    as_record_batch,
    decode,
    decode_in_slices,
    decode_valid,
    valid_after_error,
)
from gravixd.core.unknown_fields import UNKNOWN_FIELDS_MODES, UnknownFields, UnknownFieldsMode
from gravixd.errors import DecodeError

RECEIVED_NS = 1_764_000_000_000_000_000
BAD_TEXT = "@@bad-text@@"  # replaced in the body's bytes by invalid UTF-8 or a lone surrogate

# What an event may carry beyond the plain valid form: conveniences that are valid (names,
# RFC 3339, decimal strings, nulls) and mistakes at each stage (msgspec's types and bounds,
# `_normalize`'s conversions, bytes that are not text).
DAMAGE: dict[str, list[dict[str, Any] | None]] = {
    "facts": [
        {"bytes_in": "12"}, {"route": None}, {"timestamp": "2026-01-02T03:04:05.5+01:00",
        "timestamp_unix_nano": 0}, {"status_code": 1000}, {"service": ""},
        {"bytes_out": "1_000"}, {"timestamp": "yesterday"}, {"timestamp_unix_nano": 5},
        {"timestamp": "2026-01-02T03:04:05Z", "timestamp_unix_nano": 10**18},
        {"route": BAD_TEXT}, None,
    ],
    "events": [
        {"severity": "warning"}, {"severity": None}, {"message": None},
        {"timestamp": "2026-01-02T03:04:05Z", "timestamp_unix_nano": 0},
        {"severity": "loud"}, {"severity": -1}, {"service": 7}, {"timestamp": 12},
        {"message": BAD_TEXT}, None,
    ],
}  # fmt: skip
# Keys the schema does not know, as shippers add them: kept in `attributes` as text (a key
# already there wins), or dropped and counted.
EXTRA: list[dict[str, Any]] = [
    {"user": "bob"}, {"host": "web-1", "level": 3}, {"pid": 12.5, "ok": True, "n": None},
    {"ctx": [1, {"a": None}], "attributes": {"ctx": "mine"}}, {"tags": {"k": "v"}},
]  # fmt: skip


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, str, bytes]:
    stream = draw(st.sampled_from(["facts", "events"]))
    items: list[Any] = draw(st.lists(STREAM_EVENTS[stream], min_size=0, max_size=70))
    for _ in range(draw(st.integers(0, 3))):
        if items:
            index = draw(st.integers(0, len(items) - 1))
            damage = draw(st.sampled_from(DAMAGE[stream]))
            if damage is None:
                items[index] = 3  # not an object
            elif isinstance(items[index], dict):
                items[index] = {**items[index], **damage}
    for _ in range(draw(st.integers(0, 3))):
        if items:
            index = draw(st.integers(0, len(items) - 1))
            if isinstance(items[index], dict):
                extra = draw(st.sampled_from(EXTRA))
                attributes = {
                    **(items[index].get("attributes") or {}),
                    **extra.get("attributes", {}),
                }
                items[index] = {**items[index], **extra, "attributes": attributes}
    bad_text = draw(st.sampled_from([b"\xff", b"\\ud800", b"fine"]))
    if draw(st.booleans()):
        body = msgspec.json.encode(items)
        return stream, "application/json", body.replace(BAD_TEXT.encode(), bad_text)
    lines = [msgspec.json.encode(i) for i in items]
    for _ in range(draw(st.integers(0, 2))):  # blank lines move the line numbers
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from([b"", b"  \r"])))
    body = b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"]))
    # Older Fluent Bit sends its json_lines as application/json: read as NDJSON too.
    media_type = draw(st.sampled_from(["application/x-ndjson", "application/json"]))
    return stream, media_type, body.replace(BAD_TEXT.encode(), bad_text)


def run(steps: DecodeSteps) -> Any:
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


def outcome(stream: str, decode_once: Any, unknown: UnknownFields | None = None) -> tuple[Any, ...]:
    """What a decode gave; with `unknown`, the unknown keys it counted too."""
    try:
        result = decode_once()
    except DecodeError as exc:
        return ("rejected", exc.message, exc.reason)
    found = unknown.mark() if unknown is not None else None
    if isinstance(result, Partial):
        batch = as_record_batch(stream, result.decoded)
        return ("partial", batch, result.rejected, result.errors, found)
    return ("accepted", as_record_batch(stream, result), found)


def sliced_valid(
    stream: str, media_type: str, body: bytes, slice_rows: int, unknown: UnknownFields
) -> Partial:
    """What the runtime does with `?invalid=skip`: slices, then the slow path on an error
    (which counts unknown keys afresh, over the valid events)."""
    steps = decode_in_slices(stream, media_type, body, RECEIVED_NS, slice_rows, unknown=unknown)
    try:
        return Partial(run(steps))
    except DecodeError as first:
        unknown.restore()
        return valid_after_error(
            stream, media_type, body, RECEIVED_NS, None, first, unknown=unknown
        )


@settings(max_examples=400, deadline=None)
@given(body=bodies(), slice_rows=st.integers(1, 40), mode=st.sampled_from(UNKNOWN_FIELDS_MODES))
def test_sliced_decode_equals_one_shot(
    body: tuple[str, str, bytes], slice_rows: int, mode: UnknownFieldsMode
) -> None:
    stream, media_type, data = body
    one, sliced = UnknownFields(mode), UnknownFields(mode)
    once = outcome(stream, lambda: decode(stream, media_type, data, RECEIVED_NS, unknown=one), one)
    steps = decode_in_slices(stream, media_type, data, RECEIVED_NS, slice_rows, unknown=sliced)
    assert outcome(stream, lambda: run(steps), sliced) == once


@settings(max_examples=200, deadline=None)
@given(body=bodies(), slice_rows=st.integers(1, 40), mode=st.sampled_from(UNKNOWN_FIELDS_MODES))
def test_sliced_partial_acceptance_equals_one_shot(
    body: tuple[str, str, bytes], slice_rows: int, mode: UnknownFieldsMode
) -> None:
    stream, media_type, data = body
    one, sliced = UnknownFields(mode), UnknownFields(mode)
    once = outcome(
        stream, lambda: decode_valid(stream, media_type, data, RECEIVED_NS, unknown=one), one
    )
    in_slices = outcome(
        stream, lambda: sliced_valid(stream, media_type, data, slice_rows, sliced), sliced
    )
    assert in_slices == once


@settings(max_examples=200, deadline=None)
@given(body=bodies())
def test_unknown_keys_are_kept_as_text_or_dropped_and_counted(
    body: tuple[str, str, bytes],
) -> None:
    """`attributes` mode stores each unknown key (the event's own attribute of that name
    wins); `ignore` stores what a body without them stores; both count the same keys."""
    stream, media_type, data = body
    kept, ignored = UnknownFields("attributes"), UnknownFields("ignore")
    with_keys = outcome(
        stream, lambda: decode(stream, media_type, data, RECEIVED_NS, unknown=kept), kept
    )
    without = outcome(
        stream, lambda: decode(stream, media_type, data, RECEIVED_NS, unknown=ignored), ignored
    )
    if with_keys[0] == "rejected":
        assert without == with_keys
        return
    assert kept.found == ignored.found
    batch, bare = with_keys[1], without[1]
    assert batch.drop_columns(["attributes"]) == bare.drop_columns(["attributes"])
    stored = batch.column("attributes").to_pylist()
    for mine, theirs in zip(stored, bare.column("attributes").to_pylist(), strict=True):
        assert set(theirs) <= set(mine)
        assert all(dict(mine)[key] == value for key, value in theirs)  # attributes win
    bare_maps = bare.column("attributes").to_pylist()
    added = sum(len(m) - len(t) for m, t in zip(stored, bare_maps, strict=True))
    assert added <= kept.found  # an unknown key named like an attribute adds nothing


def test_a_big_body_is_decoded_in_many_steps() -> None:
    """Counted, not timed: 10 000 events at 2048 a slice leave the loop free ~10 times."""
    items = [{"service": "s", "status_code": 200, "trace_id": str(i)} for i in range(10_000)]
    for media_type, body in [
        ("application/json", msgspec.json.encode(items)),
        ("application/x-ndjson", b"\n".join(msgspec.json.encode(i) for i in items)),
    ]:
        steps = decode_in_slices("facts", media_type, body, RECEIVED_NS)
        count = 0
        try:
            while True:
                next(steps)
                count += 1
        except StopIteration as done:
            assert done.value.num_rows == 10_000
        assert count >= 9, media_type


def test_an_error_in_a_later_slice_names_its_index_in_the_body() -> None:
    items: list[dict[str, Any]] = [{"service": "s"} for _ in range(5000)]
    items[4321]["status_code"] = 1000
    body = msgspec.json.encode(items)
    try:
        run(decode_in_slices("facts", "application/json", body, RECEIVED_NS, 1000))
    except DecodeError as exc:
        assert exc.message == "Expected `int` <= 999 - at `$[4321].status_code`"
    else:
        raise AssertionError("accepted")


def test_partial_acceptance_of_a_big_body_keeps_exactly_the_valid_events() -> None:
    """The slow path builds its columns 2048 events at a time: the same batch as the valid
    events decoded alone."""
    items: list[dict[str, Any]] = [
        {
            "service": "s",
            "severity": "warning",
            "trace_id": str(i),
            "attributes": {"b": "1", "a": "2"},
        }
        for i in range(5000)
    ]
    bad = [*items[:100], {"service": ""}, *items[100:4900], {"severity": "loud"}, *items[4900:]]
    valid = decode("events", "application/json", msgspec.json.encode(items), RECEIVED_NS)
    for media_type, body in [
        ("application/json", msgspec.json.encode(bad)),
        ("application/x-ndjson", b"\n".join(msgspec.json.encode(i) for i in bad)),
    ]:
        partial = decode_valid("events", media_type, body, RECEIVED_NS)
        assert partial.rejected == 2
        assert as_record_batch("events", partial.decoded).equals(valid), media_type


@settings(max_examples=300, deadline=None)
@given(body=bodies())
def test_objects_one_a_line_as_application_json_are_read_as_ndjson(
    body: tuple[str, str, bytes],
) -> None:
    """What Fluent Bit before 3.0 sends (`json_lines`, labelled application/json) is stored,
    or refused with the line named, exactly as the same body labelled NDJSON."""
    stream, _, data = body
    lines = [line for line in data.split(b"\n") if line.strip()]
    # Objects one a line: the first two lines look like objects (a body whose second line
    # is `3` is a JSON body with trailing data, and says so).
    assume(len(lines) >= 2 and all(line.lstrip().startswith(b"{") for line in lines[:2]))
    assume(lines[0].rstrip().endswith(b"}"))
    for decode_once in (decode, decode_valid):
        as_json = outcome(
            stream, partial(decode_once, stream, "application/json", data, RECEIVED_NS)
        )
        as_ndjson = partial(decode_once, stream, "application/x-ndjson", data, RECEIVED_NS)
        assert as_json == outcome(stream, as_ndjson)
