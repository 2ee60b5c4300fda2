"""File descriptors and connection budgets, against the real daemon.

Running out of descriptors used to take the daemon down (EMFILE escaped the HTTP accept
loop); `max_connections` was a cap per listener, not one budget. Now: the soft
RLIMIT_NOFILE is raised at start and the caps fitted to it, HTTP and raw TCP share one
budget, the side port has its own small one, and the daemon serves on after a flood of idle
connections is gone."""

from __future__ import annotations

import resource
import selectors
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daemon import Daemon, wait_for

EVENT = b'{"service":"fd"}'
# The daemon's own descriptor limit in these tests, soft and hard: raising cannot help.
FD_LIMIT = 256


def limit_fds(soft: int, hard: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(autouse=True)
def enough_fds_for_the_clients() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048 <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))


def fd_limits_event(d: Daemon) -> dict:
    return next(e for e in d.log_events() if e.get("event") == "fd_limits")


def connect(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


def count_closed_by_server(socks: list[socket.socket], at_least: int, timeout: float = 60) -> int:
    """Wait until the daemon has closed `at_least` of `socks` (read EOF); returns how many."""
    closed: set[socket.socket] = set()
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(closed) < at_least and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(1)
                except ConnectionResetError:  # closed with SO_LINGER 0: a reset, not a FIN
                    data = b""
                if data == b"":
                    closed.add(sock)
                    selector.unregister(sock)
    return len(closed)


def accepted(d: Daemon) -> bool:
    """Whether a POST gets its 202 (a connection refused while the budget is spent is reset)."""
    try:
        return d.post("/v1/facts", EVENT)[0] == 202
    except OSError:
        return False


def test_a_flood_of_idle_connections_past_the_fd_limit_is_survived(tmp_path: Path) -> None:
    d = Daemon(tmp_path, preexec_fn=limit_fds(FD_LIMIT, FD_LIMIT))
    with d:
        plan = fd_limits_event(d)
        assert plan["nofile_soft"] == FD_LIMIT
        budget, side_budget = plan["max_connections"], plan["side_port_max_connections"]
        assert budget + side_budget < FD_LIMIT < 1024  # 1024: the configured default
        side = connect(d.metrics_port, side_budget + 8)
        http = connect(d.http_port, 200)
        tcp = connect(d.tcp_ports[0], 100)
        # Everything past the budgets was accepted and closed at once, counted.
        assert count_closed_by_server(http + tcp, 300 - budget) >= 300 - budget
        assert count_closed_by_server(side, 8) >= 8
        assert d.proc is not None and d.proc.poll() is None
        for sock in side + http + tcp:
            sock.close()

        # Serving as before once the flood is gone.
        wait_for(lambda: accepted(d), what="a 202 after the flood")
        rejected = d.metric("ingestion_connections_rejected_total", source="http")
        rejected += d.metric("ingestion_connections_rejected_total", source="tcp")
        assert rejected >= 300 - budget
        assert d.metric("ingestion_connections_rejected_total", source="side_port") >= 8
    assert d.proc.returncode == 0


def test_the_soft_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    with Daemon(tmp_path, preexec_fn=limit_fds(FD_LIMIT, 4096)) as d:
        plan = fd_limits_event(d)
        assert (plan["nofile_soft"], plan["nofile_hard"]) == (4096, 4096)
        assert plan["max_connections"] == 1024  # the default fits now


def test_one_connection_budget_across_http_and_tcp(tmp_path: Path) -> None:
    with Daemon(tmp_path, "--max-connections", "50") as d:
        http = connect(d.http_port, 30)
        tcp = connect(d.tcp_ports[0], 20)
        wait_for(
            lambda: (
                d.metric("ingestion_connections_open", source="http") == 30
                and d.metric("ingestion_connections_open", source="tcp") == 20
            ),
            what="50 connections open",
        )
        late_tcp, late_http = connect(d.tcp_ports[0], 1) + connect(d.http_port, 1)
        assert count_closed_by_server([late_tcp, late_http], 2) == 2
        # The side port has its own budget: scrapes still answer.
        assert d.metric("ingestion_connections_rejected_total", source="tcp") == 1
        assert d.metric("ingestion_connections_rejected_total", source="http") == 1
        for sock in [*http, *tcp, late_tcp, late_http]:
            sock.close()
        wait_for(lambda: accepted(d), what="a 202 after closing")
