"""Peak memory under overload: offered load far above what the daemon can take, for a fixed time.

    python -m bench.bench_overload [--seconds 10] [--clients 48] [--stallers 64]
                                   [--gzip-clients 64] [--gzip-inflated-mib 7.5]
                                   [--body-mib 1] [--out bench/results/overload.json]

One gravixd (subprocess, loopback, free ports) with caps set to
`--max-in-flight-bytes 32MiB --max-in-flight-requests 64 --max-connections 256`. Load:
`clients` threads post 1 MiB JSON batches back to back on keep-alive connections, while
`stallers` connections each send half of a 1 MiB body and stall (holding in-flight bytes),
reconnecting when shed, and `gzip_clients` threads post gzip bodies of ~8 KB that inflate to
7.5 MiB of small identical events (the issue 11 finding: memory counted on the wire only
reached 2.7 GiB). The daemon's VmHWM (peak RSS) is read from /proc before and after; the
point is that it stays near (baseline + the in-flight byte cap), not the offered load.
"""

from __future__ import annotations

import argparse
import gzip
import json
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from daemon import Daemon, vm_kib  # noqa: E402 - the tests' subprocess harness

IN_FLIGHT_BYTES_CAP = "32MiB"


def make_body(target_bytes: int) -> bytes:
    item = (
        b'{"service":"overload","route":"/api/v1/items/{id}","status_code":200,"trace_id":"%08d"}'
    )
    items, size = [], 2
    while size < target_bytes:
        items.append(item % len(items))
        size += len(items[-1]) + 1
    return b"[" + b",".join(items) + b"]"


def make_gzip_body(inflated_bytes: int) -> bytes:
    item = b'{"service":"overload","route":"/api/v1/items/{id}","status_code":200}'
    count = inflated_bytes // (len(item) + 1)
    return gzip.compress(b"[" + b",".join([item] * count) + b"]", 9)


def request_head(length: int, extra: bytes = b"") -> bytes:
    return (
        b"POST /v1/facts HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n" % (length, extra)
    )


def read_status(sock: socket.socket) -> int | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(head.split()[1])


def blaster(port: int, request: bytes, stop: threading.Event, counts: Counter) -> None:
    sock = None
    while not stop.is_set():
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            status = read_status(sock)
            counts[status if status is not None else "closed"] += 1
            if status is None or status == 503:
                sock.close()
                sock = None
        except OSError:
            counts["error"] += 1
            if sock is not None:
                sock.close()
            sock = None
            time.sleep(0.01)
    if sock is not None:
        sock.close()


def staller(port: int, request: bytes, stop: threading.Event, counts: Counter) -> None:
    half = request[: len(request) // 2]
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(half)
                status = read_status(sock)  # a 503 (shed) or a 408 after the request timeout
                counts[f"staller {status}"] += 1
        except OSError:
            counts["staller closed"] += 1
            time.sleep(0.05)


def run(
    seconds: float,
    clients: int,
    stallers: int,
    body_mib: float,
    gzip_clients: int = 0,
    gzip_inflated_mib: float = 7.5,
) -> dict:
    body = make_body(int(body_mib * 1024 * 1024))
    request = request_head(len(body)) + body
    gzip_body = make_gzip_body(int(gzip_inflated_mib * 1024 * 1024))
    gzip_request = request_head(len(gzip_body), b"Content-Encoding: gzip\r\n") + gzip_body
    with tempfile.TemporaryDirectory(prefix="gravixd-overload-") as workdir:
        daemon = Daemon(
            Path(workdir),
            f"--max-in-flight-bytes={IN_FLIGHT_BYTES_CAP}",
            "--max-in-flight-requests=64",
            "--max-connections=256",
            "--request-timeout-seconds=3",
            "--log-level=info",
            "--segment-max-bytes=16MiB",
        )
        with daemon:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            time.sleep(0.5)
            baseline_rss_kib = vm_kib(pid, "VmRSS")
            baseline_hwm_kib = vm_kib(pid, "VmHWM")
            stop = threading.Event()
            counts: Counter = Counter()
            threads = [
                threading.Thread(target=blaster, args=(daemon.http_port, request, stop, counts))
                for _ in range(clients)
            ]
            threads += [
                threading.Thread(target=staller, args=(daemon.http_port, request, stop, counts))
                for _ in range(stallers)
            ]
            gzip_counts: Counter = Counter()
            threads += [
                threading.Thread(
                    target=blaster, args=(daemon.http_port, gzip_request, stop, gzip_counts)
                )
                for _ in range(gzip_clients)
            ]
            started = time.monotonic()
            for t in threads:
                t.start()
            samples = []
            while time.monotonic() - started < seconds:
                time.sleep(0.25)
                samples.append(vm_kib(pid, "VmRSS"))
            stop.set()
            for t in threads:
                t.join(15)
            elapsed = time.monotonic() - started
            peak_hwm_kib = vm_kib(pid, "VmHWM")
            accepted = daemon.metric(
                "ingestion_events_accepted_total", stream="facts", source="http"
            )
    return {
        "seconds": round(elapsed, 1),
        "clients": clients,
        "stallers": stallers,
        "body_bytes": len(body),
        "in_flight_bytes_cap": IN_FLIGHT_BYTES_CAP,
        "responses": {str(k): v for k, v in sorted(counts.items(), key=str)},
        "gzip_clients": gzip_clients,
        "gzip_body_bytes": len(gzip_body),
        "gzip_inflated_mib": gzip_inflated_mib,
        "gzip_responses": {str(k): v for k, v in sorted(gzip_counts.items(), key=str)},
        "offered_mib": round(
            sum(v for k, v in counts.items() if not str(k).startswith("staller"))
            * len(request)
            / 2**20,
            1,
        ),
        "accepted_events": int(accepted),
        "accepted_events_per_second": round(accepted / elapsed),
        "baseline_rss_mib": round(baseline_rss_kib / 1024, 1),
        "baseline_hwm_mib": round(baseline_hwm_kib / 1024, 1),
        "peak_rss_sampled_mib": round(max(samples) / 1024, 1),
        "peak_vmhwm_mib": round(peak_hwm_kib / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--stallers", type=int, default=64)
    parser.add_argument("--body-mib", type=float, default=1.0)
    parser.add_argument("--gzip-clients", type=int, default=64)
    parser.add_argument("--gzip-inflated-mib", type=float, default=7.5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = run(
        args.seconds,
        args.clients,
        args.stallers,
        args.body_mib,
        args.gzip_clients,
        args.gzip_inflated_mib,
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
