"""OTLP JSON cannot take memory past `max_in_flight_bytes`, however tiny its records.

A body of empty log records (`{}`, 3 bytes each) gzips to a few KB and decodes to ~350 bytes
of objects a record: 2.7M of them in 8 MiB took the daemon to ~1 GiB. The daemon now counts
a body's JSON objects before decoding it: a body that alone needs more than the budget is a
413 (no retry could succeed), bodies that fit wait their turn (503 + Retry-After), and RSS
stays near the baseline plus the budget. A real exporter's batch still goes through.
"""

from __future__ import annotations

import gzip
import http.client
import json
import threading
from collections import Counter
from pathlib import Path

from daemon import Daemon, vm_kib
from otlp_messages import log_record, logs_request, to_otlp_json

CAP_MIB = 32
# Under the cap alone (~60k objects x 350 B = 21 MiB), over it together.
FITTING_RECORDS = 60_000
CLIENTS = 12
# A generous bound: the baseline (~90-110 MiB) + the 32 MiB budget + allocator slack. The
# code before this test reached ~1 GiB with one such request.
RSS_BOUND_MIB = 400


def empty_records(count: int) -> bytes:
    body = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[' + b",".join([b"{}"] * count)
    return gzip.compress(body + b"]}]}]}", 9)


def post(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(
            "POST",
            "/v1/logs",
            body,
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_empty_otlp_json_records_cannot_take_memory_past_the_cap(tmp_path: Path) -> None:
    with Daemon(tmp_path, f"--max-in-flight-bytes={CAP_MIB}MiB") as d:
        assert d.proc is not None
        # One body that alone needs ~945 MiB to decode: refused before anything is built.
        status, body = post(d.http_port, empty_records(2_700_000))
        assert status == 413
        refusal = json.loads(body)  # a google.rpc.Status, as OTLP clients read
        assert refusal["code"] == 8  # RESOURCE_EXHAUSTED
        message = refusal["message"]
        assert message.startswith(
            f"Expected a body whose decoding fits max_in_flight_bytes={CAP_MIB << 20}"
        )
        assert "send smaller batches" in message
        assert (
            d.metric(
                "ingestion_events_rejected_total",
                stream="events",
                source="otlp",
                reason="too_large_to_decode",
            )
            == 1
        )

        # Many bodies that fit alone, at once: decoded in turn, the rest shed with 503.
        fitting = empty_records(FITTING_RECORDS)
        outcomes: Counter[int] = Counter()

        def client() -> None:
            outcomes[post(d.http_port, fitting)[0]] += 1

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert sum(outcomes.values()) == CLIENTS
        assert set(outcomes) <= {200, 503}, outcomes
        assert outcomes[200] >= 1
        peak_mib = vm_kib(d.proc.pid, "VmHWM") / 1024
        print(f"\npeak RSS {peak_mib:.0f} MiB; outcomes {dict(outcomes)}")
        assert peak_mib < RSS_BOUND_MIB

        # An exporter's ordinary batch is untouched by the count.
        records = [log_record(body=f"line {i}", attributes={"i": i}) for i in range(2000)]
        conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=60)
        conn.request(
            "POST",
            "/v1/logs",
            to_otlp_json(logs_request(records)),
            {"Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"{}")
        conn.close()
