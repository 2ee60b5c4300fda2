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

from native_wire import EGROUP, SGROUP, entry, item, ld, tag, varint

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
        delimited,
        delimited_events,
        events_pb2.RequestFactBatch(facts=facts).SerializeToString(),
        events_pb2.ServiceEventBatch(events=events).SerializeToString(),
        odd * 3,
        tag(2, SGROUP) * 40 + tag(2, EGROUP) * 40,
    ]


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
    rounds, ok = (int(w) for w in run.stdout.split()[1::2])
    assert rounds > 1000 and 0 < ok < 2 * rounds, run.stdout
