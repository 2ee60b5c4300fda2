"""The benchmark scenarios, one command each; every one prints a table and writes JSON.

    python -m bench.run decode       # 1. decode only: JSON (msgspec), protobuf pure / native
    python -m bench.run http         # 2. HTTP end to end, durable ack, gravixd vs its peers
    python -m bench.run tcp          # 3. raw TCP end to end: ndjson and protobuf framing
    python -m bench.run durability   # 4. ack=durable vs ack=received on the same load
    python -m bench.run instances    # 5. 1 vs 2 gravixd instances on one address (reuse_port)
    python -m bench.run segment_format  # 6. ingest CPU of Arrow IPC vs Parquet segments
    python -m bench.run all          # all of them, then python -m bench.report

Options: --seconds S (per run), --runs N (the median of N is reported, with min and max),
--servers / --cases to narrow a scenario, --load wrk|emit|both (wrk: the standard tools,
wrk and the raw-TCP block sender; emit: `gravixd emit`). Results go to
bench/results/<scenario>.json. Servers run on core 0, load on core 1 (see servers.py), only
on 127.0.0.1, and every run has a fixed duration. Short or few runs are marked preliminary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from . import bodies, load, machine, servers
from .bodies import Body

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Below these a result says "preliminary": too short or too few runs to trust on a shared box.
MIN_FINAL_SECONDS = 5.0
MIN_FINAL_RUNS = 3
# Other work on the box before the suite starts (the suite's own load comes later).
MAX_QUIET_LOADAVG = 0.5

# The figures a run records; the summary gives median, min and max of each.
FIGURES = (
    "events_per_second",
    "requests_per_second",
    "mb_per_second",
    "latency_p50_ms",
    "latency_p99_ms",
    # The server's utime + stime over the timed run (whole process tree, /proc/PID/stat) per
    # million events: the figure that carries over to a bigger machine (events/s per core is
    # its inverse), and less noisy than events/s on a shared box.
    "cpu_s_per_M_events",
    "peak_rss_mb",
    "failed",
)


@dataclass
class Options:
    seconds: float
    runs: int
    warmup_seconds: float
    connections: int
    servers: tuple[str, ...] | None
    cases: tuple[str, ...] | None
    load: str  # "wrk", "emit" or "both"
    results_dir: Path
    workdir: Path

    loadavg_before: float = 0.0  # 1-minute load average before the first scenario

    def preliminary_reasons(self) -> list[str]:
        reasons = []
        if self.seconds < MIN_FINAL_SECONDS or self.runs < MIN_FINAL_RUNS:
            reasons.append(f"{self.runs} run(s) of {self.seconds:g} s")
        if self.loadavg_before > MAX_QUIET_LOADAVG:
            reasons.append(f"busy machine (load average {self.loadavg_before:.1f} at the start)")
        return reasons

    @property
    def preliminary(self) -> bool:
        return bool(self.preliminary_reasons())

    def wants_server(self, name: str) -> bool:
        return self.servers is None or name in self.servers

    def wants_case(self, name: str) -> bool:
        return self.cases is None or name in self.cases


@dataclass
class Measurement:
    """One case on one server with one load tool: its runs and their summary."""

    scenario: str
    case: str
    server: str
    load: str
    variant: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scenario": self.scenario,
            "case": self.case,
            "server": self.server,
            "load": self.load,
            "variant": self.variant,
            "runs": self.runs,
        }
        if self.error:
            out["error"] = self.error
        for stat, fn in (("median", statistics.median), ("min", min), ("max", max)):
            out[stat] = {
                k: round(fn(vals), 4)
                for k in FIGURES
                if (vals := [r[k] for r in self.runs if r.get(k) is not None])
            }
        eps = out["median"].get("events_per_second")
        if eps:
            # Spread: (max - min) / median of the throughput, in percent.
            out["spread_pct"] = round(
                100 * (out["max"]["events_per_second"] - out["min"]["events_per_second"]) / eps, 1
            )
        return out


def _server_figures(
    result: load.LoadResult, cpu_s: float, rss: int, wire_bytes: float
) -> dict[str, Any]:
    events = result.events_ok
    return {
        "events_per_second": round(result.events_per_second, 1),
        "requests_per_second": round(result.requests_per_second, 1),
        "mb_per_second": round(wire_bytes / result.seconds / 1e6, 2) if result.seconds else None,
        "latency_p50_ms": result.latency_p50_ms,
        "latency_p99_ms": result.latency_p99_ms,
        "cpu_s_per_M_events": round(cpu_s / events * 1e6, 3) if events else None,
        "peak_rss_mb": round(rss / 2**20, 1),
        "failed": result.requests_failed,
        "seconds": round(result.seconds, 3),
        "cpu_seconds": round(cpu_s, 3),
    }


def _accepted_events(server: servers.Server, source: str | None = None) -> float:
    """gravixd's `ingestion_events_accepted_total`, summed over streams (one source or all)."""
    total = 0.0
    for family in text_string_to_metric_families(server.metrics_text()):
        if family.name != "ingestion_events_accepted":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and (
                source is None or sample.labels.get("source") == source
            ):
                total += sample.value
    return total


def _wait_idle(server: servers.Server, timeout_seconds: float = 15.0) -> None:
    """Wait until the server burns less than 10% of a core over 100 ms (or the timeout)."""
    deadline = time.monotonic() + timeout_seconds
    before = server.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = server.cpu_seconds()
        if now - before < 0.01:
            return
        before = now


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- one timed HTTP run -------------------------------------------------------------------


@dataclass(frozen=True)
class HttpLoad:
    """How load is offered: a wrk body, or `gravixd emit` with its arguments."""

    tool: str  # "wrk" or "emit"
    body: Body

    def run(self, server: servers.Server, seconds: float, connections: int) -> load.LoadResult:
        if self.tool == "wrk":
            return load.wrk(server.http_port, self.body, seconds, connections=connections)
        fmt = self.body.name.split("-")[0]
        argv = [
            "--url",
            f"http://127.0.0.1:{server.http_port}/v1/facts",
            "--format",
            fmt,
            "--batch-size",
            str(self.body.events),
            "--concurrency",
            str(connections),
        ]
        if self.body.content_encoding == "gzip":
            argv.append("--gzip")
        return load.emit(argv, seconds)


def http_run(
    opts: Options, server_name: str, how: HttpLoad, server_options: dict[str, Any]
) -> dict[str, Any]:
    """Start a fresh server, warm it up, measure one timed run, stop it."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{server_name}-", dir=opts.workdir))
    with servers.running(server_name, workdir, **server_options) as server:
        if opts.warmup_seconds > 0:
            load.wrk(server.http_port, how.body, opts.warmup_seconds, opts.connections)
            # Requests the warm-up left in flight must not eat into the timed run.
            _wait_idle(server)
        accepted_before = _accepted_events(server) if server.metrics_port else None
        cpu_before = server.cpu_seconds()
        result = how.run(server, opts.seconds, opts.connections)
        cpu_s = server.cpu_seconds() - cpu_before
        figures = _server_figures(
            result, cpu_s, server.peak_rss_bytes(), result.requests_ok * how.body.wire_bytes
        )
        if accepted_before is not None:
            # gravixd's own count of what it made durable: a check on the load tool's figure.
            figures["server_events_accepted"] = _accepted_events(server) - accepted_before
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server_name} died during the run:\n{server.log_tail()}")
        return figures


def measure(
    opts: Options,
    scenario: str,
    case: str,
    entries: Iterable[tuple[str, str, Callable[[], dict[str, Any]], dict[str, Any]]],
) -> list[Measurement]:
    """Run each (server, load, run-function, variant) `opts.runs` times, interleaved.

    Runs alternate between servers (run 1 of each, then run 2 of each, ...) so that a noisy
    moment on a shared box hits every server rather than skewing one ratio.
    """
    entries = list(entries)
    measurements = [
        Measurement(scenario, case, name, tool, variant) for name, tool, _, variant in entries
    ]
    for run_index in range(opts.runs):
        for m, (_, _, fn, _) in zip(measurements, entries, strict=True):
            if m.error:
                continue
            _log(f"[{scenario}] {case} {m.server}/{m.load} run {run_index + 1}/{opts.runs}")
            try:
                m.runs.append(fn())
            except Exception as exc:  # one broken server must not sink the whole suite
                m.error = f"{type(exc).__name__}: {exc}"[-2000:]
                _log(f"  failed: {m.error}")
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()
    return measurements


# --- scenarios ---------------------------------------------------------------------------

# HTTP cases: (case name, format, events per request, gzip).
HTTP_CASES: tuple[tuple[str, str, int, bool], ...] = (
    ("single", "json", 1, False),
    *(
        (bodies.body_name(fmt, n, gz), fmt, n, gz)
        for n in (1000, 10000)
        for fmt in ("json", "ndjson", "protobuf")
        for gz in (False, True)
    ),
)
# The ceilings (trio+h11, nginx) do no decoding, so compressed or NDJSON bodies would show
# nothing new: they run on the plain JSON and protobuf bodies and single events.
_CEILING_CASES = {"single", "json-1000", "protobuf-1000", "json-10000", "protobuf-10000"}
# gravixd on the pure protobuf path, beside the native one, when the native one is built.
_PURE_CASES = {"protobuf-1000", "protobuf-10000"}
# `gravixd emit` as a second load tool, on the cases the targets name.
_EMIT_CASES = {"single", "json-1000", "protobuf-1000"}


def _http_entries(
    opts: Options, case: str, body: Body, server_names: Iterable[str]
) -> list[tuple[str, str, Callable[[], dict[str, Any]], dict[str, Any]]]:
    entries = []
    for name in server_names:
        if not opts.wants_server(name):
            continue
        if name in ("trio_h11", "nginx") and case not in _CEILING_CASES:
            continue
        if name == "gravixd_pure" and not (case in _PURE_CASES and _native_decoder()):
            continue
        tools = ["wrk"] if opts.load in ("wrk", "both") else []
        if (
            name == "gravixd"
            and opts.load in ("emit", "both")
            and case in _EMIT_CASES
            and load.have_emit()
        ):
            tools.append("emit")
        for tool in tools:
            how = HttpLoad(tool, body)
            gravixd = name.startswith("gravixd")
            options: dict[str, Any] = {"ack": "durable"} if gravixd else {}

            def fn(name: str = name, how: HttpLoad = how, options: dict[str, Any] = options):
                return http_run(opts, name, how, options)

            entries.append((name, tool, fn, {"body": _body_info(body), **options}))
    return entries


def _body_info(body: Body) -> dict[str, Any]:
    return {
        "name": body.name,
        "events": body.events,
        "content_type": body.content_type,
        "content_encoding": body.content_encoding,
        "wire_bytes": body.wire_bytes,
        "raw_bytes": body.raw_bytes,
    }


def _write_body(opts: Options, fmt: str, events: int, gz: bool) -> Body:
    directory = opts.workdir / "bodies"
    directory.mkdir(parents=True, exist_ok=True)
    return bodies.write_body(directory, fmt, events, gz)


def scenario_http(opts: Options) -> list[Measurement]:
    out: list[Measurement] = []
    for case, fmt, events, gz in HTTP_CASES:
        if not opts.wants_case(case):
            continue
        body = _write_body(opts, fmt, events, gz)
        out += measure(opts, "http", case, _http_entries(opts, case, body, servers.SERVERS))
    return out


def scenario_durability(opts: Options) -> list[Measurement]:
    out: list[Measurement] = []
    for case, fmt, events in (
        ("single", "json", 1),
        ("json-1000", "json", 1000),
        ("protobuf-1000", "protobuf", 1000),
        ("protobuf-10000", "protobuf", 10000),
    ):
        if not opts.wants_case(case):
            continue
        body = _write_body(opts, fmt, events, False)
        entries = []
        for ack in ("durable", "received"):
            how = HttpLoad("wrk", body)

            def fn(how: HttpLoad = how, ack: str = ack) -> dict[str, Any]:
                return http_run(opts, "gravixd", how, {"ack": ack})

            entries.append(("gravixd", "wrk", fn, {"body": _body_info(body), "ack": ack}))
        out += measure(opts, "durability", case, entries)
    return out


def scenario_segment_format(opts: Options) -> list[Measurement]:
    """The ingest cost of the store format: Arrow IPC (the sealed spool file as it is) vs
    Parquet (re-encoded at seal, zstd), and Parquet with microsecond timestamps (what the
    Iceberg tables hold). Segments rotate every second so that sealing, which runs beside
    the event loop, falls inside the timed run and its CPU is counted."""
    out: list[Measurement] = []
    formats = (
        ("arrow", ("--segment-format", "arrow")),
        ("parquet", ("--segment-format", "parquet")),
    )
    for case, fmt, events in (("json-1000", "json", 1000), ("protobuf-1000", "protobuf", 1000)):
        if not opts.wants_case(case):
            continue
        body = _write_body(opts, fmt, events, False)
        entries = []
        for name, args in formats:
            how = HttpLoad("wrk", body)
            extra = (*args, "--segment-max-age-seconds", "1")

            def fn(how: HttpLoad = how, extra: tuple[str, ...] = extra) -> dict[str, Any]:
                return http_run(opts, "gravixd", how, {"extra_args": extra})

            entries.append((f"gravixd-{name}", "wrk", fn, {"body": _body_info(body)}))
        out += measure(opts, "segment_format", case, entries)
    return out


def instances_run(opts: Options, count: int, body: Body) -> dict[str, Any]:
    """One timed run against `count` instances sharing one HTTP port: wrk's events/s, the
    CPU seconds of all instances together, the largest instance's peak RSS."""
    workdir = Path(tempfile.mkdtemp(prefix=f"gravixd-x{count}-", dir=opts.workdir))
    group = servers.start_gravixd_instances(workdir, count)
    try:
        port = group[0].http_port
        # The load is not pinned here: with 2 cores, the instances hold both of them.
        if opts.warmup_seconds > 0:
            load.wrk(port, body, opts.warmup_seconds, opts.connections, cpu=None)
            for server in group:
                _wait_idle(server)
        accepted_before = sum(_accepted_events(s) for s in group)
        cpu_before = sum(s.cpu_seconds() for s in group)
        result = load.wrk(port, body, opts.seconds, opts.connections, cpu=None)
        cpu_s = sum(s.cpu_seconds() for s in group) - cpu_before
        rss = max(s.peak_rss_bytes() for s in group)
        figures = _server_figures(result, cpu_s, rss, result.requests_ok * body.wire_bytes)
        per_instance = [_accepted_events(s) for s in group]
        figures["server_events_accepted"] = sum(per_instance) - accepted_before
        figures["events_accepted_per_instance"] = per_instance
        for server in group:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} died during the run:\n{server.log_tail()}")
        return figures
    finally:
        for server in group:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# Instances scale with cores; these cases show it for batches and for single events.
_INSTANCE_CASES: tuple[tuple[str, str, int], ...] = (
    ("single", "json", 1),
    ("json-1000", "json", 1000),
    ("protobuf-1000", "protobuf", 1000),
)


def scenario_instances(opts: Options) -> list[Measurement]:
    """1 and 2 gravixd instances on one address (`reuse_port`), each with its own spool.

    On the 2-core box the instances take both cores and wrk runs beside them, so events/s
    can grow only a little; CPU s per M events (all instances together) shows what the
    second instance costs, and on a host with more cores than instances events/s grows with
    them.
    """
    out: list[Measurement] = []
    for case, fmt, events in _INSTANCE_CASES:
        if not opts.wants_case(case):
            continue
        body = _write_body(opts, fmt, events, False)
        entries = []
        for count in (1, 2):

            def fn(count: int = count, body: Body = body) -> dict[str, Any]:
                return instances_run(opts, count, body)

            name = f"gravixd x{count}"
            entries.append((name, "wrk", fn, {"body": _body_info(body), "instances": count}))
        out += measure(opts, "instances", case, entries)
    return out


def tcp_run(
    opts: Options, framing: str, tool: str, block_file: Path, block_events: int
) -> dict[str, Any]:
    """One timed raw-TCP run: the server's own accepted-events counter over a window in
    which the sender keeps sending (TCP has no answers to count).

    `tool` is "tcp_send" (a pre-generated block written over and over on 4 connections) or
    "emit" (`gravixd emit --tcp`, generating 1000-event writes on 4 connections).
    """
    workdir = Path(tempfile.mkdtemp(prefix="gravixd-tcp-", dir=opts.workdir))
    with servers.running("gravixd", workdir, tcp_framings=(framing,)) as server:
        total = opts.warmup_seconds + opts.seconds + 1.0
        port = server.tcp_ports[framing]
        if tool == "emit":
            argv = ["--tcp", f"127.0.0.1:{port}", "--format", framing,
                    "--batch-size", str(block_events), "--concurrency", "4"]  # fmt: skip
            sender = load.emit_process(argv, total)
        else:
            sender = load.tcp_sender_process(port, block_file, total, connections=4)
        try:
            time.sleep(opts.warmup_seconds)
            accepted_before, cpu_before = _accepted_events(server, "tcp"), server.cpu_seconds()
            t0 = time.monotonic()
            time.sleep(opts.seconds)
            accepted = _accepted_events(server, "tcp") - accepted_before
            cpu_s = server.cpu_seconds() - cpu_before
            elapsed = time.monotonic() - t0
        finally:
            out, _ = sender.communicate(timeout=total + 60)
        if sender.returncode != 0:
            raise RuntimeError(f"{tool} exited with {sender.returncode}")
        report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        result = load.LoadResult(tool, elapsed, 0, 0, int(accepted))
        bytes_per_event = block_file.stat().st_size / block_events
        figures = _server_figures(
            result, cpu_s, server.peak_rss_bytes(), accepted * bytes_per_event
        )
        figures["requests_per_second"] = None
        figures["events_sent_total"] = (
            report.get("sent", 0) if tool == "emit" else report.get("blocks", 0) * block_events
        )
        return figures


def scenario_tcp(opts: Options) -> list[Measurement]:
    out: list[Measurement] = []
    block_events = 1000
    for framing in ("ndjson", "protobuf"):
        case = f"tcp-{framing}"
        if not opts.wants_case(case):
            continue
        block_file = opts.workdir / "bodies" / f"tcp-{framing}-{block_events}.block"
        block_file.parent.mkdir(parents=True, exist_ok=True)
        block_file.write_bytes(bodies.tcp_stream(framing, block_events))
        tools = ["tcp_send"] if opts.load in ("wrk", "both") else []
        if opts.load in ("emit", "both") and load.have_emit():
            tools.append("emit")
        entries = []
        for tool in tools:

            def fn(framing: str = framing, tool: str = tool, block_file: Path = block_file):
                return tcp_run(opts, framing, tool, block_file, block_events)

            variant = {"framing": framing, "connections": 4, "block_events": block_events}
            entries.append(("gravixd", tool, fn, variant))
        out += measure(opts, "tcp", case, entries)
    return out


def _decode_functions() -> dict[str, Callable[[bytes], Any]]:
    """The decoders under test, as `body -> RecordBatch`; the native one only when built."""
    from gravixd.core import decode as d

    now = time.time_ns()
    fns: dict[str, Callable[[bytes], Any]] = {
        "json": lambda b: d.decode_json("facts", b, now),
        "ndjson": lambda b: d.decode_ndjson("facts", b, now),
        "protobuf-pure": lambda b: d.decode_protobuf_pure("facts", b, now),
    }
    native_fn = _native_decoder()
    if native_fn is not None:
        fns["protobuf-native"] = lambda b: native_fn("facts", b, now)
    return fns


def _native_decoder() -> Callable[[str, bytes, int], Any] | None:
    try:
        from gravixd import native
    except Exception:
        return None
    if not getattr(native, "AVAILABLE", True):
        return None
    for name in ("decode_protobuf_native", "decode_protobuf", "decode"):
        fn = getattr(native, name, None)
        if callable(fn):
            return fn  # type: ignore[no-any-return]
    return None


def decode_run(
    fn: Callable[[bytes], Any], body: bytes, events: int, seconds: float
) -> dict[str, Any]:
    """Call `fn(body)` back to back for `seconds` on this (pinned) process."""
    rows = fn(body).num_rows  # warm caches, and check the decoder got every event
    if rows != events:
        raise RuntimeError(f"Expected {events} rows from the decoder, got {rows}")
    cpu0, t0, calls = time.process_time(), time.perf_counter(), 0
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        fn(body)
        calls += 1
    elapsed, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "events_per_second": round(calls * events / elapsed, 1),
        "requests_per_second": round(calls / elapsed, 1),
        "mb_per_second": round(calls * len(body) / elapsed / 1e6, 2),
        "cpu_s_per_M_events": round(cpu_s / (calls * events) * 1e6, 3),
        "seconds": round(elapsed, 3),
    }


def scenario_decode(opts: Options) -> list[Measurement]:
    # Decode runs in this process: pin it to the server core, like the servers, and unpin it
    # afterwards so that it does not sit on the servers' core during the other scenarios.
    if (os.cpu_count() or 1) < 2:
        return _decode_cases(opts)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(servers.SERVER_CPU)})
    try:
        return _decode_cases(opts)
    finally:
        os.sched_setaffinity(0, affinity)


def _decode_cases(opts: Options) -> list[Measurement]:
    fns = _decode_functions()
    out: list[Measurement] = []
    for events in (1000, 10000):
        case = f"decode-{events}"
        if not opts.wants_case(case):
            continue
        encoded = {
            "json": bodies.encode_json(bodies.make_facts(events)),
            "ndjson": bodies.encode_ndjson(bodies.make_facts(events)),
        }
        encoded["protobuf"] = bodies.encode_protobuf(bodies.make_facts(events))
        entries = []
        for path, fn in fns.items():
            body = encoded[path.split("-")[0]]

            def run(
                fn: Callable[[bytes], Any] = fn, body: bytes = body, events: int = events
            ) -> dict[str, Any]:
                return decode_run(fn, body, events, opts.seconds)

            entries.append((path, "in-process", run, {"body_bytes": len(body), "events": events}))
        out += measure(opts, "decode", case, entries)
    if "protobuf-native" not in fns:
        _log("[decode] protobuf-native skipped: gravixd.native is not built or not there yet")
    return out


SCENARIOS: dict[str, Callable[[Options], list[Measurement]]] = {
    "decode": scenario_decode,
    "http": scenario_http,
    "tcp": scenario_tcp,
    "durability": scenario_durability,
    "instances": scenario_instances,
    "segment_format": scenario_segment_format,
}


# --- output ------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int) and digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def print_table(scenario: str, results: list[dict[str, Any]]) -> None:
    header = (
        f"{'case':<20} {'server':<15} {'load':<10} {'events/s':>12} {'spread':>7} "
        f"{'req/s':>9} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/M':>8} {'RSS MB':>7}"
    )
    print(f"\n== {scenario} ==\n{header}\n{'-' * len(header)}")
    for r in results:
        m = r["median"]
        if r.get("error") and not r["runs"]:
            print(f"{r['case']:<20} {r['server']:<15} {r['load']:<10} ERROR {r['error'][:60]}")
            continue
        ack = r["variant"].get("ack")
        server = f"{r['server']}" + (f"/{ack[:4]}" if scenario == "durability" and ack else "")
        print(
            f"{r['case']:<20} {server:<15} {r['load']:<10} "
            f"{_fmt(m.get('events_per_second')):>12} "
            f"{_fmt(r.get('spread_pct'), 1) + '%':>7} "
            f"{_fmt(m.get('requests_per_second')):>9} {_fmt(m.get('mb_per_second'), 1):>8} "
            f"{_fmt(m.get('latency_p50_ms'), 2):>8} {_fmt(m.get('latency_p99_ms'), 2):>8} "
            f"{_fmt(m.get('cpu_s_per_M_events'), 2):>8} "
            f"{_fmt(m.get('peak_rss_mb'), 0):>7}"
        )


def write_results(opts: Options, scenario: str, measurements: list[Measurement]) -> Path:
    results = [m.summary() for m in measurements]
    doc = {
        "scenario": scenario,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "preliminary": opts.preliminary,
        "preliminary_reasons": opts.preliminary_reasons(),
        "settings": {
            "seconds": opts.seconds,
            "runs": opts.runs,
            "warmup_seconds": opts.warmup_seconds,
            "connections": opts.connections,
            "server_cpu": servers.SERVER_CPU,
            "load_cpu": servers.LOAD_CPU,
        },
        "machine": machine.describe(),
        "results": results,
    }
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    path = opts.results_dir / f"{scenario}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print_table(scenario, results)
    reasons = "; ".join(opts.preliminary_reasons())
    print(f"\nwrote {path}" + (f"  (PRELIMINARY: {reasons})" if reasons else ""))
    return path


def _split(value: str | None) -> tuple[str, ...] | None:
    return tuple(v for v in value.split(",") if v) if value else None


def parse_args(argv: list[str] | None = None) -> tuple[list[str], Options]:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("scenario", choices=[*SCENARIOS, "all"])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (median reported)")
    parser.add_argument("--warmup-seconds", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=8, help="wrk -c / emit concurrency")
    parser.add_argument("--servers", help=f"comma list out of {','.join(servers.SERVERS)}")
    parser.add_argument("--cases", help="comma list of case names (e.g. single,json-1000)")
    parser.add_argument("--load", choices=["wrk", "emit", "both"], default="both")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    opts = Options(
        seconds=args.seconds,
        runs=args.runs,
        warmup_seconds=args.warmup_seconds,
        connections=args.connections,
        servers=_split(args.servers),
        cases=_split(args.cases),
        load=args.load,
        results_dir=args.results_dir,
        workdir=Path(tempfile.mkdtemp(prefix="gravixd-bench-")),
        loadavg_before=os.getloadavg()[0],
    )
    return scenarios, opts


def main(argv: list[str] | None = None) -> int:
    scenarios, opts = parse_args(argv)
    try:
        for scenario in scenarios:
            write_results(opts, scenario, SCENARIOS[scenario](opts))
    finally:
        shutil.rmtree(opts.workdir, ignore_errors=True)
    if len(scenarios) > 1:
        from . import report

        report.main([str(opts.results_dir)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
