"""The daemon's one clock, injected: wall time for what is stored, trio's clock for the rest.

- `unix_nano()` (and its `unix_ms` / `unix_seconds` forms) is wall time: an event's time of
  receipt, a segment's id and hour partition, the last-upload timestamp. It is the only
  thing in the runtime that reads the wall clock; tests give a `Clock` one of their own.
- `now()` is trio's `current_time()`: ages, timeouts, deadlines, backoff and latencies,
  which a test's MockClock (autojump_clock) jumps through without sleeping.

It must never mix the two: a deadline computed from wall time would jump with NTP, and an
event stamped with trio's clock would land in 1970.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

__all__ = ["Clock"]


@dataclass(frozen=True, slots=True)
class Clock:
    wall_unix_nano: Callable[[], int] = time.time_ns

    def unix_nano(self) -> int:
        return self.wall_unix_nano()

    def unix_ms(self) -> int:
        return self.wall_unix_nano() // 1_000_000

    def unix_seconds(self) -> float:
        return self.wall_unix_nano() / 1e9

    @staticmethod
    def now() -> float:
        """Seconds on trio's clock (MockClock in tests): for ages and deadlines."""
        return trio.current_time()

    @classmethod
    def fixed_then_following_trio(cls, start_unix_nano: int) -> Clock:
        """Wall time that starts at `start_unix_nano` when first read inside a trio run and
        then moves with trio's clock: a test's MockClock moves both together."""
        origin: list[float] = []

        def wall() -> int:
            if not origin:
                origin.append(trio.current_time())
            return start_unix_nano + int((trio.current_time() - origin[0]) * 1e9)

        return cls(wall)
