"""What a supervisor and one of its workers (`workers = N`) tell each other, and nothing else.

Down, at exec: one environment variable (`_GRAVIXD_WORKER`, JSON) naming the worker's index,
the inherited listening sockets (descriptors, in the order of the configuration's
listeners) and the write end of its status pipe. The worker reads the same configuration as
the supervisor (same flags, same environment) and takes its share with `worker_share`.
Up, while it runs: one line on the status pipe each time its readiness changes and every
second (`ready`, or `not ready: <why>`); end of file means the worker is gone, silence means
its event loop is stuck. Workers never speak to systemd's
NOTIFY_SOCKET: the supervisor says READY=1 once every worker said `ready`.

It must never carry events or metrics (those go to the store and to the multiprocess files),
and a line never exceeds `STATUS_MAX_BYTES`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import msgspec
import trio

from ..config import Config
from ..metrics import Metrics
from .spool_adopt import worker_spool_dir

__all__ = [
    "ENV",
    "STATUS_MAX_BYTES",
    "WorkerLink",
    "decode_status",
    "prepare_worker",
    "encode_status",
    "report_to_supervisor",
    "resolve_workers",
    "tag_logs",
    "worker_share",
]

log = logging.getLogger("gravixd.worker")

# Not `GRAVIXD_…`: every such name must be a configuration key (config.py rejects others).
ENV: Final = "_GRAVIXD_WORKER"
STATUS_MAX_BYTES: Final = 1024
# Readiness is polled this often: a probe sees a worker's change within it, and READY=1
# comes at most this long after the last worker can serve. Costs a few µs a poll.
_POLL_SECONDS: Final = 0.1
# The status is repeated this often (the supervisor kills a worker silent for 30 s: a stuck
# event loop), and values read at scrape time reach the merged /metrics at most this late.
_HEARTBEAT_SECONDS: Final = 1.0


@dataclass(frozen=True)
class WorkerLink:
    index: int
    count: int
    http_fds: list[int]
    tcp_fds: list[list[int]]  # one list a raw TCP listener, as `tcp_specs(config)` orders them
    status_fd: int
    supervisor_pid: int

    def to_env(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WorkerLink | None:
        raw = environ.get(ENV)
        if not raw:
            return None
        return cls(**json.loads(raw))

    def fds(self) -> list[int]:
        return [*self.http_fds, *(fd for fds in self.tcp_fds for fd in fds), self.status_fd]


def resolve_workers(configured: int) -> int:
    """`workers = 0`: one a CPU this process may run on (cgroup cpusets, `taskset`), as
    `nproc` counts them."""
    if configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (OSError, AttributeError):  # refused by a seccomp filter, or not Linux
        return os.cpu_count() or 1


def worker_share(config: Config, index: int, count: int) -> Config:
    """Worker `index`'s configuration: its own spool, and its share of the instance's caps.

    The caps say what one instance may hold (disk, memory, connections), whatever its number
    of workers: each worker gets 1/N of them. Only worker 0 runs the in-daemon rollup
    schedule (two would compact the same hours at once).
    """
    share = {
        "spool_dir": str(worker_spool_dir(Path(config.spool_dir), index)),
        "max_spool_bytes": max(1, config.max_spool_bytes // count),
        "max_in_flight_bytes": max(1, config.max_in_flight_bytes // count),
        "max_in_flight_requests": max(1, -(-config.max_in_flight_requests // count)),
        "max_connections": max(1, -(-config.max_connections // count)),
    }
    if index:
        share["rollup_interval_seconds"] = 0.0
    return msgspec.structs.replace(config, **share)


def prepare_worker(link: WorkerLink) -> None:
    """Before the worker's trio loop: exit if the supervisor is already gone, and ignore
    SIGTERM/SIGINT until the daemon listens for them (a signal in between would kill it
    without a drain; the supervisor repeats SIGTERM while it waits for a drain, and a
    signal after the drain must not turn a clean exit into a killed one)."""
    if os.getppid() != link.supervisor_pid:
        raise SystemExit(1)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def tag_logs(index: int) -> None:
    """Every log line of this worker carries `worker: index` (the lines of all workers and
    of the supervisor share one stderr)."""

    def tag(record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = index
        return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(tag)


def encode_status(reason: str | None) -> bytes:
    text = "ready" if reason is None else "not ready: " + reason.replace("\n", " ")
    return text.encode()[: STATUS_MAX_BYTES - 1] + b"\n"


def decode_status(line: bytes) -> str | None:
    """None for `ready`, else why not (what a worker's /readyz would have said)."""
    text = line.decode("utf-8", "replace").strip()
    return None if text == "ready" else text.removeprefix("not ready: ")


async def report_to_supervisor(
    link: WorkerLink, readiness: Callable[[], str | None], metrics: Metrics
) -> None:
    """A worker's task: send `readiness()` on each change and every second (a heartbeat),
    refresh the metric files.

    The supervisor gone (the pipe broken, or this process handed to another parent, even
    after a SIGKILL of the supervisor) makes the worker drain and exit, as on SIGTERM. (Not
    PR_SET_PDEATHSIG: it fires when the forking *thread* exits, and trio forks in a worker
    thread that its thread cache retires after a few idle seconds.)
    """
    pipe = trio.lowlevel.FdStream(os.dup(link.status_fd))
    os.close(link.status_fd)
    sent: object = object()  # nothing sent yet
    next_beat = trio.current_time()
    async with pipe:
        while os.getppid() == link.supervisor_pid:
            reason = readiness()
            now = trio.current_time()
            if reason != sent or now >= next_beat:
                try:
                    await pipe.send_all(encode_status(reason))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
                sent, next_beat = reason, now + _HEARTBEAT_SECONDS
                metrics.refresh()
            await trio.sleep(_POLL_SECONDS)
    log.warning(
        "the supervisor is gone; draining",
        extra={"event": "supervisor_gone", "worker": link.index},
    )
    os.kill(os.getpid(), signal.SIGTERM)
