"""JSON decode, stage by stage: where the CPU goes from request bytes to an Arrow batch.

    python -m bench.bench_decode_json [--seconds 1.5] [--repeat 3] [--json out.json]

For the bench bodies (bench/bodies.py: request facts of ~260 bytes as JSON with 2-3
attributes, and service events alike) at 1000 events a body, it reports for each stage the
events/s and the CPU microseconds per event (process time, so another process on the box
costs the figure little):

- `parse`: msgspec, bytes -> validated Structs (`Decoder.decode` / `decode_lines`);
- `columns`: Structs -> the stored RecordBatch (`_to_batch`: conversions, defaults, the
  receipt time, severity names, the attributes map sorted by key);
- `decode_json` / `decode_ndjson`: the whole of both, as the HTTP server calls it;
- `json in slices` / `ndjson in slices`: `decode_in_slices`, what the server runs for a body
  of 512 KiB and more (the array split into `msgspec.Raw` items first, then slices of 2048
  events; other connections are served between them); `--events 28500` is an 8 MiB body;
- `small`: a one-event request (`decode_json`, which validates it into `Rows`) and then one
  group commit of 64 such requests turned into a batch (`rows_to_batch`), per event;
- `syslog-shaped ndjson` (events, `--shipper`): what syslog-ng's `format-json` sends, an RFC
  3339 `timestamp` with an offset and a syslog severity name in every event (the JSON
  conveniences of DESIGN section 2; a decoder without them rejects these bodies).

`--module` points at another copy of gravixd's decode module (a checkout of an older commit
on PYTHONPATH), to measure before and after on the same box in one sitting. Each figure is
the best of `--repeat` loops of `--seconds`; nothing here is tuned to a target.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from bench import bodies

NOW_NS = 1_800_000_000_000_000_000
_KINDS = ("deploy", "restart", "error", "config", "scale")
_SEVERITIES = ("DEBUG", "INFO", "INFO", "INFO", "WARN", "ERROR")


def make_events(count: int, seed: int = 9) -> list[dict[str, Any]]:
    """Service events like the bench facts: ~250 bytes as JSON, 2-3 attributes."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        attributes = {"region": rng.choice(("eu-west-1", "us-east-1")), "pod": f"pod-{i % 64}"}
        if rng.random() < 0.5:
            attributes["version"] = f"v1.{rng.randrange(40)}"
        events.append(
            {
                "timestamp_unix_nano": 1_790_000_000_000_000_000 + i * 1_000_003,
                "service": rng.choice(("checkout", "cart", "search", "users")),
                "kind": rng.choice(_KINDS),
                "severity": rng.choice(_SEVERITIES),
                "message": f"rolled out build {rng.randrange(10**6)} to {rng.randrange(9)} pods",
                "trace_id": f"{rng.getrandbits(128):032x}",
                "attributes": attributes,
            }
        )
    return events


def make_syslog_events(count: int) -> list[dict[str, Any]]:
    """Events as syslog-ng's format-json writes them (docs/shippers.md)."""
    names = ("warning", "err", "notice", "info", "crit", "debug")
    return [
        {
            "service": "sshd",
            "kind": "syslog",
            "severity": names[i % len(names)],
            "timestamp": f"2026-12-01T07:40:{i % 60:02d}.{i:06d}+02:00",
            "message": "Accepted publickey for deploy from 10.0.0.1 port 52214 ssh2",
            "attributes": {"host": f"web-{i % 8}", "facility": "auth"},
        }
        for i in range(count)
    ]


def _cpu_seconds_per_call(fn: Callable[[], Any], seconds: float, repeat: int) -> float:
    best = float("inf")
    fn()
    for _ in range(repeat):
        calls, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
        while time.perf_counter() - wall0 < seconds:
            fn()
            calls += 1
        best = min(best, (time.process_time() - cpu0) / calls)
    return best


def _drive(decode_in_slices: Any, stream: str, media_type: str, body: bytes) -> Any:
    steps = decode_in_slices(stream, media_type, body, NOW_NS)
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


def measure(
    stream: str, events: int, seconds: float, repeat: int, module: str, shipper: bool = False
) -> dict[str, dict[str, float]]:
    d = importlib.import_module(module)
    items = bodies.make_facts(events) if stream == "facts" else make_events(events)
    body = msgspec.json.encode(items)
    lines = b"\n".join(msgspec.json.encode(i) for i in items) + b"\n"
    one = msgspec.json.encode(items[0])
    decoder = d._BODY_DECODERS[stream]

    def columns() -> Any:
        # _to_batch normalizes the structs it is given in place when it must (severity
        # names): give it fresh ones each time, and time the parse separately.
        return d._to_batch(stream, decoder.decode(body), NOW_NS, "$[{}]")

    def small() -> Any:
        rows = [d.decode_json(stream, one, NOW_NS) for _ in range(64)]
        return d.rows_to_batch(stream, rows)

    per_call = {
        "parse": (_cpu_seconds_per_call(lambda: decoder.decode(body), seconds, repeat), events),
        "parse+columns": (_cpu_seconds_per_call(columns, seconds, repeat), events),
        "decode_json": (
            _cpu_seconds_per_call(lambda: d.decode_json(stream, body, NOW_NS), seconds, repeat),
            events,
        ),
        "decode_ndjson": (
            _cpu_seconds_per_call(lambda: d.decode_ndjson(stream, lines, NOW_NS), seconds, repeat),
            events,
        ),
        "small (1-event requests, 64 a commit)": (
            _cpu_seconds_per_call(small, seconds, repeat),
            64,
        ),
    }
    if hasattr(d, "decode_in_slices"):  # not in a checkout from before it
        for name, media_type, data in [
            ("json in slices", "application/json", body),
            ("ndjson in slices", "application/x-ndjson", lines),
        ]:
            sliced = functools.partial(_drive, d.decode_in_slices, stream, media_type, data)
            per_call[name] = (_cpu_seconds_per_call(sliced, seconds, repeat), events)
    if shipper and stream == "events":
        syslog = b"\n".join(msgspec.json.encode(e) for e in make_syslog_events(events))
        per_call["syslog-shaped ndjson"] = (
            _cpu_seconds_per_call(lambda: d.decode_ndjson(stream, syslog, NOW_NS), seconds, repeat),
            events,
        )
    out = {
        name: {"events_per_second": round(n / s), "cpu_us_per_event": round(s / n * 1e6, 3)}
        for name, (s, n) in per_call.items()
    }
    # What parse+columns took beyond the parse (never quite 0, even when noise says so).
    columns = max(per_call["parse+columns"][0] - per_call["parse"][0], 1e-9)
    out["columns"] = {
        "events_per_second": round(events / columns),
        "cpu_us_per_event": round(columns / events * 1e6, 3),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--module", default="gravixd.core.decode")
    parser.add_argument("--shipper", action="store_true", help="also the syslog-shaped case")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    results = {
        stream: measure(stream, args.events, args.seconds, args.repeat, args.module, args.shipper)
        for stream in ("facts", "events")
    }
    for stream, stages in results.items():
        print(f"{stream}, {args.events} events a body")
        for name, figures in stages.items():
            rate, cpu = figures["events_per_second"] / 1e6, figures["cpu_us_per_event"]
            print(f"  {name:40} {rate:6.2f}M events/s {cpu:7.3f} CPU µs/event")
    if args.json:
        with open(args.json, "w") as f:
            command = " ".join(["python -m bench.bench_decode_json", *sys.argv[1:]])
            json.dump({"command": command, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
