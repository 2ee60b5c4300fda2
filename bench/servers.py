"""Start, watch and stop the servers under test: gravixd and its peers.

Every server binds 127.0.0.1 on a free port, runs pinned to one core (`taskset`), logs into
its own scratch directory, and is stopped by its PID with SIGTERM (SIGKILL after a grace
period). CPU seconds and peak RSS are read from /proc for the whole process tree (nginx does
its work in a child), so a figure is what the server cost, not the load generator.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .peers.nginx_peer import nginx_command

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_REPO = Path(__file__).resolve().parent.parent

# Cores: the server gets one, the load generator the other, so figures read "per core".
SERVER_CPU = "0"
LOAD_CPU = "1"

# gravixd_pure: gravixd with its C protobuf decoder switched off (`--no-native`), to show
# what the native path buys end to end.
SERVERS = ("gravixd", "gravixd_pure", "fastapi", "trio_h11", "nginx")


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (bind port 0, read it, close)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(argv: list[str], cpu: str | None) -> list[str]:
    """`argv` run under `taskset -c cpu` when there are cores to pin to."""
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return argv
    return ["taskset", "-c", cpu, *argv]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                kids.extend(int(k) for k in text.split())
    return kids


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` (all its threads) from /proc/PID/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    rest = stat[stat.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (the peak resident set) of `pid`, in bytes; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Server:
    """A running server under test."""

    name: str
    proc: subprocess.Popen[bytes]
    http_port: int
    workdir: Path
    metrics_port: int | None = None
    tcp_ports: dict[str, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _tree(self) -> list[int]:
        # taskset execs the server, so the PID is the server's own.
        return process_tree(self.proc.pid)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(p) for p in self._tree())

    def peak_rss_bytes(self) -> int:
        return max((peak_rss_bytes(p) for p in self._tree()), default=0)

    def metrics_text(self) -> str:
        if self.metrics_port is None:
            return ""
        status, body = http_get(self.metrics_port, "/metrics")
        return body.decode() if status == 200 else ""

    def stop(self, grace_seconds: float = 20.0) -> int | None:
        """SIGTERM by PID, SIGKILL after `grace_seconds`; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "server.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def http_get(port: int, path: str, timeout_seconds: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_seconds)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _wait_ready(server: Server, port: int, path: str, ok: set[int], timeout_seconds: float) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.proc.returncode} while starting:\n"
                + server.log_tail()
            )
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, _ = http_get(port, path, timeout_seconds=1.0)
            if status in ok:
                return
        time.sleep(0.05)
    server.stop()
    raise TimeoutError(
        f"{server.name} not ready on 127.0.0.1:{port}{path} after {timeout_seconds}s:\n"
        + server.log_tail()
    )


def _spawn(
    argv: list[str], workdir: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed with the process
    full_env = {**os.environ, "PYTHONPATH": str(_REPO), **(env or {})}
    try:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=full_env,
            start_new_session=True,
        )
    finally:
        log.close()


@dataclass(frozen=True)
class TcpListener:
    """A further raw-TCP listener for gravixd (DESIGN section 2)."""

    framing: str  # "ndjson" or "protobuf"
    stream: str = "facts"


def start_gravixd(
    workdir: Path,
    ack: str = "durable",
    tcp_framings: tuple[str, ...] = (),
    cpu: str | None = SERVER_CPU,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout_seconds: float = 30.0,
    http_port: int | None = None,
) -> Server:
    """Start `python -m gravixd serve` with a local spool and store under `workdir`.

    `tcp_framings` adds raw-TCP listeners ("ndjson" is the built-in `tcp_listen`; "protobuf"
    goes into a TOML config as a further listener); their ports land in `Server.tcp_ports`.
    `http_port` fixes the HTTP port (instances sharing one with `--reuse-port`).
    """
    http_port, metrics_port = http_port or free_port(), free_port()
    tcp_ports = {framing: free_port() for framing in tcp_framings}
    argv = [
        sys.executable,
        "-m",
        "gravixd",
        "serve",
        "--http-listen",
        f"127.0.0.1:{http_port}",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
        "--spool-dir",
        str(workdir / "spool"),
        "--store-url",
        f"file://{workdir / 'store'}",
        "--ack",
        ack,
    ]
    # The built-in listener is ndjson; disable it unless asked for, so that no fixed port
    # (5170) is bound by a benchmark.
    argv += ["--tcp-listen", f"127.0.0.1:{tcp_ports['ndjson']}" if "ndjson" in tcp_ports else ""]
    extra_listeners = [f for f in tcp_framings if f != "ndjson"]
    if extra_listeners:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "gravixd.toml"
        config.write_text(
            "".join(
                f'[[tcp_listeners]]\nlisten = "127.0.0.1:{tcp_ports[f]}"\n'
                f'stream = "facts"\nframing = "{f}"\n\n'
                for f in extra_listeners
            )
        )
        argv += ["--config", str(config)]
    argv += list(extra_args)
    server = Server(
        "gravixd",
        _spawn(pinned(argv, cpu), workdir, env),
        http_port,
        workdir,
        metrics_port=metrics_port,
        tcp_ports=tcp_ports,
    )
    _wait_ready(server, metrics_port, "/readyz", {200}, timeout_seconds)
    return server


def start_gravixd_instances(
    workdir: Path, count: int, ack: str = "durable", timeout_seconds: float = 30.0
) -> list[Server]:
    """`count` gravixd instances on one HTTP address (`--reuse-port`), each with its own spool,
    store and metrics port, instance i pinned to core i (modulo the cores there are)."""
    http_port = free_port()
    cores = os.cpu_count() or 1
    started: list[Server] = []
    try:
        for i in range(count):
            server = start_gravixd(
                workdir / f"instance-{i}",
                ack=ack,
                cpu=str(i % cores),
                extra_args=("--reuse-port",),
                timeout_seconds=timeout_seconds,
                http_port=http_port,
            )
            server.name = f"gravixd-{i}"
            started.append(server)
    except BaseException:
        for server in started:
            server.stop()
        raise
    return started


def start_fastapi(workdir: Path, fsync: bool = True, cpu: str | None = SERVER_CPU) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "bench.peers.fastapi_peer",
        "--port",
        str(port),
        "--out",
        str(workdir / "out"),
    ]
    if not fsync:
        argv.append("--no-fsync")
    server = Server("fastapi", _spawn(pinned(argv, cpu), workdir), port, workdir)
    _wait_ready(server, port, "/readyz", {200}, 30.0)
    return server


def start_trio_h11(workdir: Path, cpu: str | None = SERVER_CPU) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "bench.peers.trio_h11_peer", "--port", str(port)]
    server = Server("trio_h11", _spawn(pinned(argv, cpu), workdir), port, workdir)
    _wait_ready(server, port, "/", {200}, 30.0)
    return server


def start_nginx(workdir: Path, cpu: str | None = SERVER_CPU) -> Server:
    port = free_port()
    argv = nginx_command(workdir / "nginx", port)
    server = Server("nginx", _spawn(pinned(argv, cpu), workdir), port, workdir)
    _wait_ready(server, port, "/", {204}, 15.0)
    return server


def start(name: str, workdir: Path, **options: object) -> Server:
    """Start the server called `name` (one of SERVERS) with its scenario options."""
    if name == "gravixd":
        return start_gravixd(workdir, **options)  # type: ignore[arg-type]
    if name == "gravixd_pure":
        server = start_gravixd(workdir, extra_args=("--no-native",), **options)  # type: ignore[arg-type]
        server.name = name
        return server
    if name == "fastapi":
        return start_fastapi(workdir, **options)  # type: ignore[arg-type]
    if name == "trio_h11":
        return start_trio_h11(workdir)
    if name == "nginx":
        return start_nginx(workdir)
    raise ValueError(f"Expected a server in {SERVERS}, got `{name}`")


@contextlib.contextmanager
def running(name: str, workdir: Path, **options: object) -> Iterator[Server]:
    """A started server that is stopped (and its scratch directory removed) on exit."""
    server = start(name, workdir, **options)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
