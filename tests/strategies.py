"""Hypothesis strategies for valid events of both streams, as plain dicts (JSON shape)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from gravixd.schema import MAX_INT64

# Any Unicode text protobuf can carry (no lone surrogates).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
service = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)
attributes = st.dictionaries(text, text, max_size=4)
# 0 is "time of receipt"; JSON refuses a non-zero time below 10^17 ns as a unit mistake.
timestamp = st.one_of(st.just(0), st.integers(10**17, MAX_INT64))


def _drop_defaults(event: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k == "service" or v != defaults.get(k)}


facts = st.fixed_dictionaries(
    {
        "timestamp_unix_nano": timestamp,
        "service": service,
        "route": text,
        "method": st.sampled_from(["GET", "POST", "PUT", "DELETE", ""]),
        "status_code": st.integers(0, 999),
        "duration_ms": st.floats(allow_nan=False, allow_infinity=False),
        "bytes_in": st.integers(0, MAX_INT64),
        "bytes_out": st.integers(0, MAX_INT64),
        "trace_id": text,
        "attributes": attributes,
    }
)

events = st.fixed_dictionaries(
    {
        "timestamp_unix_nano": timestamp,
        "service": service,
        "kind": text,
        "severity": st.integers(0, 5),
        "message": text,
        "trace_id": text,
        "attributes": attributes,
    }
)

STREAM_EVENTS = {"facts": facts, "events": events}


def batches(stream: str, max_size: int = 20) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(STREAM_EVENTS[stream], min_size=1, max_size=max_size)


def to_protobuf(stream: str, items: list[dict[str, Any]]) -> bytes:
    from gravixd.proto.gravix.v1 import events_pb2 as pb

    if stream == "facts":
        return pb.RequestFactBatch(facts=[pb.RequestFact(**i) for i in items]).SerializeToString()
    return pb.ServiceEventBatch(events=[pb.ServiceEvent(**i) for i in items]).SerializeToString()
