"""A bounded fuzz run of the C decoder under AddressSanitizer and UBSan.

native/fuzz_decode.c is compiled with gcc's -fsanitize=address,undefined together with
native/gravix_decode.c, then mutates valid batches (facts, events, with maps, unknown fields
and groups) for GRAVIXD_FUZZ_SECONDS (default 20) seconds, decoding each mutant as both
streams from a block of exactly its size, through the Arrow export (released whole or after
moving a column out) and as a delimited stream, whole and cut in two. Any out-of-bounds
read, use after free, undefined behaviour, leak (LeakSanitizer runs at exit, and the
decoder's count of live exports must return to 0) or broken invariant fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from native_wire import EGROUP, SGROUP, entry, item, ld, tag, varint
from opentelemetry.proto.common.v1 import common_pb2
from otlp_messages import log_record, logs_request, span, traces_request

from gravixd.proto.gravix.v1 import events_pb2

NATIVE = Path(__file__).resolve().parents[2] / "native"
SECONDS = float(os.environ.get("GRAVIXD_FUZZ_SECONDS", "20"))


def _seeds() -> list[bytes]:
    facts = [
        events_pb2.RequestFact(
            timestamp_unix_nano=1_790_000_000_000_000_000 + i, service="checkout",
            route="/users/{id}", method="GET", status_code=200 + i, duration_ms=1.25 * i,
            bytes_in=i, bytes_out=2**40 + i, trace_id=f"{i:032x}",
            attributes={"region": "eu-west-1", "pod": f"pod-{i:02d}", "é": "ü"},
        )
        for i in range(12)
    ]  # fmt: skip
    events = [
        events_pb2.ServiceEvent(
            timestamp_unix_nano=-i, service="cart", kind="deploy", severity=i % 7,  # type: ignore[arg-type]
            message="rolled out ✓", trace_id="t", attributes={"v": str(i)},
        )
        for i in range(8)
    ]  # fmt: skip
    odd = item(
        ld(2, b"svc")
        + tag(11, SGROUP) + tag(12, SGROUP) + b"\x08\x01" + tag(12, EGROUP) + tag(11, EGROUP)
        + ld(10, entry(b"k", b"v") + b"\x18\x01") + ld(10, entry(None, b"v"))
        + b"\x28" + varint(2**32 + 7) + b"\x20" + varint(-1)
    )  # fmt: skip
    # Delimited streams, as raw TCP sends them, for the stream entry point.
    delimited = b"".join(varint(f.ByteSize()) + f.SerializeToString() for f in facts)
    delimited_events = b"".join(varint(e.ByteSize()) + e.SerializeToString() for e in events)
    return [
        *_otlp_seeds(),
        delimited,
        delimited_events,
        events_pb2.RequestFactBatch(facts=facts).SerializeToString(),
        events_pb2.ServiceEventBatch(events=events).SerializeToString(),
        odd * 3,
        tag(2, SGROUP) * 40 + tag(2, EGROUP) * 40,
    ]


def _otlp_seeds() -> list[bytes]:
    """OTLP requests with every AnyValue kind, both column spellings, non-SERVER spans,
    scopes, events and links: what gx_decode_otlp_arrow maps and what it hands back."""
    values: list[dict[str, Any]] = [
        {"string_value": "GET"}, {"int_value": 200}, {"double_value": 0.25},
        {"bool_value": True}, {"bytes_value": b"\x00\xff"}, {"string_value": "201"},
        {"array_value": common_pb2.ArrayValue(values=[common_pb2.AnyValue(int_value=1)])},
        {"kvlist_value": common_pb2.KeyValueList(values=[common_pb2.KeyValue(
            key="k", value=common_pb2.AnyValue(string_value='"\x01é'))] * 2)},
    ]  # fmt: skip
    keys = ["http.route", "http.method", "http.response.status_code", "http.status_code",
            "http.request.body.size", "region", "event.name", "service.name"]  # fmt: skip
    attributes = [
        common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(**v))
        for k, v in zip(keys * 2, values * 3, strict=False)
    ]
    spans = [
        span(kind=k, attributes=dict.fromkeys(["http.route", "k"], "v"))
        for k in (2, 3, 2)  # SERVER, CLIENT, SERVER
    ]
    for s in spans:
        s.attributes.extend(attributes[:6])
        s.events.add(name="e")
        s.links.add(trace_state="t=1")
    traces = traces_request(spans)
    traces.resource_spans[0].scope_spans[0].scope.name = "lib"
    records = [log_record(body=b, severity_text=t) for b, t in [("x", "WARN"), (3, ""), (1.5, "x")]]
    for r in records:
        r.attributes.extend(attributes[5:])
    return [traces.SerializeToString(), logs_request(records).SerializeToString()]


def test_decoder_survives_fuzzing_under_asan_and_ubsan(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed (scripts/install-tools installs it)"
    harness = tmp_path / "fuzz_decode"
    subprocess.run(
        [
            gcc, "-std=c11", "-g", "-O1", "-fno-omit-frame-pointer",
            "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
            f"-I{NATIVE}", str(NATIVE / "fuzz_decode.c"), str(NATIVE / "gravix_decode.c"),
            "-o", str(harness),
        ],
        check=True,
    )  # fmt: skip
    seeds = []
    for i, body in enumerate(_seeds()):
        seeds.append(tmp_path / f"seed{i}.bin")
        seeds[-1].write_bytes(body)
    env = {
        **os.environ,
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
        "UBSAN_OPTIONS": "print_stacktrace=1",
    }
    run = subprocess.run(
        [str(harness), str(SECONDS), str(int.from_bytes(os.urandom(4))), *map(str, seeds)],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    counts = dict(zip(run.stdout.split()[::2], map(int, run.stdout.split()[1::2]), strict=True))
    rounds, ok, otlp_ok = counts["rounds"], counts["ok"], counts["otlp_ok"]
    assert rounds > 1000 and 0 < ok < 2 * rounds, run.stdout
    assert 0 < otlp_ok < 2 * rounds, run.stdout  # mutants the OTLP walker mapped itself
