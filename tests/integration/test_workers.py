"""`workers = N`: one supervisor, N worker processes on shared listeners, real processes.

What users rely on: every acknowledged event stored once whatever happens to a worker (kill
-9 under load, SIGTERM), one /metrics that counts the whole instance, a spool left by a run
with another number of workers delivered, READY=1 only once every worker can serve.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon, column, read_store, wait_for


def serving_event(daemon: Daemon) -> dict[str, Any]:
    return next(e for e in daemon.log_events() if e.get("event") == "serving")


def events_named(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    return [e for e in daemon.log_events() if e.get("event") == name]


def post_fact(port: int, trace_id: str) -> int:
    """One request on a new connection (so the kernel picks a worker for each)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = json.dumps({"service": "workers", "trace_id": trace_id}).encode()
        conn.request("POST", "/v1/facts", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


class Load:
    """Clients posting one fact a request until stopped; remembers what got a 202."""

    def __init__(self, port: int, clients: int = 3) -> None:
        self.port = port
        self.acked: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)
        ]

    def _run(self, client: int) -> None:
        n = 0
        while not self._stop.is_set():
            trace_id = f"c{client}-{n:06d}"
            n += 1
            try:
                status = post_fact(self.port, trace_id)
            except OSError:  # a worker killed mid-request, or the listeners closed
                self.failed += 1
                time.sleep(0.01)
                continue
            if status == 202:
                self.acked.append(trace_id)
            else:
                self.failed += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def stored_once(daemon: Daemon, acked: list[str]) -> None:
    """Every acknowledged id is in the store exactly once, and no id is there twice."""
    stored = collections.Counter(column(read_store(daemon.store_dir, "facts"), "trace_id"))
    assert acked, "the load got some 202s"
    missing = [t for t in acked if stored[t] == 0]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:5]}"
    twice = [t for t, n in stored.items() if n > 1]
    assert not twice, f"stored twice: {twice[:5]}"


def open_segments(daemon: Daemon, worker: int) -> set[str]:
    folder = daemon.spool_dir / f"worker-{worker}" / "open" / "facts"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Daemon]:
    with Daemon(tmp_path, "--workers=2") as daemon:
        yield daemon


def test_metrics_sum_over_workers_and_sigterm_drains_every_acknowledged_event(
    two_workers: Daemon,
) -> None:
    daemon = two_workers
    assert serving_event(daemon)["workers"] == 2
    sent = 60
    for i in range(sent):
        assert post_fact(daemon.http_port, f"m{i:03d}") == 202
        with socket.create_connection(("127.0.0.1", daemon.tcp_ports[0]), timeout=10) as sock:
            sock.sendall(json.dumps({"service": "workers", "trace_id": f"t{i:03d}"}).encode())
            sock.sendall(b"\n")
    # Both workers took some (each spools in its own folder), and /metrics counts them all.
    assert open_segments(daemon, 0) and open_segments(daemon, 1)
    assert daemon.metric("ingestion_requests_total", endpoint="/v1/facts", code="202") == sent
    wait_for(
        lambda: (
            daemon.metric("ingestion_events_accepted_total", stream="facts", source="tcp") == sent
        ),
        what="every TCP line counted",
    )
    assert daemon.metric("gravixd_workers_ready") == 2
    # Values a worker reads at scrape time reach the merged /metrics too (refreshed each
    # second): the open segments' bytes of both workers.
    wait_for(lambda: daemon.metric("spool_bytes") > 0, what="spool_bytes from the workers")
    assert daemon.metric("gravixd_ready") == 1
    assert daemon.side_get("/readyz") == (200, b"ready\n")
    status, text = daemon.side_get("/metrics")
    assert text.count(b"# TYPE ingestion_requests_total counter") == 1  # one family, merged

    # SIGHUP reaches every worker.
    daemon.signal(signal.SIGHUP)
    wait_for(
        lambda: len(events_named(daemon, "reloaded")) == 2, timeout=60, what="two workers reloaded"
    )
    assert {e["worker"] for e in events_named(daemon, "reloaded")} == {0, 1}  # lines tagged

    # SIGTERM under load: everything acknowledged is stored, once.
    with Load(daemon.http_port) as load:
        wait_for(lambda: len(load.acked) > 50, what="load acknowledged")
        assert daemon.stop() == 0
    assert len(events_named(daemon, "drained")) == 2
    acked = [f"m{i:03d}" for i in range(sent)] + load.acked
    stored_once(daemon, acked)
    tcp = column(read_store(daemon.store_dir, "facts"), "trace_id")
    assert sorted(t for t in tcp if t.startswith("t")) == [f"t{i:03d}" for i in range(sent)]


def test_a_worker_killed_under_load_loses_nothing_acknowledged_and_comes_back(
    two_workers: Daemon,
) -> None:
    daemon = two_workers
    victim = serving_event(daemon)["worker_pids"][0]
    with Load(daemon.http_port) as load:
        wait_for(lambda: len(load.acked) > 30, what="load acknowledged")
        before = open_segments(daemon, 0)
        os.kill(victim, signal.SIGKILL)
        died = wait_for(
            lambda: events_named(daemon, "worker_died"), timeout=60, what="worker_died logged"
        )
        assert died[0]["worker"] == 0 and died[0]["code"] == -signal.SIGKILL
        wait_for(
            lambda: [
                e
                for e in events_named(daemon, "worker_started")
                if e["worker"] == 0 and e["pid"] != victim
            ],
            timeout=60,
            what="worker 0 restarted",
        )
        wait_for(
            lambda: daemon.metric("gravixd_workers_ready") == 2, timeout=60, what="both ready again"
        )
        # It serves: the new worker 0 opens segments of its own in its spool.
        wait_for(
            lambda: open_segments(daemon, 0) - before, timeout=60, what="new worker 0 taking events"
        )
        acked_at_restart = len(load.acked)
        wait_for(lambda: len(load.acked) > acked_at_restart + 30, timeout=60, what="load goes on")
    assert daemon.metric("gravixd_worker_restarts_total", worker="0") == 1
    assert daemon.stop() == 0
    stored_once(daemon, load.acked)


@pytest.mark.parametrize(
    ("left_in", "workers"),
    [
        ("worker-2", 2),  # a run with 3 workers, now 2
        ("", 2),  # a single process (workers = 1), now 2 workers
        ("worker-1", 1),  # a run with 2 workers, now a single process
    ],
)
def test_a_spool_left_by_another_number_of_workers_is_delivered(
    tmp_path: Path, left_in: str, workers: int
) -> None:
    spool = tmp_path / "spool"
    store = f"file://{tmp_path / 'store'}"
    # The earlier run: a single process on the left spool, killed with acknowledged events.
    earlier = Daemon(tmp_path / "earlier", f"--spool-dir={spool / left_in}", store_url=store)
    with earlier:
        ids = [f"o{i:03d}" for i in range(20)]
        for trace_id in ids:
            assert post_fact(earlier.http_port, trace_id) == 202
        earlier.kill()
    assert any((spool / left_in / "open" / "facts").iterdir())
    now = Daemon(tmp_path / "now", f"--spool-dir={spool}", f"--workers={workers}", store_url=store)
    with now:
        adopted = wait_for(
            lambda: events_named(now, "spool_adopted"), timeout=60, what="spool adopted"
        )
        assert adopted[0]["orphan"] == str(spool / left_in).rstrip("/")
        assert now.stop() == 0
    assert sorted(column(read_store(tmp_path / "store", "facts"), "trace_id")) == ids
    if left_in:
        assert not (spool / left_in).exists(), "an emptied orphan spool is removed"


def test_workers_zero_starts_one_per_cpu(tmp_path: Path) -> None:
    nproc = len(os.sched_getaffinity(0))
    with Daemon(tmp_path, "--workers=0") as daemon:
        assert serving_event(daemon)["workers"] == nproc
        assert len(set(serving_event(daemon)["worker_pids"])) == nproc
        assert daemon.metric("gravixd_workers_ready") == nproc


def test_ready_1_comes_once_every_worker_is_ready(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    daemon = Daemon(tmp_path, "--workers=2", env={"NOTIFY_SOCKET": path})
    try:
        with daemon:

            def receive() -> str:
                while (message := sock.recv(4096).decode()) == "WATCHDOG=1":
                    pass  # a runner's own WATCHDOG_USEC may arm the supervisor's pings
                return message

            messages = [receive()]
            # At the first READY=1 every worker had said it is ready.
            assert messages == ["READY=1"]
            assert daemon.side_get("/readyz") == (200, b"ready\n")
            assert len(events_named(daemon, "worker_serving")) == 2
            daemon.stop()
            while messages[-1] != "STOPPING=1":
                messages.append(receive())
            # One READY=1 in all: the workers never wrote to NOTIFY_SOCKET themselves.
            assert messages == ["READY=1", "STATUS=serving with 2 workers", "STOPPING=1"]
    finally:
        sock.close()


@pytest.mark.parametrize("holder_reuse_port", [False, True])
def test_a_port_clash_fails_before_any_spool_is_touched(
    tmp_path: Path, holder_reuse_port: bool
) -> None:
    taken = socket.socket()
    # A holder with SO_REUSEPORT too (another `reuse_port` instance): workers share their
    # own sockets, not the address with another process unless `reuse_port` says so.
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, holder_reuse_port)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        daemon = Daemon(tmp_path, "--workers=2", f"--http-listen=127.0.0.1:{port}")
        done = subprocess.run(
            daemon.command(), capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
    finally:
        taken.close()
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"http_listen 127.0.0.1:{port}: address in use" in lines[0]
    assert not any(p.name.startswith("worker-") for p in daemon.spool_dir.glob("*"))


def gone(pid: int) -> bool:
    """Exited (a zombie no one reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_workers_drain_by_themselves_when_the_supervisor_is_killed(two_workers: Daemon) -> None:
    daemon = two_workers
    pids = serving_event(daemon)["worker_pids"]
    ids = [f"s{i:03d}" for i in range(30)]
    for trace_id in ids:
        assert post_fact(daemon.http_port, trace_id) == 202
    daemon.kill()  # SIGKILL: nothing forwards a signal to the workers
    wait_for(lambda: all(gone(pid) for pid in pids), timeout=60, what="workers exited")
    assert len(events_named(daemon, "supervisor_gone")) == 2
    assert len(events_named(daemon, "drained")) == 2
    stored_once(daemon, ids)
