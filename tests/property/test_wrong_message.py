"""A protobuf body that is another message than the endpoint's batch is a 400 that says
which field and which message it probably is, never `202 {"accepted": 0}` nor events
stored from the wrong message; the C decoder and the pure path say exactly the same."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import STREAM_EVENTS, to_protobuf

from gravixd import native
from gravixd.core.decode import decode, decode_protobuf_pure, decode_valid
from gravixd.errors import DecodeError
from gravixd.proto.gravix.v1 import events_pb2

NOW = 1_764_000_000_000_000_000
DECODERS = [pytest.param(decode_protobuf_pure, id="pure")]
if native.AVAILABLE:
    DECODERS.append(pytest.param(native.decode_protobuf, id="native"))
PB = "application/x-protobuf"
OTHER = {"facts": "events", "events": "facts"}


def refusal(stream: str, body: bytes, decoder: Any) -> tuple[str, str] | int:
    """(reason, message) of the 400, or the rows stored."""
    try:
        return decode(stream, PB, body, NOW, decoder).num_rows
    except DecodeError as exc:
        return exc.reason, exc.message


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    ("stream", "message", "says"),
    [
        (
            "facts",
            events_pb2.RequestFact(service="checkout", route="/pay", status_code=201),
            "holding none - at `$`: probably a single `gravix.v1.RequestFact`",
        ),
        (
            "facts",
            events_pb2.RequestFact(timestamp_unix_nano=10**18, service="checkout"),
            "Expected field 1 (`facts`) of `gravix.v1.RequestFactBatch` as a length-delimited "
            "value (a `RequestFact`), got a varint - at `$`: probably a single",
        ),
        (
            "events",
            events_pb2.RequestFactBatch(
                facts=[events_pb2.RequestFact(service="a", method="GET", status_code=200)]
            ),
            "Expected field 4 (`severity`) of `gravix.v1.ServiceEvent` as a varint, got a "
            "length-delimited value - at `$.events[0].severity`: probably a "
            "`gravix.v1.RequestFactBatch`; post it to /v1/facts",
        ),
        (
            "facts",
            events_pb2.ServiceEventBatch(
                events=[events_pb2.ServiceEvent(service="a", severity=4, message="boom")]
            ),
            "Expected field 4 (`method`) of `gravix.v1.RequestFact` as a length-delimited "
            "value, got a varint - at `$.facts[0].method`: probably a "
            "`gravix.v1.ServiceEventBatch`; post it to /v1/events",
        ),
    ],
    ids=["lone fact", "lone fact with a time", "facts as events", "events as facts"],
)
def test_another_message_is_a_400_naming_the_field_and_the_message(
    decoder: Any, stream: str, message: Any, says: str
) -> None:
    body = message.SerializeToString()
    reason, text = refusal(stream, body, decoder)  # type: ignore[misc]
    assert reason == "wrong_message"
    assert says in text
    # ?invalid=skip does not turn it into a partial 202: the whole body is the mistake.
    with pytest.raises(DecodeError):
        decode_valid(stream, PB, body, NOW, decoder)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), stream=st.sampled_from(["facts", "events"]))
def test_a_batch_posted_to_the_other_stream_is_refused_alike_by_both_decoders(
    data: st.DataObject, stream: str
) -> None:
    """Every batch of one stream posted to the other: refused with the same answer by the C
    decoder and the pure path, unless its entries only use fields both messages type
    alike (timestamp, service, and a string field 3), which then decode the same."""
    items = data.draw(st.lists(STREAM_EVENTS[stream], min_size=1, max_size=8))
    body = to_protobuf(stream, items)
    other = OTHER[stream]
    pure = refusal(other, body, decode_protobuf_pure)
    if native.AVAILABLE:
        assert refusal(other, body, native.decode_protobuf) == pure
    shared = {"timestamp_unix_nano", "service", "route", "kind"}
    if any(set(k for k, v in item.items() if v) - shared for item in items):
        assert isinstance(pure, tuple) and pure[0] == "wrong_message", pure


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_raw_tcp_frame_of_another_message_is_skipped_and_the_stream_goes_on(
    decoder: Any,
) -> None:
    """A `ServiceEvent` frame on a facts listener is skipped as `wrong_message` (its length
    prefix was right, so the framing holds); the fact after it is kept."""
    from gravixd.core.framing import encode_varint

    event = events_pb2.ServiceEvent(service="a", severity=4, message="boom").SerializeToString()
    fact = events_pb2.RequestFact(service="a", method="GET").SerializeToString()
    data = encode_varint(len(event)) + event + encode_varint(len(fact)) + fact
    frames = native.open_frame_decoder(decoder, "facts", 1 << 20)
    out = frames.feed(data, NOW)
    assert out.error is None
    assert sum(batch.num_rows for batch in out.batches) == 1
    (rejected,) = out.rejected
    assert rejected.reason == "wrong_message" and rejected.byte_offset == 0
    assert "probably a `gravix.v1.ServiceEventBatch`" in rejected.message
