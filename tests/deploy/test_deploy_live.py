"""Deployment artifacts against a real gravixd: promtool on a live scrape, a real Prometheus
server scraping gravixd under load and answering every dashboard query, systemd's notify
protocol as a service manager sees it, and the image's healthcheck script."""

from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon, free_port, wait_for
from deploy_helpers import ROOT, concrete_promql, dashboard_targets, require_tool

# Prometheus scrapes every second; Grafana's $__rate_interval is then 4 scrapes at least.
SCRAPE_INTERVAL = "1s"
RATE_WINDOW = "5s"
LOAD_SECONDS = 8.0

FACTS = json.dumps(
    [{"service": "api", "route": "/x", "method": "GET", "status_code": 200, "duration_ms": 1.5}]
    * 20
).encode()
EVENTS = json.dumps([{"service": "api", "kind": "deploy", "severity": "INFO"}] * 5).encode()
BAD = b'[{"service": "api", "status_code": "two hundred"}]'


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    # Segments rotate every second so that seals and uploads happen within the test.
    with Daemon(tmp_path / "gravixd", "--segment-max-age-seconds", "1") as running:
        yield running


class _Load:
    """Posts good, bad and event batches from a thread until stopped (bounded in time)."""

    def __init__(self, daemon: Daemon, max_seconds: float) -> None:
        self.daemon, self.max_seconds = daemon, max_seconds
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            for path, body in (("/v1/facts", FACTS), ("/v1/events", EVENTS), ("/v1/facts", BAD)):
                status = self.daemon.post(path, body)[0]
                self.codes[status] = self.codes.get(status, 0) + 1
            time.sleep(0.02)

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.mark.prometheus
def test_promtool_checks_a_live_scrape(daemon: Daemon) -> None:
    promtool = require_tool("promtool")
    with _Load(daemon, max_seconds=2.0) as load:
        wait_for(lambda: load.codes.get(202, 0) >= 10 and load.codes.get(400), what="load")
    wait_for(lambda: daemon.metric("upload_segments_total", stream="facts") > 0, what="upload")
    status, text = daemon.side_get("/metrics")
    assert status == 200
    assert b"ingestion_requests_total{" in text
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert done.returncode == 0 and not done.stdout and not done.stderr, (
        done.stdout.decode() + done.stderr.decode()
    )


class _Prometheus:
    """Debian's prometheus server as a subprocess we own, stopped by its PID."""

    def __init__(self, workdir: Path, target_port: int) -> None:
        self.workdir = workdir
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_INTERVAL}\n"
            "scrape_configs:\n"
            "  - job_name: gravixd\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
            # A second job, as every real Prometheus has: its `up` is not a gravixd's.
            "  - job_name: prometheus\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{self.port}']\n"
        )
        self.argv = [
            require_tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Prometheus:
        log = open(self.workdir / "prometheus.log", "wb")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, cwd=self.workdir)
        log.close()
        wait_for(self._ready, timeout=60, interval=0.2, what="prometheus /-/ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError((self.workdir / "prometheus.log").read_text())
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                return True
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


@pytest.mark.prometheus
@pytest.mark.slow
def test_every_dashboard_query_returns_data_from_prometheus(daemon: Daemon, tmp_path: Path) -> None:
    targets = dashboard_targets()
    with (
        _Prometheus(tmp_path, daemon.metrics_port) as prometheus,
        _Load(daemon, max_seconds=LOAD_SECONDS + 20) as load,
    ):
        wait_for(
            lambda: prometheus.query('up{job="gravixd"} == 1'), timeout=20, what="first scrape"
        )
        time.sleep(LOAD_SECONDS)  # several scrapes, seals and uploads under load
        empty = []
        for title, expr in targets:
            promql = concrete_promql(expr, RATE_WINDOW)
            result = prometheus.query(promql)
            if not _finite(result):
                empty.append(f"{title}: {promql} -> {result}")
    assert load.codes.get(202, 0) > 50 and load.codes.get(400, 0) > 0, load.codes
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_notify_socket_sees_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    """systemd's side of Type=notify with WatchdogSec: a datagram socket in NOTIFY_SOCKET."""
    short_dir = Path(tempfile.mkdtemp(prefix="gx-notify-", dir="/tmp"))  # sun_path is short
    address = str(short_dir / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(10)
    # WATCHDOG_USEC=400 ms: the daemon must ping every 200 ms.
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
    daemon = Daemon(tmp_path / "gravixd", env=env)
    try:
        daemon.start()
        seen: list[str] = []

        def receive_until(message: str) -> None:
            while message not in seen:
                seen.extend(listener.recv(4096).decode().split("\n"))

        receive_until("READY=1")
        started = time.monotonic()
        seen.clear()
        receive_until("WATCHDOG=1")
        seen.clear()
        receive_until("WATCHDOG=1")
        assert time.monotonic() - started < 2.0  # pings keep coming, well inside 400 ms each
        daemon.signal(signal.SIGTERM)
        receive_until("STOPPING=1")
        assert daemon.proc is not None and daemon.proc.wait(timeout=60) == 0
    finally:
        daemon.kill()
        listener.close()
        shutil.rmtree(short_dir, ignore_errors=True)


def test_image_healthcheck_script_against_the_daemon(daemon: Daemon) -> None:
    script = ROOT / "deploy/container/healthcheck.py"
    env = {"GRAVIXD_METRICS_LISTEN": f"0.0.0.0:{daemon.metrics_port}"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_ready_gauge_is_current_on_a_scrape(daemon: Daemon) -> None:
    """The dashboard's Ready panel reads gravixd_ready: it must say 1 while serving even
    where nothing calls /readyz (systemd hosts, plain Prometheus)."""
    assert daemon.metric("gravixd_ready") == 1.0


@pytest.mark.prometheus
def test_instances_up_counts_gravixd_not_every_scrape_job(daemon: Daemon, tmp_path: Path) -> None:
    """The "Instances up" panel, with `$job` expanded as Grafana's "All" does (the jobs that
    `label_values(gravixd_build_info, job)` lists), says 1 for one gravixd although
    Prometheus scrapes two jobs (it said 2)."""
    (expr,) = [e for title, e in dashboard_targets() if title == "Instances up"]
    with _Prometheus(tmp_path, daemon.metrics_port) as prometheus:
        wait_for(lambda: len(prometheus.query("up == 1")) == 2, timeout=30, what="two targets up")
        jobs = {s["metric"]["job"] for s in prometheus.query("group by (job) (gravixd_build_info)")}
        assert jobs == {"gravixd"}
        promql = concrete_promql(expr)  # $job: "gravixd", as `jobs` says
        (series,) = prometheus.query(promql)
        assert float(series["value"][1]) == 1.0, (promql, series)
