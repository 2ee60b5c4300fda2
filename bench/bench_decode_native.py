"""Decode-only throughput of the protobuf paths: native C (gravixd.native) vs pure (upb).

    python -m bench.bench_decode_native [--seconds 3] [--json out.json]

For the bench bodies (bench/bodies.py: realistic request facts, ~145 bytes each with 2-3
attributes) at 1000 and 10000 events a body, it reports events/s and MB/s of body bytes for
both paths, their ratio, the raw-TCP case (delimited RequestFact frames in 256 KiB reads,
through ProtobufFramer + the batch decoder, and through the C stream entry point), and
whether decoding in worker threads pays: the C call
releases the GIL, so two threads should approach twice one thread's rate on two cores, and a
busy event loop should keep running while a worker thread decodes (it does; but the worker
then waits for the GIL to wrap the buffers, up to the 5 ms switch interval each time).

Nothing here tunes the figures; each is the best of `--repeat` timed loops of `--seconds`.
`measure(events, seconds)` is what the bench harness may call.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import bodies
from gravixd import native
from gravixd.core.decode import decode_protobuf_pure
from gravixd.core.frame_decode import PythonFrameDecoder
from gravixd.runtime.tcp_server import RECEIVE_BYTES

NOW_NS = 1_800_000_000_000_000_000


def _loop(fn: Callable[[], Any], seconds: float) -> tuple[float, float]:
    """(calls per second of wall time, CPU seconds of this thread per call) of `fn` over
    about `seconds`. The CPU figure is what a busy shared box does not blur: a loop that
    waits for the core counts its wall time but not its CPU time."""
    fn()
    calls, t0, c0 = 0, time.perf_counter(), time.thread_time()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        fn()
        calls += 1
    return calls / (time.perf_counter() - t0), (time.thread_time() - c0) / max(calls, 1)


def _best(fn: Callable[[], Any], seconds: float, repeat: int) -> tuple[float, float]:
    """The best rate and the least CPU per call of `repeat` loops."""
    runs = [_loop(fn, seconds) for _ in range(repeat)]
    return max(rate for rate, _ in runs), min(cpu for _, cpu in runs)


def _threads_rate(fn: Callable[[], Any], threads: int, seconds: float) -> float:
    """Total calls per second of `threads` threads calling `fn` back to back."""
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    deadline = 0.0

    def worker(i: int) -> None:
        start.wait()
        while time.perf_counter() < deadline:
            fn()
            counts[i] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    start.wait()
    for t in pool:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def _offload_rate(fn: Callable[[], Any], seconds: float) -> float:
    """One call at a time, each handed to a worker thread and awaited (trio.to_thread style)."""
    with ThreadPoolExecutor(1) as pool:
        return _loop(lambda: pool.submit(fn).result(), seconds)[0]


def _busy_loop_share(fn: Callable[[], Any], seconds: float) -> tuple[float, float]:
    """A worker thread calls `fn` back to back while this thread runs a Python loop, as a
    busy event loop would. Returns (worker calls/s, this loop's speed relative to alone)."""

    def spin() -> float:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            count += 1
        return count / seconds

    alone = spin()
    stop, calls = threading.Event(), [0]

    def work() -> None:
        while not stop.is_set():
            fn()
            calls[0] += 1

    worker = threading.Thread(target=work)
    worker.start()
    t0 = time.perf_counter()
    shared = spin()
    stop.set()
    worker.join()
    return calls[0] / (time.perf_counter() - t0), shared / alone


def measure(events: int, seconds: float = 3.0, repeat: int = 3) -> dict[str, Any]:
    """Decode-only figures for one body size; native figures only when the extension is built."""
    facts = bodies.make_facts(events)
    body = bodies.encode_protobuf(facts)
    frames = bodies.encode_protobuf_delimited(facts)
    out: dict[str, Any] = {"events": events, "body_bytes": len(body), "native": native.AVAILABLE}

    def figures(rate: float, cpu_seconds_per_call: float | None = None) -> dict[str, float]:
        out = {
            "events_per_second": round(rate * events),
            "mb_per_second": round(rate * len(body) / 1e6, 1),
        }
        if cpu_seconds_per_call is not None:
            out["cpu_us_per_event"] = round(cpu_seconds_per_call / events * 1e6, 4)
        return out

    pure = lambda: decode_protobuf_pure("facts", body, NOW_NS)  # noqa: E731
    out["pure"] = figures(*_best(pure, seconds, repeat))
    if not native.AVAILABLE:
        return out
    fast = lambda: native.decode_protobuf("facts", body, NOW_NS)  # noqa: E731
    assert fast().equals(pure())
    out["native"] = figures(*_best(fast, seconds, repeat))
    out["ratio_native_to_pure"] = round(
        out["native"]["events_per_second"] / out["pure"]["events_per_second"], 1
    )

    # Raw TCP: the same events as delimited frames, fed as the reader gets them (256 KiB
    # reads), through ProtobufFramer + one batch decode per read (the pure path's way, and
    # the native path's before the stream entry point) and through the C stream entry.
    reads = [frames[i : i + RECEIVE_BYTES] for i in range(0, len(frames), RECEIVE_BYTES)]

    def tcp(open_decoder: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> None:
            decoder, rows = open_decoder(), 0  # one connection
            for read in reads:
                rows += sum(b.num_rows for b in decoder.feed(read, NOW_NS).batches)
            assert rows == events

        return run

    def framer_native() -> Any:
        return PythonFrameDecoder(native.decode_protobuf, "facts", 1 << 20)

    def stream_native() -> Any:
        return native.NativeFrameDecoder("facts", 1 << 20)

    out["native_tcp_python_framer"] = figures(*_best(tcp(framer_native), seconds, repeat))
    out["native_tcp_stream_entry"] = figures(*_best(tcp(stream_native), seconds, repeat))
    out["native_2_threads"] = figures(_threads_rate(fast, 2, seconds))
    out["native_offloaded_1_thread"] = figures(_offload_rate(fast, seconds))
    rate, loop_share = _busy_loop_share(fast, seconds)
    out["native_in_worker_while_loop_busy"] = figures(rate)
    out["busy_loop_speed_while_worker_decodes"] = round(loop_share, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--events", type=int, nargs="+", default=[1, 1000, 10000])
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    results = [measure(n, args.seconds, args.repeat) for n in args.events]
    for r in results:
        per_event = r["body_bytes"] / r["events"]
        print(f"{r['events']} events/body, {r['body_bytes']} bytes ({per_event:.0f} B/event)")
        for key, value in r.items():
            if isinstance(value, dict):
                rate, mb = value["events_per_second"] / 1e6, value["mb_per_second"]
                cpu = value.get("cpu_us_per_event")
                cpu_text = f" {cpu:7.3f} CPU us/event" if cpu is not None else ""
                print(f"  {key:34} {rate:6.2f}M events/s {mb:8.1f} MB/s{cpu_text}")
        if "busy_loop_speed_while_worker_decodes" in r:
            share = r["busy_loop_speed_while_worker_decodes"]
            print(f"  busy main loop keeps {share:.0%} of its speed while a worker decodes")
        if "ratio_native_to_pure" in r:
            print(f"  native / pure: {r['ratio_native_to_pure']}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "command": " ".join(["python -m bench.bench_decode_native", *sys.argv[1:]]),
                    "results": results,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
