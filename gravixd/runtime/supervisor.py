"""`gravixd serve` with `workers = N > 1`: a small supervisor of N worker processes.

The supervisor owns what is one per instance: the lock of `spool_dir`, the listening sockets,
the side port and systemd's notify socket. It binds every listener before the spool is
touched (a port clash is one line and exit 1), one socket a worker on each address with
SO_REUSEPORT, so the kernel spreads connections between workers as it does between
`reuse_port` instances, and keeps its copy of each: connections the kernel queues for a
worker that died wait in that socket's backlog for the restarted worker instead of being
reset. It then hands orphaned spools to live workers (spool_adopt.py), starts worker `i`
(`python -m gravixd` with the same flags and environment, spool `worker-{i}`, its sockets
inherited) and restarts any that exits with a growing backoff, logged and counted.

One /metrics for the instance: every process keeps its values in prometheus_client's
multiprocess files, in `{spool_dir}/metrics-multiproc` (emptied at start; a dead worker's live
gauges removed), merged by the side port. /readyz is ready when every worker says so;
READY=1 goes to systemd once all are. SIGTERM/SIGINT: stop, forward SIGTERM, wait for every
worker's drain, exit 0. SIGHUP is forwarded.

It must never read a request, touch a segment itself (only adoption renames files, before any
worker runs) or outlive its workers' drain by more than a grace period.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.multiprocess import mark_process_dead

from .. import __version__
from ..config import LoadedConfig, parse_listen
from ..errors import StartupError
from ..metrics import MULTIPROC_ENV, Metrics, enable_multiprocess
from .listeners import bind
from .sdnotify import SdNotifier
from .side_port import MAX_CONNECTIONS as SIDE_PORT_MAX_CONNECTIONS
from .side_port import serve_side_port
from .spool_adopt import adopt_orphans
from .spool_lock import SpoolLock
from .worker_link import ENV, STATUS_MAX_BYTES, WorkerLink, decode_status

__all__ = ["MULTIPROC_DIR_NAME", "supervise"]

log = logging.getLogger("gravixd.supervisor")

MULTIPROC_DIR_NAME: Final = "metrics-multiproc"
# A worker that dies is restarted after 0.5 s, then 1, 2, ... up to 30 s while it keeps
# dying; one that ran a minute or more was not crash-looping and starts again at 0.5 s.
_RESTART_INITIAL_SECONDS: Final = 0.5
_RESTART_MAX_SECONDS: Final = 30.0
_STABLE_SECONDS: Final = 60.0
# Past the workers' own drain deadline, how long to wait before SIGKILL: their store and
# spool need to close, and a Python process takes about a second to exit.
_DRAIN_GRACE_SECONDS: Final = 10.0
_SIGTERM_REPEAT_SECONDS: Final = 1.0
# A worker silent this long is stuck (it repeats its status every second): the same 30 s as
# the units' WatchdogSec. Its first line may take longer: imports, and a busy host.
WORKER_SILENCE_SECONDS: Final = 30.0
_FIRST_STATUS_SECONDS: Final = 120.0
# systemd's view of the workers: never handed on (workers report to the supervisor).
_SYSTEMD_ENV: Final = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@dataclass
class _Worker:
    index: int
    http: list[trio.SocketListener]
    tcp: list[list[trio.SocketListener]]
    process: trio.Process | None = None
    # None: ready; else why not ("starting", "not running", what the worker said).
    reason: str | None = "not started"
    starts: int = 0
    exited: trio.Event = field(default_factory=trio.Event)

    def sockets(self) -> list[trio.SocketListener]:
        return [*self.http, *(x for listeners in self.tcp for x in listeners)]


class _SupervisorMetrics:
    """The supervisor's own series; in the multiprocess files like every other value."""

    def __init__(self, workers: int) -> None:
        r = CollectorRegistry()  # never scraped: values reach /metrics through the files
        self.workers = Gauge(
            "gravixd_workers", "Worker processes configured.", multiprocess_mode="max", registry=r
        )
        self.workers.set(workers)
        self.workers_ready = Gauge(
            "gravixd_workers_ready",
            "Worker processes that say they are ready.",
            multiprocess_mode="max",  # only the supervisor writes it
            registry=r,
        )
        self.restarts = Counter(
            "gravixd_worker_restarts",
            "Worker processes restarted after they exited unasked, by worker index.",
            ["worker"],
            registry=r,
        )


class Supervisor:
    def __init__(
        self, loaded: LoadedConfig, argv: Sequence[str], environ: Mapping[str, str], count: int
    ) -> None:
        self.config = loaded.config
        self.count = count
        self.spool_dir = Path(self.config.spool_dir)
        self.argv = list(argv)
        self.environ = dict(environ)
        self.notifier = SdNotifier.from_environ(environ)
        self.state = "starting"
        self.stopping = trio.Event()
        self.all_ready = trio.Event()
        self.workers: list[_Worker] = []
        self.metrics: Metrics | None = None
        self.own: _SupervisorMetrics | None = None
        self.multiproc_dir = self.spool_dir / MULTIPROC_DIR_NAME
        self.reload_config: Callable[[], LoadedConfig] | None = None

    # --- start -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Raises StartupError (spool locked, a listener cannot bind) before any worker."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            lock = SpoolLock.acquire(self.spool_dir)
            try:
                metrics_listeners = await self._bind_all()
                try:
                    await self._serve(metrics_listeners, signals)
                finally:
                    for listener in metrics_listeners:
                        listener.socket.close()
                    self._close_worker_sockets()
            finally:
                lock.release()
        if self.notifier:
            self.notifier.close()

    async def _bind_all(self) -> list[trio.SocketListener]:
        from .app import tcp_specs

        config = self.config
        metrics: list[trio.SocketListener] = []
        try:
            metrics = await bind("metrics_listen", config.metrics_listen)
            http_address = config.http_listen
            tcp_addresses = [spec.listen for spec in tcp_specs(config)]
            if not config.reuse_port:
                # Our sockets carry SO_REUSEPORT, so they would silently join another
                # process's SO_REUSEPORT listener on the address: refuse a taken address as
                # a single process does, unless `reuse_port` asks for sharing.
                if http_address:
                    await _refuse_taken("http_listen", http_address)
                for spec in tcp_specs(config):
                    await _refuse_taken(spec.setting, spec.listen)
            for index in range(self.count):
                http = (
                    await bind("http_listen", http_address, reuse_port=True) if http_address else []
                )
                tcp = [
                    await bind(spec.setting, address, reuse_port=True)
                    for spec, address in zip(tcp_specs(config), tcp_addresses, strict=True)
                ]
                self.workers.append(_Worker(index, http, tcp))
                if index == 0:  # port 0 picked a port: every other worker joins that one
                    if http:
                        http_address = _with_port(http_address, _port(http))
                    tcp_addresses = [
                        _with_port(a, _port(ls)) for a, ls in zip(tcp_addresses, tcp, strict=True)
                    ]
        except StartupError:
            for listener in metrics:
                listener.socket.close()
            self._close_worker_sockets()
            raise
        return metrics

    def _close_worker_sockets(self) -> None:
        for worker in self.workers:
            for listener in worker.sockets():
                listener.socket.close()

    def _start_metrics(self) -> Metrics:
        """Empty the multiprocess folder (the lock is held: no process of another run writes
        there) and switch this process to it, before any worker starts."""
        shutil.rmtree(self.multiproc_dir, ignore_errors=True)
        self.multiproc_dir.mkdir(parents=True)
        enable_multiprocess(str(self.multiproc_dir))
        metrics = Metrics(multiprocess_dir=str(self.multiproc_dir))
        from .app import select_protobuf_decoder

        metrics.build_info.info(
            {"version": __version__, "decoder": select_protobuf_decoder(self.config)[1]}
        )
        self.own = _SupervisorMetrics(self.count)
        return metrics

    # --- serve -----------------------------------------------------------------------------

    def readiness(self) -> str | None:
        if self.state == "draining":
            return "draining"
        waiting = [w for w in self.workers if w.reason is not None]
        if not waiting:
            return None
        first = waiting[0]
        more = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
        return f"worker {first.index} of {self.count}: {first.reason}{more}"

    async def _serve(
        self, metrics_listeners: list[trio.SocketListener], signals: AsyncIterator[int]
    ) -> None:
        self.metrics = self._start_metrics()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                functools.partial(
                    serve_side_port,
                    metrics_listeners,
                    self.metrics,
                    self.readiness,
                    max_connections=SIDE_PORT_MAX_CONNECTIONS,
                )
            )
            await trio.to_thread.run_sync(adopt_orphans, self.spool_dir, self.count)
            async with trio.open_nursery() as workers:
                for worker in self.workers:
                    workers.start_soon(self._keep_running, worker)
                nursery.start_soon(self._announce, _port(metrics_listeners))
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        self._forward_reload()
                        continue
                    break
                await self._drain()
            nursery.cancel_scope.cancel()

    async def _announce(self, metrics_port: int) -> None:
        """Once every worker is ready: the `serving` line, READY=1, the watchdog."""
        await self.all_ready.wait()
        if self.state != "starting":
            return
        self.state = "serving"
        log.info(
            f"gravixd serving with {self.count} workers",
            extra={
                "event": "serving",
                "version": __version__,
                "workers": self.count,
                "worker_pids": [w.process.pid for w in self.workers if w.process],
                "http_port": _port(self.workers[0].http) if self.workers[0].http else None,
                "metrics_port": metrics_port,
                "tcp_ports": [_port(listeners) for listeners in self.workers[0].tcp],
                "reuse_port": True,
            },
        )
        if self.notifier:
            self.notifier.ready()
            self.notifier.status(f"serving with {self.count} workers")
            interval = self.notifier.watchdog_interval_seconds()
            while interval:
                self.notifier.watchdog()
                await trio.sleep(interval)

    def _worker_env(self, worker: _Worker, status_fd: int) -> dict[str, str]:
        env = {k: v for k, v in self.environ.items() if k not in _SYSTEMD_ENV}
        link = WorkerLink(
            index=worker.index,
            count=self.count,
            http_fds=[x.socket.fileno() for x in worker.http],
            tcp_fds=[[x.socket.fileno() for x in listeners] for listeners in worker.tcp],
            status_fd=status_fd,
            supervisor_pid=os.getpid(),
        )
        env[ENV] = link.to_env()
        env[MULTIPROC_ENV] = str(self.multiproc_dir)
        return env

    async def _keep_running(self, worker: _Worker) -> None:
        """Run worker `index` until the supervisor stops, restarting it when it exits."""
        backoff = _RESTART_INITIAL_SECONDS
        try:
            while not self.stopping.is_set():
                started = trio.current_time()
                try:
                    code: int | str = await self._run_once(worker)
                except OSError as exc:  # no process at all (EAGAIN, ENOMEM, EMFILE): retried
                    code = f"could not start: {exc}"
                if self.stopping.is_set():
                    log.info(
                        f"worker {worker.index} {_exit_text(code)}",
                        extra={"event": "worker_exited", "worker": worker.index, "code": code},
                    )
                    return
                if trio.current_time() - started >= _STABLE_SECONDS:
                    backoff = _RESTART_INITIAL_SECONDS
                assert self.own is not None
                self.own.restarts.labels(str(worker.index)).inc()
                log.error(
                    f"worker {worker.index} {_exit_text(code)}; restarting it in {backoff:g} s",
                    extra={
                        "event": "worker_died",
                        "worker": worker.index,
                        "code": code,
                        "restart_in_seconds": backoff,
                    },
                )
                with trio.move_on_after(backoff):
                    await self.stopping.wait()
                backoff = min(backoff * 2, _RESTART_MAX_SECONDS)
        finally:
            worker.exited.set()

    async def _run_once(self, worker: _Worker) -> int:
        read_fd, write_fd = os.pipe()
        try:
            worker.reason = "starting"
            env = self._worker_env(worker, write_fd)
            command = [sys.executable, "-m", "gravixd", *self.argv]
            pass_fds = [*(x.socket.fileno() for x in worker.sockets()), write_fd]
            process = await trio.lowlevel.open_process(command, env=env, pass_fds=pass_fds)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the worker's copy is the only writer: its exit is our EOF
        worker.process = process
        worker.starts += 1
        log.info(
            f"worker {worker.index} started",
            extra={"event": "worker_started", "worker": worker.index, "pid": process.pid},
        )
        try:
            async with trio.lowlevel.FdStream(read_fd) as status:
                await self._follow(worker, status)
            return await process.wait()
        finally:
            worker.reason = "not running"
            self._count_ready()
            worker.process = None
            # Its live gauges (in flight, spool bytes) leave the sums; counters stay.
            mark_process_dead(process.pid, str(self.multiproc_dir))  # type: ignore[no-untyped-call]

    async def _follow(self, worker: _Worker, status: trio.abc.ReceiveStream) -> None:
        """Read the worker's status lines until it closes the pipe (exits).

        A worker repeats its status every second; one silent for `WORKER_SILENCE_SECONDS`
        has a stuck event loop (what systemd's watchdog catches for a single process) and
        is killed, to be restarted: its spool keeps what it acknowledged.
        """
        buffer = b""
        allowance = _FIRST_STATUS_SECONDS
        while True:
            with trio.move_on_after(allowance):
                data = await status.receive_some(STATUS_MAX_BYTES)
                allowance = WORKER_SILENCE_SECONDS
                if not data:
                    return
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) >= STATUS_MAX_BYTES:
                    buffer = b""  # not a status line: drop it rather than grow
                for line in lines:
                    worker.reason = decode_status(line)
                self._count_ready()
                continue
            if worker.process is not None and worker.process.returncode is None:
                log.error(
                    f"worker {worker.index} sent nothing for {allowance:g} s: killed, to be"
                    " restarted",
                    extra={"event": "worker_hung", "worker": worker.index},
                )
                worker.reason = "not answering"
                self._count_ready()
                worker.process.kill()
            allowance = WORKER_SILENCE_SECONDS

    def _count_ready(self) -> None:
        ready = sum(w.reason is None for w in self.workers)
        if self.own is not None:
            self.own.workers_ready.set(ready)
        if ready == self.count:
            self.all_ready.set()

    # --- signals ---------------------------------------------------------------------------

    def _signal_workers(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signum)

    def _forward_reload(self) -> None:
        """SIGHUP: every worker reloads (and says so); the supervisor takes the log level."""
        log.info("reloading workers", extra={"event": "reload_forwarded"})
        if self.notifier:
            self.notifier.reloading()
        self._signal_workers(signal.SIGHUP)
        if self.reload_config is not None:
            try:
                level = self.reload_config().config.log_level
            except Exception:  # noqa: BLE001 - the workers log why; never fatal here
                pass
            else:
                logging.getLogger().setLevel(level.upper())
        if self.notifier:
            self.notifier.ready()

    async def _drain(self) -> None:
        """Every worker drains (stops accepting, finishes, seals, uploads); then exit."""
        self.state = "draining"
        self.stopping.set()
        deadline_seconds = self.config.drain_timeout_seconds + _DRAIN_GRACE_SECONDS
        log.info(
            "draining workers",
            extra={
                "event": "draining",
                "workers": self.count,
                "deadline_seconds": deadline_seconds,
            },
        )
        if self.notifier:
            self.notifier.stopping()
        # Our copies of the listeners go now: the kernel stops queueing connections for a
        # worker once that worker closes its own.
        self._close_worker_sockets()
        with trio.move_on_after(deadline_seconds) as waited:
            async with trio.open_nursery() as repeating:
                # Again each second: a worker still importing ignores it (worker_link.py).
                repeating.start_soon(self._repeat_sigterm)
                for worker in self.workers:
                    await worker.exited.wait()
                repeating.cancel_scope.cancel()
        if waited.cancelled_caught:
            log.error(
                "workers still running past the drain deadline: killed",
                extra={"event": "workers_killed"},
            )
            self._signal_workers(signal.SIGKILL)
            for worker in self.workers:
                await worker.exited.wait()

    async def _repeat_sigterm(self) -> None:
        while True:
            self._signal_workers(signal.SIGTERM)
            await trio.sleep(_SIGTERM_REPEAT_SECONDS)


async def _refuse_taken(setting: str, address: str) -> None:
    """StartupError if a socket of another process listens on `address` (whatever its
    options): a bind without SO_REUSEPORT, never listening, closed at once."""
    host, port = parse_listen(address)
    if port == 0:
        return
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
        )
    except OSError:
        return  # `bind` says it, naming the setting
    for family, type_, proto, _, sockaddr in infos:
        with socket.socket(family, type_, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartupError(f"{setting} {address}: address in use") from None
                return  # anything else: `bind` says it, naming the setting


def _port(listeners: list[trio.SocketListener]) -> int:
    port: int = listeners[0].socket.getsockname()[1]
    return port


def _with_port(address: str, port: int) -> str:
    host, _ = parse_listen(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _exit_text(code: int | str) -> str:
    """`exited with code 1`, `killed by SIGKILL`, or why it could not start."""
    if isinstance(code, str):
        return code
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def supervise(
    loaded: LoadedConfig,
    argv: Sequence[str],
    environ: Mapping[str, str],
    count: int,
    reload: Callable[[], LoadedConfig] | None = None,
) -> int:
    """Run the supervisor; returns the exit code (1: it could not start, said in one line).
    `reload` reads the configuration again on SIGHUP (the supervisor takes its log level)."""
    supervisor = Supervisor(loaded, argv, environ, count)
    supervisor.reload_config = reload
    try:
        trio.run(supervisor.run)
    except StartupError as exc:
        log.error(f"gravixd cannot start: {exc}", extra={"event": "startup_failed"})
        return 1
    return 0
