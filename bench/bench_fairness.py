"""Fairness under hostile load: a good client's latency while others hold the daemon busy.

    python -m bench.bench_fairness [--requests 300] [--out bench/results/fairness.json]

One gravixd (subprocess, loopback, free ports). Four attackers stream bodies of 2-byte chunks
(h11 once turned each 256 KiB read into ~37 000 events processed without yielding) and two
clients post ~8 MiB bodies, protobuf (decoded in a worker thread; the C decoder releases the
GIL) or JSON (decoded in slices of 2048 events on the event loop). A good client sends one
event at a time on a keep-alive connection; its p50/p99/max latency is the figure. The load
runs in a process of its own, so that its threads do not hold the good client's GIL.
tests/integration/test_fairness.py runs the same load and asserts what cannot flake (every
good request served, in order, none shed); the latency is measured here, not asserted there.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from daemon import Daemon, column, read_store  # noqa: E402 - the tests' subprocess harness

from bench.bodies import encode_json, encode_protobuf, make_facts  # noqa: E402

GOOD_REQUESTS = 300
TINY_CHUNKS = b"2\r\n[]\r\n" * 37_000  # one 256 KiB read of 2-byte chunks
# Attackers reconnect after this pause when refused, big posters pause this long between
# their bodies: four attackers and two big posters, not a flood of connections or a load
# that takes the whole 2-core box (then every latency is a queue, whatever the code).
RECONNECT_PAUSE_SECONDS = 0.02
BIG_PAUSE_SECONDS = 0.25


# Content type -> (events a body, encoder): just under the 8 MiB max_body_bytes.
BIG_BODIES = {
    "application/x-protobuf": (55_000, encode_protobuf),
    "application/json": (28_500, encode_json),
}


def big_bodies(content_type: str) -> list[bytes]:
    events, encode = BIG_BODIES[content_type]
    bodies = [encode(make_facts(events, seed=seed)) for seed in (8, 9)]
    assert all(7 << 20 < len(body) < 8 << 20 for body in bodies)
    return bodies


def tiny_chunks(port: int, stop: threading.Event, outcomes: Counter[str]) -> None:
    """Streams 2-byte chunks as fast as the server reads them; reconnects when refused."""
    head = (
        b"POST /v1/facts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(head)
                while not stop.is_set():
                    sock.sendall(TINY_CHUNKS)
        except OSError as exc:
            outcomes[type(exc).__name__] += 1
            stop.wait(RECONNECT_PAUSE_SECONDS)


def big_poster(
    port: int, body: bytes, content_type: str, stop: threading.Event, outcomes: Counter[str]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while not stop.is_set():
        try:
            conn.request("POST", "/v1/facts", body, {"Content-Type": content_type})
            response = conn.getresponse()
            response.read()
            outcomes[str(response.status)] += 1
        except (OSError, http.client.HTTPException) as exc:
            outcomes[type(exc).__name__] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        stop.wait(BIG_PAUSE_SECONDS)
    conn.close()


def run_load(port: int, bodies: list[bytes], content_type: str, stop: Any, results: Any) -> None:
    """The attack, in a process of its own until `stop` is set; puts its outcomes."""
    done = threading.Event()
    outcomes: Counter[str] = Counter()
    threads = [threading.Thread(target=tiny_chunks, args=(port, done, outcomes)) for _ in range(4)]
    threads += [
        threading.Thread(target=big_poster, args=(port, body, content_type, done, outcomes))
        for body in bodies
    ]
    for t in threads:
        t.start()
    results.put("started")
    stop.wait()
    done.set()
    for t in threads:
        t.join(30)
    results.put(dict(outcomes))


@dataclass
class FairnessRun:
    content_type: str
    statuses: dict[int, int]  # the good client's answers
    answered_trace_ids: list[str]  # the good client's 202s, in the order sent
    stored_good_trace_ids: list[str]  # what the store holds of the good client, sorted
    load_outcomes: dict[str, int]  # the attackers' and big posters' outcomes
    chunks_rejected: float
    latencies_seconds: list[float]  # sorted

    def percentile_ms(self, q: float) -> float:
        return self.latencies_seconds[max(0, int(len(self.latencies_seconds) * q) - 1)] * 1000


def run(workdir: Path, content_type: str, requests: int = GOOD_REQUESTS) -> FairnessRun:
    """The good client's `requests` under the attack, against a fresh daemon in `workdir`."""
    # Room for the big bodies' decoding on every path (the pure protobuf decoder needs ~20x a
    # body): this is about latency; shedding under memory caps is test_memory_bounded's.
    with Daemon(workdir, "--log-level=info", "--max-in-flight-bytes", str(1 << 30)) as d:
        spawn = multiprocessing.get_context("spawn")
        stop, results = spawn.Event(), spawn.Queue()
        load_args = (d.http_port, big_bodies(content_type), content_type, stop, results)
        load = spawn.Process(target=run_load, args=load_args)
        load.start()
        latencies, statuses, answered = [], Counter[int](), []
        try:
            assert results.get(timeout=60) == "started"
            time.sleep(1.0)  # the attack is in full swing before measuring
            conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=60)
            for n in range(requests):
                body = json.dumps({"service": "good", "trace_id": f"good-{n}"})
                started = time.perf_counter()
                conn.request("POST", "/v1/facts", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] += 1
                if response.status == 202:
                    answered.append(f"good-{n}")
                time.sleep(0.01)
            conn.close()
        finally:
            stop.set()
            outcomes = results.get(timeout=60)
            load.join(30)
        rejected = d.metric(
            "ingestion_events_rejected_total", stream="facts", source="http",
            reason="chunks_too_small",
        )  # fmt: skip
    # The daemon has drained (SIGTERM: seal and upload everything acknowledged).
    stored = read_store(d.store_dir, "facts")
    services, trace_ids = column(stored, "service"), column(stored, "trace_id")
    good = sorted(t for s, t in zip(services, trace_ids, strict=True) if s == "good")
    return FairnessRun(
        content_type, dict(statuses), answered, good, outcomes, rejected, sorted(latencies)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=GOOD_REQUESTS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/fairness.json"))
    args = parser.parse_args()
    rows = []
    for content_type in BIG_BODIES:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(Path(tmp), content_type, args.requests)
        row = {
            "big_bodies": content_type,
            "good_requests": args.requests,
            "good_statuses": result.statuses,
            "p50_ms": round(result.percentile_ms(0.5), 1),
            "p99_ms": round(result.percentile_ms(0.99), 1),
            "max_ms": round(result.latencies_seconds[-1] * 1000, 1),
            "load_outcomes": result.load_outcomes,
        }
        print(
            f"{content_type:24} good p50 {row['p50_ms']:6.1f} ms  p99 {row['p99_ms']:6.1f} ms  "
            f"max {row['max_ms']:6.1f} ms  load {result.load_outcomes}"
        )
        rows.append(row)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
