"""A real gravixd daemon in a subprocess, for integration tests.

Every listener binds port 0 on 127.0.0.1; the bound ports are read from the daemon's
`serving` log line. The process is stopped only by its own PID.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

_START_TIMEOUT_SECONDS = 30.0


class Daemon:
    """`python -m gravixd serve` with its spool and store under `workdir`."""

    def __init__(
        self,
        workdir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        store_url: str | None = None,
        preexec_fn: Callable[[], None] | None = None,
        default_segment_format: bool = False,
    ) -> None:
        """`preexec_fn` runs in the child before gravixd (say, `resource.setrlimit`).
        `default_segment_format`: no `--segment-format` (the daemon's default, Parquet)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.spool_dir = self.workdir / "spool"
        self.store_dir = self.workdir / "store"
        self.store_url = store_url or f"file://{self.store_dir}"
        self.args = list(args)
        self.preexec_fn = preexec_fn
        self.default_segment_format = default_segment_format
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "gravixd.log"
        self.http_port = self.metrics_port = 0
        self.tcp_ports: list[int] = []
        self.starts = 0

    def command(self) -> list[str]:
        defaults = {
            "--http-listen": "127.0.0.1:0",
            "--metrics-listen": "127.0.0.1:0",
            "--tcp-listen": "127.0.0.1:0",
            "--spool-dir": str(self.spool_dir),
            "--store-url": self.store_url,
            "--log-level": "debug",
        }
        given = {a.split("=", 1)[0] for a in self.args if a.startswith("--")}
        if "--iceberg-catalog-uri" not in given and not self.default_segment_format:
            # The spool tests (damage, salvage, recovery, outages) look at Arrow IPC segments,
            # sealed in place; the default (Parquet) is held by the README, Iceberg and
            # segment-format tests, which say so.
            defaults["--segment-format"] = "arrow"
        cmd = [sys.executable, "-m", "gravixd", "serve"]
        for flag, value in defaults.items():
            if flag not in given:
                cmd += [flag, value]
        return cmd + self.args

    def start(self) -> Daemon:
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=log,
            env=self.env,
            cwd=self.workdir,
            preexec_fn=self.preexec_fn,
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            serving = self._find_log_event("serving", offset)
            if serving is not None:
                self.http_port = serving.get("http_port") or 0
                self.metrics_port = serving["metrics_port"]
                self.tcp_ports = serving.get("tcp_ports") or []
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"gravixd exited with {self.proc.returncode}:\n{self.log_text()}"
                )
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"gravixd did not start within {_START_TIMEOUT_SECONDS} s:\n{self.log_text()}"
        )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self, offset: int = 0) -> list[dict[str, Any]]:
        events = []
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            for line in f:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def _find_log_event(self, name: str, offset: int) -> dict[str, Any] | None:
        return next((e for e in self.log_events(offset) if e.get("event") == name), None)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (drain: seal and upload) and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop(timeout=30)

    # --- clients -------------------------------------------------------------------------

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)

    def post(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], Any]:
        conn = self.connection()
        try:
            conn.request("POST", path, body, {"Content-Type": content_type, **(headers or {})})
            response = conn.getresponse()
            data = response.read()
            return response.status, (json.loads(data) if data else {}), response.headers
        finally:
            conn.close()

    def side_get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, parsed by prometheus-client's own parser."""
        status, text = self.side_get("/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
        return samples

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


def read_store(store_dir: Path, stream: str) -> pa.Table:
    """Every row a local store holds for `stream`, from .arrow and .parquet segments."""
    from gravixd.schema import STREAMS

    tables = []
    for path in sorted((Path(store_dir) / stream).rglob("*")):
        if path.suffix == ".arrow":
            with pa.ipc.open_file(pa.memory_map(str(path))) as reader:
                tables.append(reader.read_all())
        elif path.suffix == ".parquet":
            tables.append(pq.read_table(path, schema=STREAMS[stream]))
    if not tables:
        return STREAMS[stream].empty_table()
    return pa.concat_tables(tables)


def column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist()


def sorted_rows(table: pa.Table, key: str = "trace_id") -> list[dict[str, Any]]:
    """Rows as dicts (timestamps as int nanoseconds), sorted by `key`, for equality checks."""
    table = table.set_column(
        table.schema.get_field_index("timestamp"),
        "timestamp",
        table.column("timestamp").cast(pa.int64()),
    )
    rows = table.to_pylist()
    for row in rows:
        row["attributes"] = sorted(row["attributes"])
    return sorted(rows, key=lambda r: r[key])


def wait_for(
    predicate: Any, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def vm_kib(pid: int, field: str) -> int:
    """A /proc/PID/status memory figure in KiB (VmRSS, VmHWM, ...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def free_port() -> int:
    """A port on 127.0.0.1 free now, for a config that cannot say port 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ndjson(items: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)
