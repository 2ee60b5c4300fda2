"""One long-lived thread that runs a stream's fsyncs, fed by a queue.

A `trio.to_thread.run_sync` per group commit costs a thread hand-off and a task each round
(~6% of the event loop on single events, issue 13). Here the committer puts each written
round on a queue and goes on; the thread fsyncs and hands the result back to the event loop
with `TrioToken.run_sync_soon`, which is cheap and keeps completion on the loop (where the
in-order rule lives). Rounds queued while an fsync runs share the next one: a single
fdatasync covers everything written to the file before it started.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import trio

from ..errors import DurabilityError


class Syncable(Protocol):
    def sync(self) -> None: ...


class SyncJob(Protocol):
    @property
    def target(self) -> Syncable: ...


Job = TypeVar("Job", bound=SyncJob)


class FsyncThread(Generic[Job]):
    def __init__(self, name: str, done: Callable[[Job, DurabilityError | None], None]) -> None:
        """`done(job, error)` is called on the event loop for every job, in queue order."""
        self._name = name
        self._done = done
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    def start(self) -> None:
        """Start the thread (call from the trio thread)."""
        self._token = trio.lowlevel.current_trio_token()
        # daemon: an fsync stuck on a dead disk must not keep the process from exiting.
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        assert self._token is not None
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            while True:  # everything queued meanwhile was written before this fsync starts
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this round
                    break
                jobs.append(more)
            results: dict[int, DurabilityError | None] = {}
            for j in jobs:
                key = id(j.target)
                if key not in results:
                    try:
                        j.target.sync()
                        results[key] = None
                    except DurabilityError as exc:
                        results[key] = exc
            try:
                for j in jobs:
                    self._token.run_sync_soon(self._done, j, results[id(j.target)])
            except trio.RunFinishedError:
                return
