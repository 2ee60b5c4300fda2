"""Raw TCP's limits, held by a real daemon process: idle connections time out, so they cannot
keep HTTP out of the shared `max_connections`; partial lines and frames are held within
`max_in_flight_bytes`, so peak RSS stays near baseline + the cap, and closing gives it back.

Before: 64 idle raw TCP connections locked HTTP out for good (0 of 30 posts in 30 s); 600
connections each holding a partial protobuf frame took 2,490 MiB, 1,000 with partial NDJSON
lines 1,057 MiB (still 1,079 MiB after they closed), while the in-flight gauge read 0.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from pathlib import Path

import pytest
from daemon import Daemon, vm_kib, wait_for

from gravixd.core.framing import encode_varint
from gravixd.runtime.tcp_server import RECEIVE_BYTES

MiB = 1 << 20


def test_idle_raw_tcp_connections_time_out_and_http_gets_in(tmp_path: Path) -> None:
    with Daemon(tmp_path, "--max-connections=64", "--idle-timeout-seconds=5") as d:
        idle = [socket.create_connection(("127.0.0.1", d.tcp_ports[0])) for _ in range(64)]
        try:
            wait_for(
                lambda: d.metric("ingestion_connections_open", source="tcp") == 64,
                what="64 raw TCP connections open",
            )
            refused = d.metric("ingestion_connections_rejected_total", source="http")
            with contextlib.suppress(OSError, http.client.HTTPException):
                d.post("/v1/facts", b'{"service":"s"}')
            assert d.metric("ingestion_connections_rejected_total", source="http") > refused

            def posted() -> bool:
                try:
                    return d.post("/v1/facts", b'{"service":"s"}')[0] == 202
                except (OSError, http.client.HTTPException):
                    return False

            wait_for(posted, timeout=30, interval=0.5, what="an HTTP post accepted")
            for sock in idle:  # each was closed by the daemon
                sock.settimeout(30)
                assert sock.recv(1) == b""
            assert d.metric("ingestion_tcp_closed_connections_total", reason="idle_timeout") == 64
        finally:
            for sock in idle:
                sock.close()


PROTOBUF_LISTENER = """
[[tcp_listeners]]
listen = "127.0.0.1:0"
stream = "facts"
framing = "protobuf"
"""
CONNECTIONS = 64
CAP_MIB = 32
PARTIAL_BYTES = 3 * MiB  # of a 4 MiB frame (tcp_max_frame_bytes) that never ends


def _partial(framing: str) -> bytes:
    if framing == "protobuf":
        return (
            encode_varint(4 * MiB - 8)
            + b"\x12"
            + encode_varint(4 * MiB - 16)
            + (b"x" * PARTIAL_BYTES)
        )
    return b'{"service":"' + b"x" * PARTIAL_BYTES  # a line under its limit, never ended


@pytest.mark.parametrize("framing", ["protobuf", "ndjson"])
def test_partial_units_are_held_within_max_in_flight_bytes(tmp_path: Path, framing: str) -> None:
    config = tmp_path / "gravixd.toml"
    config.write_text(PROTOBUF_LISTENER)
    with Daemon(
        tmp_path / "d",
        "--config", str(config),
        "--log-level=info",
        f"--max-in-flight-bytes={CAP_MIB}MiB",
        "--idle-timeout-seconds=600",  # they must stay open while measured
        "--tcp-max-line-bytes=4MiB",  # lines as long as the frames
    ) as d:  # fmt: skip
        assert d.proc is not None
        port = d.tcp_ports[1] if framing == "protobuf" else d.tcp_ports[0]
        baseline_kib = vm_kib(d.proc.pid, "VmHWM")
        partial = _partial(framing)
        sockets = []
        try:
            for _ in range(CONNECTIONS):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.settimeout(0.5)
                # Loopback buffers take a few MiB; past the cap the daemon reads no more.
                with contextlib.suppress(TimeoutError):
                    sock.sendall(partial)
                sockets.append(sock)
            cap = CAP_MIB * MiB
            wait_for(
                lambda: d.metric("ingestion_in_flight_bytes") > cap - len(partial),
                what="the partial units counted in the in-flight gauge",
            )
            time.sleep(1)  # let whatever still reads settle
            held = d.metric("ingestion_in_flight_bytes")
            # Over the cap by at most the reads under way when it filled (256 KiB each) and
            # the unit of the one connection whose turn it is past the cap.
            assert held <= cap + CONNECTIONS * RECEIVE_BYTES + 4 * MiB
            peak_mib = (vm_kib(d.proc.pid, "VmHWM") - baseline_kib) / 1024
            sent_mib = CONNECTIONS * len(partial) / MiB
            print(f"{framing}: {CONNECTIONS} x {len(partial) / MiB:.2f} MiB partial units "
                  f"({sent_mib:.0f} MiB), cap {CAP_MIB} MiB: peak RSS +{peak_mib:.0f} MiB, "
                  f"gauge {held / MiB:.1f} MiB")  # fmt: skip
            assert peak_mib < CAP_MIB + 48, peak_mib
        finally:
            for sock in sockets:
                sock.close()
        wait_for(
            lambda: d.metric("ingestion_in_flight_bytes") == 0,
            what="the in-flight count given back at close",
        )
        after_mib = (vm_kib(d.proc.pid, "VmRSS") - baseline_kib) / 1024
        print(f"{framing}: RSS after close +{after_mib:.0f} MiB over the baseline peak")
        assert after_mib < 32, after_mib
