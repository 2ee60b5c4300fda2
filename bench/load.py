"""Load generators: wrk with a Lua body, `gravixd emit`, and a raw-TCP sender.

Each runs pinned to the load core for a fixed duration, against 127.0.0.1 only, and returns
plain figures. wrk is the standard tool, so that no result hinges on our own client.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bodies import Body
from .servers import LOAD_CPU, pinned

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
WRK_SCRIPT = _HERE / "wrk_post.lua"


@dataclass(frozen=True)
class LoadResult:
    """What one timed load run achieved, as the load generator saw it."""

    tool: str
    seconds: float
    requests_ok: int  # 2xx answers (0 for raw TCP: there are no answers)
    requests_failed: int  # non-2xx answers, socket errors, timeouts
    events_ok: int  # events acknowledged (HTTP) or sent (TCP, before the server's count)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None

    @property
    def requests_per_second(self) -> float:
        return self.requests_ok / self.seconds if self.seconds else 0.0

    @property
    def events_per_second(self) -> float:
        return self.events_ok / self.seconds if self.seconds else 0.0


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(
    port: int,
    body: Body,
    seconds: float,
    connections: int = 8,
    path: str = "/v1/facts",
    cpu: str | None = LOAD_CPU,
) -> LoadResult:
    """POST `body` to 127.0.0.1:`port` with wrk (one thread) for `seconds`."""
    if not have_wrk():
        raise FileNotFoundError("wrk is not installed: run bench/install-bench-tools")
    # Batch bodies: time the run to the last answer (see wrk_post.lua).
    track = body.events > 1
    env = {
        **os.environ,
        "BENCH_TRACK": "1" if track else "0",
        "BENCH_BODY_FILE": str(body.path),
        "BENCH_CONTENT_TYPE": body.content_type,
        "BENCH_CONTENT_ENCODING": body.content_encoding or "",
        "BENCH_PATH": path,
    }
    argv = pinned(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            # A 10000-event batch may wait behind 7 others plus an fsync; 2 s (wrk's default)
            # would count slow answers as errors, so give them 30 s.
            "--timeout",
            "30s",
            "-s",
            str(WRK_SCRIPT),
            f"http://127.0.0.1:{port}",
        ],
        cpu,
    )
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    figures = json.loads(line.removeprefix("BENCH_JSON "))
    failed = (
        figures["errors_status"]
        + figures["errors_read"]
        + figures["errors_write"]
        + figures["errors_timeout"]
        + figures["errors_connect"]
    )
    ok = max(0, figures["requests"] - figures["errors_status"])
    seconds = figures["duration_us"] / 1e6
    tracked_line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_TRACK "))
    tracked = json.loads(tracked_line.removeprefix("BENCH_TRACK "))
    if track and tracked["window_us"] > 0:
        ok, seconds = tracked["tracked_ok"], tracked["window_us"] / 1e6
    return LoadResult(
        tool="wrk",
        seconds=seconds,
        requests_ok=ok,
        requests_failed=failed,
        events_ok=ok * body.events,
        latency_p50_ms=figures["latency_p50_us"] / 1000,
        latency_p99_ms=figures["latency_p99_us"] / 1000,
    )


def have_emit() -> bool:
    """`gravixd emit` exists in this checkout."""
    return (_REPO / "gravixd" / "emit.py").exists()


def emit_process(
    argv_tail: list[str], seconds: float, cpu: str | None = LOAD_CPU
) -> subprocess.Popen[str]:
    """Start `python -m gravixd emit ... --duration S --json` pinned to the load core.

    `argv_tail` names the target and the wire form, e.g.
    ``["--url", "http://127.0.0.1:P", "--format", "protobuf", "--batch-size", "1000"]``.
    """
    argv = pinned(
        [sys.executable, "-m", "gravixd", "emit", *argv_tail,
         "--duration", str(seconds), "--json", "--progress", "never"],
        cpu,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def emit_report(proc: subprocess.Popen[str], timeout_seconds: float) -> dict[str, Any]:
    """Wait for an `emit_process` and return its `--json` report."""
    out, err = proc.communicate(timeout=timeout_seconds)
    if proc.returncode != 0:
        raise RuntimeError(f"gravixd emit failed ({proc.returncode}): {err[-2000:]}")
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


def emit(argv_tail: list[str], seconds: float, cpu: str | None = LOAD_CPU) -> LoadResult:
    """HTTP load from `gravixd emit` for `seconds`; its own acknowledged count and latencies."""
    report = emit_report(emit_process(argv_tail, seconds, cpu), seconds + 60)
    latency = report.get("latency_ms") or {}
    return LoadResult(
        tool="emit",
        seconds=float(report["elapsed_seconds"]),
        requests_ok=int(report["requests_ok"]),
        requests_failed=int(report["requests_failed"]),
        events_ok=int(report["acknowledged"] or 0),
        latency_p50_ms=latency.get("p50"),
        latency_p99_ms=latency.get("p99"),
    )


def tcp_send(port: int, block: bytes, seconds: float, connections: int = 4) -> dict[str, int]:
    """Send `block` over and over on `connections` sockets to 127.0.0.1:`port` for `seconds`.

    Returns blocks and bytes sent. The kernel's buffers and the server's reading pace set
    the rate (TCP backpressure); this function only keeps the pipes full.
    """
    deadline = time.monotonic() + seconds
    sent = [0] * connections

    def pump(i: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
            sock.settimeout(1.0)
            while time.monotonic() < deadline:
                try:
                    sock.sendall(block)
                except TimeoutError:
                    break  # a partly sent block: the server drops the half frame at close
                sent[i] += 1

    threads = [threading.Thread(target=pump, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"blocks": sum(sent), "bytes": sum(sent) * len(block)}


def tcp_sender_process(
    port: int, block_file: Path, seconds: float, connections: int = 4, cpu: str | None = LOAD_CPU
) -> subprocess.Popen[str]:
    """`tcp_send` in a pinned child process (`python -m bench.load PORT FILE SECONDS CONNS`)."""
    argv = pinned(
        [
            sys.executable,
            "-m",
            "bench.load",
            str(port),
            str(block_file),
            str(seconds),
            str(connections),
        ],
        cpu,
    )
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)


if __name__ == "__main__":
    port_arg, file_arg, seconds_arg, conns_arg = sys.argv[1:5]
    result = tcp_send(
        int(port_arg), Path(file_arg).read_bytes(), float(seconds_arg), int(conns_arg)
    )
    print(json.dumps(result))
