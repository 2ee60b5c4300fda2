"""Request bodies for the benchmarks: realistic request facts, encoded every way gravixd takes.

Bodies are generated once per run from a fixed seed and written to files, so that every
server (gravixd and its peers) and every load tool (wrk, `gravixd emit`) sends the very same
bytes. Nothing here may depend on gravixd's own encoders: the bodies are the contract's wire
formats (DESIGN section 1), built with msgspec / the protobuf package directly.
"""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from gravixd.proto.gravix.v1 import events_pb2

_SERVICES: Final = ("checkout", "cart", "search", "users", "payments", "inventory", "gateway")
_ROUTES: Final = (
    "/users/{id}",
    "/users/{id}/orders",
    "/cart/{id}/items",
    "/search",
    "/checkout",
    "/payments/{id}/capture",
    "/inventory/{sku}",
    "/healthz",
)
_METHODS: Final = ("GET", "GET", "GET", "POST", "PUT", "DELETE")
_STATUS: Final = (200, 200, 200, 200, 201, 204, 301, 400, 404, 500, 503)
_REGIONS: Final = ("eu-west-1", "us-east-1", "ap-south-1")

# Content types as DESIGN section 2 names them.
CONTENT_TYPES: Final = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "protobuf": "application/x-protobuf",
}


def make_facts(count: int, seed: int = 8) -> list[dict[str, Any]]:
    """`count` request facts as JSON-ready dicts (snake_case proto field names).

    Each fact has a unique trace id and 2-3 attributes, about 260 bytes as JSON, which is
    the event size PERF-NOTES measured with.
    """
    rng = random.Random(seed)
    base_ns = 1_790_000_000_000_000_000
    facts = []
    for i in range(count):
        attributes = {"region": rng.choice(_REGIONS), "pod": f"pod-{rng.randrange(64):02d}"}
        if rng.random() < 0.5:
            attributes["user_agent"] = "curl/8.5.0"
        facts.append(
            {
                "timestamp_unix_nano": base_ns + i * 1_000_003,
                "service": rng.choice(_SERVICES),
                "route": rng.choice(_ROUTES),
                "method": rng.choice(_METHODS),
                "status_code": rng.choice(_STATUS),
                "duration_ms": round(rng.lognormvariate(2.0, 1.0), 3),
                "bytes_in": rng.randrange(0, 4096),
                "bytes_out": rng.randrange(0, 65536),
                "trace_id": f"{rng.getrandbits(128):032x}",
                "attributes": attributes,
            }
        )
    return facts


def encode_json(facts: list[dict[str, Any]]) -> bytes:
    """A JSON array of facts."""
    return msgspec.json.encode(facts)


def encode_json_object(fact: dict[str, Any]) -> bytes:
    """One fact as a bare JSON object (DESIGN: JSON is one object or an array)."""
    return msgspec.json.encode(fact)


def encode_ndjson(facts: list[dict[str, Any]]) -> bytes:
    """One JSON object a line, each line ending in a newline."""
    return b"".join(msgspec.json.encode(f) + b"\n" for f in facts)


def _fact_message(fact: dict[str, Any]) -> events_pb2.RequestFact:
    return events_pb2.RequestFact(**fact)


def encode_protobuf(facts: list[dict[str, Any]]) -> bytes:
    """A serialized `RequestFactBatch`."""
    batch = events_pb2.RequestFactBatch(facts=[_fact_message(f) for f in facts])
    return batch.SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def encode_protobuf_delimited(facts: list[dict[str, Any]]) -> bytes:
    """Varint length-delimited single `RequestFact` messages, as protobuf's
    `writeDelimitedTo` writes them: the raw-TCP protobuf framing."""
    parts = []
    for fact in facts:
        payload = _fact_message(fact).SerializeToString()
        parts.append(_varint(len(payload)))
        parts.append(payload)
    return b"".join(parts)


ENCODERS: Final = {
    "json": encode_json,
    "ndjson": encode_ndjson,
    "protobuf": encode_protobuf,
}


@dataclass(frozen=True)
class Body:
    """One pre-generated request body on disk, and what it holds."""

    name: str  # e.g. "protobuf-1000-gzip"
    path: Path
    content_type: str
    content_encoding: str | None  # "gzip" or None
    events: int
    wire_bytes: int  # size of the file (what goes on the wire, compressed if gzip)
    raw_bytes: int  # size before compression


def body_name(fmt: str, events: int, gzip_on: bool) -> str:
    return f"{fmt}-{events}" + ("-gzip" if gzip_on else "")


def write_body(directory: Path, fmt: str, events: int, gzip_on: bool = False) -> Body:
    """Generate and write one HTTP body file; returns its description.

    Args:
        fmt: "json", "ndjson" or "protobuf".
        events: facts in the body.
        gzip_on: compress the body (sent with `Content-Encoding: gzip`).
    """
    facts = make_facts(events)
    # A single JSON event goes as a bare object, as a one-event emitter would send it.
    raw = encode_json_object(facts[0]) if fmt == "json" and events == 1 else ENCODERS[fmt](facts)
    # Level 6 is gzip's and most clients' default.
    wire = gzip.compress(raw, compresslevel=6, mtime=0) if gzip_on else raw
    name = body_name(fmt, events, gzip_on)
    path = directory / f"{name}.body"
    path.write_bytes(wire)
    return Body(
        name=name,
        path=path,
        content_type=CONTENT_TYPES[fmt],
        content_encoding="gzip" if gzip_on else None,
        events=events,
        wire_bytes=len(wire),
        raw_bytes=len(raw),
    )


def tcp_stream(framing: str, events: int) -> bytes:
    """A block of raw-TCP input holding `events` facts in the given framing
    ("ndjson" or "protobuf"); a load generator sends it over and over."""
    facts = make_facts(events)
    if framing == "ndjson":
        return encode_ndjson(facts)
    if framing == "protobuf":
        return encode_protobuf_delimited(facts)
    raise ValueError(f"Expected framing `ndjson` or `protobuf`, got `{framing}`")
