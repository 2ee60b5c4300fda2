"""OTLP/HTTP ingest: spans/s and log records/s, against gravixd's own /v1/facts and /v1/events
carrying the very same events.

    python -m bench.bench_otlp                 # decode + HTTP, 3 s per case
    python -m bench.bench_otlp --seconds 5 --cases decode

Bodies: `bench.bodies.make_facts(N)` (the facts every other benchmark sends), as an OTLP
`ExportTraceServiceRequest` of SERVER spans (one ResourceSpans per service, the facts'
fields as semantic-convention attributes: what an instrumented HTTP server exports) and as a
gravixd `RequestFactBatch`; the same N events as an `ExportLogsServiceRequest` and a
`ServiceEventBatch`. Both forms map to the same rows (checked before timing).

Two measurements:
- decode: body bytes -> Arrow record batch in this process, one thread; records per
  CPU-second of that thread (= per core, whatever else the box runs).
- http: a real daemon pinned to core 0, durable acks, a keep-alive Python client on core 1
  (for 1000-event bodies the client is far from the limit); records acknowledged per second
  and per CPU-second of the server (the per-core figure on a box where the client shares
  nothing with the server).
Results go to bench/results/otlp.json. Short runs only: this is a shared 2-core box.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from gravixd.core import otlp
from gravixd.core.decode import decode_protobuf_pure
from gravixd.proto.gravix.v1 import events_pb2

from . import machine, servers
from .bodies import make_facts

RESULTS = Path(__file__).resolve().parent / "results" / "otlp.json"
_NOW_NS = 1_800_000_000_000_000_000
_SEVERITIES = ((9, 2), (9, 2), (9, 2), (13, 3), (17, 4), (5, 1))  # (OTel number, gravixd enum)


def _kv(key: str, value: str | int) -> common_pb2.KeyValue:
    any_value = (
        common_pb2.AnyValue(int_value=value)
        if isinstance(value, int)
        else common_pb2.AnyValue(string_value=value)
    )
    return common_pb2.KeyValue(key=key, value=any_value)


def _resource(service: str) -> resource_pb2.Resource:
    return resource_pb2.Resource(attributes=[_kv("service.name", service)])


def _by_service(facts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for fact in facts:
        grouped.setdefault(fact["service"], []).append(fact)
    return grouped


def traces_body(facts: list[dict[str, Any]]) -> bytes:
    """The facts as SERVER spans, grouped into one ResourceSpans per service."""
    rng = random.Random(3)
    resource_spans = []
    for service, group in _by_service(facts).items():
        spans = []
        for f in group:
            start = f["timestamp_unix_nano"]
            attributes = [
                _kv("http.route", f["route"]),
                _kv("http.request.method", f["method"]),
                _kv("http.response.status_code", f["status_code"]),
                _kv("http.request.body.size", f["bytes_in"]),
                _kv("http.response.body.size", f["bytes_out"]),
                *(_kv(k, v) for k, v in f["attributes"].items()),
            ]
            spans.append(
                trace_pb2.Span(
                    trace_id=bytes.fromhex(f["trace_id"]),
                    span_id=rng.randbytes(8),
                    name=f"{f['method']} {f['route']}",
                    kind=trace_pb2.Span.SpanKind.SPAN_KIND_SERVER,
                    start_time_unix_nano=start,
                    end_time_unix_nano=start + round(f["duration_ms"] * 1e6),
                    attributes=attributes,
                )
            )
        resource_spans.append(
            trace_pb2.ResourceSpans(
                resource=_resource(service), scope_spans=[trace_pb2.ScopeSpans(spans=spans)]
            )
        )
    request = trace_service_pb2.ExportTraceServiceRequest(resource_spans=resource_spans)
    return bytes(request.SerializeToString())


def facts_body(facts: list[dict[str, Any]]) -> bytes:
    """The same facts as gravixd's RequestFactBatch, duration as the spans carry it."""
    messages = []
    for f in facts:
        fact = dict(f, duration_ms=round(f["duration_ms"] * 1e6) / 1e6)
        messages.append(events_pb2.RequestFact(**fact))
    return bytes(events_pb2.RequestFactBatch(facts=messages).SerializeToString())


def _log_fields(f: dict[str, Any], i: int) -> tuple[int, int, str]:
    otel_number, severity = _SEVERITIES[i % len(_SEVERITIES)]
    message = f"{f['method']} {f['route']} answered {f['status_code']} in {f['duration_ms']} ms"
    return otel_number, severity, message


def logs_body(facts: list[dict[str, Any]]) -> bytes:
    """One log record per fact: an access-log line with the fact's attributes."""
    resource_logs = []
    index = 0
    for service, group in _by_service(facts).items():
        records = []
        for f in group:
            otel_number, _, message = _log_fields(f, index)
            index += 1
            records.append(
                logs_pb2.LogRecord(
                    time_unix_nano=f["timestamp_unix_nano"],
                    severity_number=otel_number,  # type: ignore[arg-type]
                    body=common_pb2.AnyValue(string_value=message),
                    event_name="http.access",
                    trace_id=bytes.fromhex(f["trace_id"]),
                    attributes=[_kv(k, v) for k, v in f["attributes"].items()],
                )
            )
        resource_logs.append(
            logs_pb2.ResourceLogs(
                resource=_resource(service), scope_logs=[logs_pb2.ScopeLogs(log_records=records)]
            )
        )
    request = logs_service_pb2.ExportLogsServiceRequest(resource_logs=resource_logs)
    return bytes(request.SerializeToString())


def events_body(facts: list[dict[str, Any]]) -> bytes:
    """The same log records as gravixd's ServiceEventBatch, in the OTLP body's order."""
    events = []
    index = 0
    for service, group in _by_service(facts).items():
        for f in group:
            _, severity, message = _log_fields(f, index)
            index += 1
            events.append(
                events_pb2.ServiceEvent(
                    timestamp_unix_nano=f["timestamp_unix_nano"],
                    service=service,
                    kind="http.access",
                    severity=severity,  # type: ignore[arg-type]
                    message=message,
                    trace_id=f["trace_id"],
                    attributes=f["attributes"],
                )
            )
    return bytes(events_pb2.ServiceEventBatch(events=events).SerializeToString())


def _same_rows(a: Any, b: Any, key: str) -> bool:
    def rows(batch: Any) -> list[Any]:
        index = batch.schema.get_field_index("timestamp")
        batch = batch.set_column(index, "timestamp", batch.column(index).cast("int64"))
        out = batch.to_pylist()
        for row in out:
            row["attributes"] = sorted(row["attributes"])
        return sorted(out, key=lambda r: (r[key], r["trace_id"]))

    return rows(a) == rows(b)


def _json_of(body: bytes, request_type: Any) -> bytes:
    """OTLP JSON of a protobuf body (ids in hex, enums as numbers), for the JSON decode case."""
    import base64

    from google.protobuf import json_format

    document = json_format.MessageToDict(request_type.FromString(body), use_integers_for_enums=True)

    def hexify(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("traceId", "spanId") and isinstance(v, str):
                    node[k] = base64.b64decode(v).hex()
                else:
                    hexify(v)
        elif isinstance(node, list):
            for v in node:
                hexify(v)

    hexify(document)
    return json.dumps(document).encode()


# --- decode -----------------------------------------------------------------------------------


def _rate(fn: Callable[[], Any], records: int, seconds: float) -> float:
    """Records per CPU-second of this thread (one core): `records` over the median CPU time
    of one call, calls repeated for about `seconds` of wall time. CPU time and a median, so
    that other work on a shared box counts as little as it can."""
    fn()  # warm
    times: list[float] = []
    wall = time.perf_counter()
    while time.perf_counter() - wall < seconds or len(times) < 5:
        cpu = time.thread_time()
        fn()
        times.append(time.thread_time() - cpu)
    return records / statistics.median(times)


def decode_cases(spans: int, seconds: float) -> list[dict[str, Any]]:
    facts = make_facts(spans)
    traces, fact_pb = traces_body(facts), facts_body(facts)
    logs, event_pb = logs_body(facts), events_body(facts)
    traces_json = _json_of(traces, trace_service_pb2.ExportTraceServiceRequest)
    logs_json = _json_of(logs, logs_service_pb2.ExportLogsServiceRequest)
    pb = "application/x-protobuf"

    def otlp_traces() -> Any:
        return otlp.decode_export(otlp.TRACES, pb, traces, _NOW_NS).batch

    def otlp_logs() -> Any:
        return otlp.decode_export(otlp.LOGS, pb, logs, _NOW_NS).batch

    def otlp_traces_json() -> Any:
        return otlp.decode_export(otlp.TRACES, "application/json", traces_json, _NOW_NS)

    def otlp_logs_json() -> Any:
        return otlp.decode_export(otlp.LOGS, "application/json", logs_json, _NOW_NS)

    def facts_pure() -> Any:
        return decode_protobuf_pure("facts", fact_pb, _NOW_NS)

    def events_pure() -> Any:
        return decode_protobuf_pure("events", event_pb, _NOW_NS)

    assert _same_rows(otlp_traces(), facts_pure(), "timestamp")
    assert _same_rows(otlp_logs(), events_pure(), "timestamp")
    cases: list[tuple[str, str, Callable[[], Any], int]] = [
        ("traces", "otlp protobuf python", otlp_traces, len(traces)),
        ("traces", "otlp json", otlp_traces_json, len(traces_json)),
        ("traces", "gravixd protobuf pure", facts_pure, len(fact_pb)),
        ("logs", "otlp protobuf python", otlp_logs, len(logs)),
        ("logs", "otlp json", otlp_logs_json, len(logs_json)),
        ("logs", "gravixd protobuf pure", events_pure, len(event_pb)),
    ]
    walker = _otlp_walker()
    if walker is not None:

        def otlp_traces_native() -> Any:
            return otlp.decode_export(otlp.TRACES, pb, traces, _NOW_NS, walker=walker).batch

        def otlp_logs_native() -> Any:
            return otlp.decode_export(otlp.LOGS, pb, logs, _NOW_NS, walker=walker).batch

        # The C walker maps these bodies itself (no fallback), to the Python mapping's rows.
        assert not isinstance(walker(otlp.TRACES, traces, _NOW_NS, spans), otlp.Fallback)
        assert not isinstance(walker(otlp.LOGS, logs, _NOW_NS, spans), otlp.Fallback)
        assert otlp_traces_native().equals(otlp_traces())
        assert otlp_logs_native().equals(otlp_logs())
        cases.insert(0, ("traces", "otlp protobuf native", otlp_traces_native, len(traces)))
        cases.insert(4, ("logs", "otlp protobuf native", otlp_logs_native, len(logs)))
    native = _native()
    if native is not None:
        cases.insert(
            3,
            (
                "traces",
                "gravixd protobuf native",
                partial(native, "facts", fact_pb, 0),
                len(fact_pb),
            ),
        )
        cases.append(
            (
                "logs",
                "gravixd protobuf native",
                partial(native, "events", event_pb, 0),
                len(event_pb),
            )
        )
    return [
        {
            "signal": signal,
            "path": path,
            "records": spans,
            "body_bytes": size,
            "records_per_cpu_second": round(_rate(fn, spans, seconds)),
        }
        for signal, path, fn, size in cases
    ]


def _native() -> Callable[[str, bytes, int], Any] | None:
    """gravixd's C decoder, when it is built."""
    try:
        from gravixd import native

        native.decode_protobuf("facts", b"", 0)
    except Exception:  # not built, or GRAVIXD_NATIVE=0
        return None
    return native.decode_protobuf


def _otlp_walker() -> otlp.OtlpWalker | None:
    """gravixd's C OTLP walker, when the extension is built."""
    from gravixd import native

    return native.decode_otlp_protobuf if native.AVAILABLE else None


# --- http -------------------------------------------------------------------------------------


def _client(port: int, path: str, body: bytes, stop: threading.Event, counts: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/x-protobuf"}
    ok = failed = 0
    try:
        while not stop.is_set():
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            response.read()
            if 200 <= response.status < 300:
                ok += 1
            else:
                failed += 1
    finally:
        conn.close()
        counts[0] += ok
        counts[1] += failed


def http_case(
    path: str, body: bytes, records: int, seconds: float, connections: int
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-otlp-"))
    with servers.running("gravixd", workdir) as server:
        # Warm-up: imports, first segment, page cache.
        _run_clients(server.http_port, path, body, 0.5, connections)
        cpu_before = server.cpu_seconds()
        ok, failed, elapsed = _run_clients(server.http_port, path, body, seconds, connections)
        cpu_s = server.cpu_seconds() - cpu_before
    return {
        "path": path,
        "records": records,
        "body_bytes": len(body),
        "requests_ok": ok,
        "failed": failed,
        "records_per_second": round(ok * records / elapsed),
        "records_per_server_cpu_second": round(ok * records / cpu_s) if cpu_s else None,
        "server_cpu_share": round(cpu_s / elapsed, 2),
    }


def _run_clients(
    port: int, path: str, body: bytes, seconds: float, connections: int
) -> tuple[int, int, float]:
    stop, counts = threading.Event(), [0, 0]
    threads = [
        threading.Thread(target=_client, args=(port, path, body, stop, counts))
        for _ in range(connections)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return counts[0], counts[1], time.perf_counter() - start


def http_cases(spans: int, seconds: float, connections: int) -> list[dict[str, Any]]:
    facts = make_facts(spans)
    bodies = [
        ("/v1/traces", traces_body(facts)),
        ("/v1/facts", facts_body(facts)),
        ("/v1/logs", logs_body(facts)),
        ("/v1/events", events_body(facts)),
    ]
    return [http_case(path, body, spans, seconds, connections) for path, body in bodies]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per case (default 3)")
    parser.add_argument("--spans", type=int, default=1000, help="records per body (default 1000)")
    parser.add_argument("--connections", type=int, default=8, help="HTTP clients (default 8)")
    parser.add_argument("--cases", default="decode,http", help="decode, http or both (default)")
    args = parser.parse_args(argv)
    wanted = set(args.cases.split(","))
    doc: dict[str, Any] = {
        "machine": machine.describe(),
        "loadavg_before": os.getloadavg()[0],
        "seconds": args.seconds,
    }
    if "decode" in wanted:
        doc["decode"] = decode_cases(args.spans, args.seconds)
        for row in doc["decode"]:
            rate = row["records_per_cpu_second"]
            print(f"decode {row['signal']:6} {row['path']:24} {rate:>10,} records/CPU-s")
    if "http" in wanted:
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {int(servers.LOAD_CPU)})  # the client on the load core
        doc["http"] = http_cases(args.spans, args.seconds, args.connections)
        for row in doc["http"]:
            print(
                f"http   {row['path']:11} {row['records_per_second']:>10,} records/s  "
                f"{row['records_per_server_cpu_second'] or 0:>10,} per server CPU-s  "
                f"(server core {row['server_cpu_share']:.0%} busy, {row['failed']} failed)"
            )
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
