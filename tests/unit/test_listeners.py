"""The accept loop every listener shares: EMFILE is backed off, counted and logged once a
streak, never fatal; the connection budget turns connections away at accept. Time is
trio's MockClock, streams are in memory: no real descriptors are exhausted here (the
integration test `test_fd_limits.py` does that to the real daemon)."""

from __future__ import annotations

import errno
import functools
import logging
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from gravixd.errors import StartupError
from gravixd.metrics import Metrics
from gravixd.runtime.listeners import ConnectionBudget, accept_loop, bind


class FlakyListener(trio.abc.Listener[trio.abc.Stream]):
    """Fails accept with `errors` first, then hands out in-memory streams."""

    def __init__(self, errors: list[int], streams: int) -> None:
        self.errors = list(errors)
        self.streams = streams
        self.accept_times: list[float] = []
        self.socket = SimpleNamespace(getsockname=lambda: ("127.0.0.1", 5170))

    async def accept(self) -> trio.abc.Stream:
        self.accept_times.append(trio.current_time())
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, "fake")
        if not self.streams:
            await trio.sleep_forever()
        self.streams -= 1
        server, _client = trio.testing.memory_stream_pair()
        return server

    async def aclose(self) -> None:
        pass


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_emfile_is_backed_off_counted_and_logged_once_then_accepting_resumes(
    metrics: Metrics, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    listener = FlakyListener([errno.EMFILE] * 5 + [errno.ENFILE], streams=1)
    handled = trio.Event()

    async def handler(stream: trio.abc.Stream) -> None:
        handled.set()

    caplog.set_level(logging.INFO, "gravixd.listeners")
    budget = ConnectionBudget(4)
    async with trio.open_nursery() as nursery:
        loop = functools.partial(accept_loop, listener, "http", handler)  # type: ignore[arg-type]
        nursery.start_soon(loop, nursery, budget, metrics)
        with trio.fail_after(60):
            await handled.wait()
        nursery.cancel_scope.cancel()
    assert sample(metrics, "ingestion_accept_errors_total", source="http", error="EMFILE") == 5
    assert sample(metrics, "ingestion_accept_errors_total", source="http", error="ENFILE") == 1
    pauses = [b - a for a, b in zip(listener.accept_times, listener.accept_times[1:], strict=False)]
    assert pauses[:7] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 0.0])
    events = [r.event for r in caplog.records]  # type: ignore[attr-defined]
    assert events == ["accept_failed", "accept_recovered"]
    assert budget.open == 0  # the handler returned: its slot is back


async def test_other_accept_errors_are_not_swallowed(metrics: Metrics) -> None:
    async def handler(stream: trio.abc.Stream) -> None:
        pass

    budget = ConnectionBudget(1)
    listener = FlakyListener([errno.EBADF], 0)
    with pytest.raises(OSError, match="fake"):  # fails before it needs a handler nursery
        await accept_loop(listener, "tcp", handler, None, budget, metrics)  # type: ignore[arg-type]


async def test_over_budget_connections_are_closed_at_accept_and_counted(
    metrics: Metrics, autojump_clock: trio.testing.MockClock
) -> None:
    release = trio.Event()
    started = 0

    async def handler(stream: trio.abc.Stream) -> None:
        nonlocal started
        started += 1
        await release.wait()

    budget = ConnectionBudget(2)
    async with trio.open_nursery() as nursery:
        loop = functools.partial(accept_loop, FlakyListener([], 5), "tcp", handler)  # type: ignore[arg-type]
        nursery.start_soon(loop, nursery, budget, metrics)
        await trio.sleep(1)
        assert (started, budget.open) == (2, 2)
        assert sample(metrics, "ingestion_connections_rejected_total", source="tcp") == 3
        release.set()
        await trio.sleep(1)
        assert budget.open == 0
        nursery.cancel_scope.cancel()


async def test_make_room_admits_a_new_connection_in_place_of_one_told_to_close(
    metrics: Metrics, autojump_clock: trio.testing.MockClock
) -> None:
    """The side port's rule: over budget, the oldest waiting connection is closed and the
    new one served; the budget is back at its limit once the old one has gone."""
    waiting: list[trio.CancelScope] = []
    served = 0

    async def handler(stream: trio.abc.Stream) -> None:
        nonlocal served
        served += 1
        with trio.CancelScope() as scope:
            waiting.append(scope)
            await trio.sleep_forever()

    def make_room() -> bool:
        if not waiting:
            return False
        waiting.pop(0).cancel()
        return True

    class OneAtATime(FlakyListener):
        async def accept(self) -> trio.abc.Stream:
            await trio.sleep(0.1)  # connections arrive apart: each handler is running
            return await super().accept()

    budget = ConnectionBudget(2)
    async with trio.open_nursery() as nursery:
        loop = functools.partial(accept_loop, OneAtATime([], 5), "side_port", handler)  # type: ignore[arg-type]
        nursery.start_soon(functools.partial(loop, nursery, budget, metrics, make_room=make_room))
        await trio.sleep(1)
        assert served == 5  # none turned away at accept
        assert budget.open == 2 and len(waiting) == 2  # the two newest
        assert sample(metrics, "ingestion_connections_rejected_total", source="side_port") == 3
        nursery.cancel_scope.cancel()


async def test_bind_names_the_setting_when_the_port_is_taken() -> None:
    [taken] = await bind("http_listen", "127.0.0.1:0")
    port = taken.socket.getsockname()[1]
    with pytest.raises(StartupError) as caught:
        await bind("http_listen", f"127.0.0.1:{port}")
    assert str(caught.value) == f"http_listen 127.0.0.1:{port}: address in use"
    # With SO_REUSEPORT on both, a second socket shares the address.
    [first] = await bind("tcp_listen", "127.0.0.1:0", reuse_port=True)
    shared = f"127.0.0.1:{first.socket.getsockname()[1]}"
    [second] = await bind("tcp_listen", shared, reuse_port=True)
    for listener in (taken, first, second):
        await listener.aclose()
