"""OTLP protobuf bodies cannot turn a few kilobytes into gigabytes: an 8 KB gzip
`ExportLogsServiceRequest` of empty LogRecords inflates to ~4 million records (2 bytes each
on the wire, a row each once decoded). Such a body used to reach 1.35-1.5 GiB of peak RSS on
its own, even with `--max-in-flight-bytes 32MiB`, and 32 clients of it 1.5 GiB. Records are
now counted as they are walked, against `otlp_max_records_per_request` (413, nothing
decoded past it) and the in-flight memory (503, retryable); a good client is still served.
"""

from __future__ import annotations

import gzip
import http.client
import threading
from collections import Counter
from pathlib import Path

import pytest
from daemon import Daemon, read_store, vm_kib
from google.rpc import status_pb2
from otlp_messages import log_record, logs_request

CLIENTS = 32
REQUESTS_PER_CLIENT = 2
MAX_BODY_BYTES = 8 << 20
# Measured with the C walker: ~110 MiB (the daemon's own baseline is ~90 MiB); with
# GRAVIXD_NATIVE=0 (upb after the cheap count): ~130 MiB. Before: 1,525 MiB.
RSS_BOUND_MIB = 400


def _length_delimited(field: int, payload: bytes) -> bytes:
    out, n = bytearray([field << 3 | 2]), len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def empty_records_body() -> bytes:
    """ResourceLogs { ScopeLogs { LogRecord {} x N } } filling MAX_BODY_BYTES, gzipped."""
    records = (MAX_BODY_BYTES - 16) // 2
    body = _length_delimited(1, _length_delimited(2, b"\x12\x00" * records))
    assert len(body) <= MAX_BODY_BYTES
    return gzip.compress(body, 9)


@pytest.mark.parametrize("native", ["1", "0"])
def test_a_gzip_body_of_empty_log_records_is_refused_early(tmp_path: Path, native: str) -> None:
    bomb = empty_records_body()
    assert len(bomb) < 10_000
    with Daemon(tmp_path, "--max-in-flight-bytes=32MiB", env={"GRAVIXD_NATIVE": native}) as d:
        assert d.proc is not None
        statuses: Counter[int] = Counter()
        messages: list[str] = []
        errors: list[str] = []
        start = threading.Barrier(CLIENTS)

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=120)
            start.wait()
            for _ in range(REQUESTS_PER_CLIENT):
                try:
                    conn.request(
                        "POST",
                        "/v1/logs",
                        bomb,
                        {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
                    )
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    errors.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=120)
                    continue
                statuses[response.status] += 1
                if response.status == 413:
                    messages.append(status_pb2.Status.FromString(body).message)
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        # Alone, it is always decoded (one request within the limits goes on): a 413.
        alone = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=120)
        alone.request(
            "POST",
            "/v1/logs",
            bomb,
            {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        )
        response = alone.getresponse()
        statuses[response.status] += 1
        messages.append(status_pb2.Status.FromString(response.read()).message)
        alone.close()
        peak_mib = vm_kib(d.proc.pid, "VmHWM") / 1024
        print(
            f"\nempty-records gzip, native={native}: {dict(statuses)}, peak RSS {peak_mib:.0f} MiB"
        )
        assert errors == []
        # Each answer is a refusal: 413 (too many records), or 503 while others hold memory.
        assert set(statuses) <= {413, 503} and statuses[413] >= 1, statuses
        assert response.status == 413
        assert "Expected at most 65536 log records in one" in messages[-1], messages[-1]
        assert peak_mib < RSS_BOUND_MIB, f"peak RSS {peak_mib:.0f} MiB"
        assert (
            d.metric(
                "ingestion_events_rejected_total",
                stream="events",
                source="otlp",
                reason="too_many_records",
            )
            == statuses[413]
        )
        # A normal exporter's batch still lands.
        good = logs_request([log_record(body="still served")]).SerializeToString()
        conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=60)
        conn.request("POST", "/v1/logs", good, {"Content-Type": "application/x-protobuf"})
        assert conn.getresponse().status == 200
        conn.close()
    assert read_store(d.store_dir, "events").column("message").to_pylist() == ["still served"]
