"""The supervisor's bookkeeping of its workers, on trio's mock clock: readiness as the
workers say it (whole lines, split lines, garbage), a silent worker killed, restarts backed
off."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from gravixd.config import load
from gravixd.runtime.supervisor import (
    WORKER_SILENCE_SECONDS,
    Supervisor,
    _SupervisorMetrics,
    _Worker,
)


class FakeProcess:
    def __init__(self) -> None:
        self.returncode: int | None = None
        self.killed = 0

    def kill(self) -> None:
        self.killed += 1


def supervisor(count: int) -> tuple[Supervisor, list[_Worker], list[FakeProcess]]:
    sup = Supervisor(load({}, {}), ["serve"], {}, count)
    processes = [FakeProcess() for _ in range(count)]
    sup.workers = [_Worker(i, [], []) for i in range(count)]
    for worker, process in zip(sup.workers, processes, strict=True):
        worker.process = process  # type: ignore[assignment]
    return sup, sup.workers, processes


async def test_ready_once_every_worker_says_so_whole_or_byte_by_byte() -> None:
    sup, workers, _ = supervisor(2)
    pipes: list[Any] = [trio.testing.memory_stream_one_way_pair() for _ in workers]
    async with trio.open_nursery() as nursery:
        for worker, (_, receive) in zip(workers, pipes, strict=True):
            nursery.start_soon(sup._follow, worker, receive)
        await pipes[0][0].send_all(b"not ready: starting\nready\n")
        await trio.testing.wait_all_tasks_blocked()
        assert workers[0].reason is None
        assert sup.readiness() == "worker 1 of 2: not started"
        assert not sup.all_ready.is_set()
        for byte in b"x" * 5000 + b"\nready\n":  # an overlong line is dropped, not kept
            await pipes[1][0].send_all(bytes([byte]))
        await trio.testing.wait_all_tasks_blocked()
        assert sup.readiness() is None and sup.all_ready.is_set()
        await pipes[1][0].send_all(b"not ready: shedding load: spool is full\n")
        await trio.testing.wait_all_tasks_blocked()
        assert sup.readiness() == "worker 1 of 2: shedding load: spool is full"
        for send, _ in pipes:
            await send.aclose()  # the workers exit: _follow returns on end of file


async def test_a_worker_silent_too_long_is_killed(autojump_clock: trio.testing.MockClock) -> None:
    sup, (worker,), (process,) = supervisor(1)
    send, receive = trio.testing.memory_stream_one_way_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup._follow, worker, receive)
        await send.send_all(b"ready\n")
        for _ in range(5):  # heartbeats keep it alive however long it runs
            await trio.sleep(WORKER_SILENCE_SECONDS - 1)
            await send.send_all(b"ready\n")
        assert process.killed == 0 and sup.readiness() is None
        await trio.sleep(WORKER_SILENCE_SECONDS + 1)
        assert process.killed == 1
        assert sup.readiness() == "worker 0 of 1: not answering"
        await send.aclose()


async def test_restarts_back_off_and_reset_after_a_stable_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup, (worker,), _ = supervisor(1)
    sup.own = _SupervisorMetrics(1)
    starts: list[float] = []
    lifetimes = iter([0, 0, 0, 0, 0, 0, 0, 0, 61, 0, 0])  # seconds each run lasts

    async def run_once(w: _Worker) -> int:
        starts.append(trio.current_time())
        lifetime = next(lifetimes, None)
        if lifetime is None:
            sup.stopping.set()
            return 0
        await trio.sleep(lifetime)
        return 1

    sup._run_once = run_once  # type: ignore[method-assign]
    await sup._keep_running(worker)
    waits = [round(b - a, 3) for a, b in zip(starts, starts[1:], strict=False)]
    # 0.5 s doubling up to 30 s while it keeps dying; after a run of a minute, 0.5 s again.
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 61.5, 1.0, 2.0]
    assert worker.exited.is_set()
