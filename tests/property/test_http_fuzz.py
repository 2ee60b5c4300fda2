"""Fuzzing the HTTP protocol and both decoders with hypothesis.

Whatever bytes arrive: the sans-I/O protocol only ever returns its documented events (an
error response has a 4xx status and a JSON body saying what was expected), never raises; each
decoder returns a batch of exactly the stream's schema or raises `DecodeError`, nothing else;
the native C decoder and the pure `protobuf` path agree wherever both accept.
"""

from __future__ import annotations

import json
import zlib

import h11
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gravixd import native
from gravixd.core.decode import (
    as_record_batch,
    decode,
    decode_json,
    decode_ndjson,
    decode_protobuf_pure,
)
from gravixd.core.http import (
    Closed,
    ErrorResponse,
    HttpLimits,
    IngestProtocol,
    IngestRequest,
    NeedData,
    Progress,
    SendInterim,
)
from gravixd.errors import DecodeError
from gravixd.proto.gravix.v1 import events_pb2
from gravixd.schema import STREAMS

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = HttpLimits(max_body_bytes=64 * 1024, max_header_bytes=4096)
# 501: h11 for a Transfer-Encoding other than chunked (RFC 9112 says 501). 417: an Expect
# other than 100-continue; 505: a version other than HTTP/1.0 and 1.1.
ERROR_STATUSES = {400, 401, 404, 405, 408, 411, 413, 415, 417, 431, 501, 503, 505}

PROTOBUF_DECODERS = [pytest.param(decode_protobuf_pure, id="pure")]
if native.AVAILABLE:
    PROTOBUF_DECODERS.append(pytest.param(native.decode_protobuf, id="native"))


# --- the HTTP protocol ------------------------------------------------------------------------


def valid_request(body: bytes, path: bytes = b"/v1/facts", extra: bytes = b"") -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body
    )


GOOD = valid_request(b'{"service":"s"}')
CHUNKED = (
    b"POST /v1/events HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-ndjson\r\n"
    b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"ser\r\n0\r\n\r\n'
)
GZIPPED = valid_request(
    zlib.compress(b'{"service":"s"}', wbits=31), extra=b"Content-Encoding: gzip\r\n"
)
SEEDS = [GOOD, CHUNKED, GZIPPED, valid_request(b"[]", b"/v1/events", b"Expect: 100-continue\r\n")]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request (or two, pipelined) with bytes flipped, inserted, deleted or cut."""
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(SEEDS), min_size=1, max_size=3))))
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "dup"]))
        if op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "cut":
            del data[at:]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


def run_protocol(data: bytes, splits: list[int]) -> list[object]:
    """Feed `data` in pieces, then EOF; act on every event like the server does."""
    protocol = IngestProtocol(LIMITS, ["tok"] if len(data) % 5 == 0 else [])
    pieces, last = [], 0
    for cut in sorted(set(s % (len(data) + 1) for s in splits)) + [len(data)]:
        pieces.append(data[last:cut])
        last = cut
    pieces = [p for p in pieces if p] + [b""]
    events: list[object] = []
    for piece in pieces:
        protocol.receive_data(piece)
        for _ in range(1000):
            event = protocol.next_event()
            events.append(event)
            assert isinstance(
                event, NeedData | Progress | SendInterim | ErrorResponse | IngestRequest | Closed
            )
            if isinstance(event, ErrorResponse):
                assert event.status in ERROR_STATUSES, event
                response = h11.Connection(h11.CLIENT)
                response.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
                response.send(h11.EndOfMessage())
                response.receive_data(event.data)
                head = response.next_event()
                assert isinstance(head, h11.Response) and head.status_code == event.status
                body = b""
                while isinstance(part := response.next_event(), h11.Data):
                    body += part.data
                error = json.loads(body)
                assert error["status"] == event.status and error["error"].startswith("Expected")
                if event.close:
                    return events
                continue
            if isinstance(event, IngestRequest):
                assert event.stream in STREAMS
                assert len(event.body) <= LIMITS.max_body_bytes
                protocol.respond(202, {"accepted": 0})
                if protocol.must_close:
                    return events
                continue
            if isinstance(event, SendInterim | Progress):
                continue
            if isinstance(event, Closed):
                return events
            break  # NeedData
        else:
            raise AssertionError("the protocol looped without asking for data")
    return events


@FUZZ
@given(data=mutated(), splits=st.lists(st.integers(0, 10_000), max_size=6))
def test_protocol_survives_mutated_requests(data: bytes, splits: list[int]) -> None:
    run_protocol(data, splits)


@FUZZ
@given(data=st.binary(max_size=2048), splits=st.lists(st.integers(0, 10_000), max_size=4))
def test_protocol_survives_random_bytes(data: bytes, splits: list[int]) -> None:
    run_protocol(data, splits)


@given(splits=st.lists(st.integers(0, 10_000), max_size=8))
@settings(max_examples=100, deadline=None)
def test_valid_requests_parse_the_same_whatever_the_split(splits: list[int]) -> None:
    data = GOOD + GZIPPED + CHUNKED
    requests = [e for e in run_protocol(data, splits) if isinstance(e, IngestRequest)]
    assert [(r.stream, r.body) for r in requests] == [
        ("facts", b'{"service":"s"}'),
        ("facts", b'{"service":"s"}'),
        ("events", b'{"ser'),
    ]


# --- the decoders ---------------------------------------------------------------------------


def check_decoded(stream: str, call) -> pa.RecordBatch | None:
    try:
        # Small JSON requests decode to validated rows; building their batch cannot fail.
        batch = as_record_batch(stream, call())
    except DecodeError as exc:
        assert exc.reason and exc.message
        assert len(exc.message) < 2000  # bounded: never echoes a whole hostile body
        return None
    assert batch.schema.equals(STREAMS[stream]), batch.schema
    batch.validate(full=True)
    return batch


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "service",
                    "route",
                    "status_code",
                    "trace_id",
                    "attributes",
                    "severity",
                    "timestamp_unix_nano",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@FUZZ
@given(stream=st.sampled_from(sorted(STREAMS)), value=json_values)
def test_json_decoders_accept_or_explain(stream: str, value: object) -> None:
    body = json.dumps(value).encode()
    check_decoded(stream, lambda: decode_json(stream, body, 1))
    check_decoded(stream, lambda: decode_ndjson(stream, body + b"\n" + body, 1))


@FUZZ
@given(
    stream=st.sampled_from(sorted(STREAMS)),
    body=st.binary(max_size=512),
    media=st.sampled_from(["application/json", "application/x-ndjson"]),
)
def test_json_decoders_on_random_bytes(stream: str, body: bytes, media: str) -> None:
    check_decoded(stream, lambda: decode(stream, media, body, 1))


def protobuf_seed(stream: str) -> bytes:
    if stream == "facts":
        batch = events_pb2.RequestFactBatch()
        for i in range(3):
            f = batch.facts.add(
                service=f"svc{i}",
                route="/r",
                status_code=200,
                trace_id=f"t{i}",
                duration_ms=1.5,
                bytes_in=i,
                timestamp_unix_nano=10**18 + i,
            )
            f.attributes["k"] = "v"
    else:
        batch = events_pb2.ServiceEventBatch()
        for i in range(3):
            e = batch.events.add(
                service=f"svc{i}", kind="deploy", severity=2, message="m", trace_id=f"t{i}"
            )
            e.attributes["k"] = "v"
    return batch.SerializeToString()


@st.composite
def mutated_protobuf(draw: st.DrawFn) -> tuple[str, bytes]:
    stream = draw(st.sampled_from(sorted(STREAMS)))
    data = bytearray(protobuf_seed(stream))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "cut", "varint"]))
        if op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif op == "cut":
            del data[at:]
        else:  # an over-long or truncated varint
            data[at:at] = b"\xff" * draw(st.integers(1, 12))
    return stream, bytes(data)


@pytest.mark.parametrize("decoder", PROTOBUF_DECODERS)
@FUZZ
@given(case=mutated_protobuf())
def test_protobuf_decoder_on_mutated_messages(decoder, case: tuple[str, bytes]) -> None:
    stream, body = case
    check_decoded(stream, lambda: decoder(stream, body, 1))


@pytest.mark.parametrize("decoder", PROTOBUF_DECODERS)
@FUZZ
@given(stream=st.sampled_from(sorted(STREAMS)), body=st.binary(max_size=512))
def test_protobuf_decoder_on_random_bytes(decoder, stream: str, body: bytes) -> None:
    check_decoded(stream, lambda: decoder(stream, body, 1))


@pytest.mark.skipif(not native.AVAILABLE, reason="the native extension is not built")
@FUZZ
@given(case=mutated_protobuf())
def test_native_and_pure_agree_where_both_accept(case: tuple[str, bytes]) -> None:
    stream, body = case
    pure = check_decoded(stream, lambda: decode_protobuf_pure(stream, body, 1))
    fast = check_decoded(stream, lambda: native.decode_protobuf(stream, body, 1))
    if pure is not None and fast is not None:
        assert fast.equals(pure)
