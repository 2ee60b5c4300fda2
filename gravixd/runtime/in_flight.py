"""`max_in_flight_bytes`: the one count of ingest bytes held in memory, across every port.

HTTP requests (wire bytes, inflated bodies, decoders' working memory, decoded batches) and
raw TCP connections (a read being framed, the partial line or frame buffered until its end
comes) each hold a `Held` share of one `InFlightBytes`; only a `Held` changes the count,
and it gives everything back when its request or connection ends. What is over the cap:
HTTP answers 503, raw TCP stops reading (backpressure), both as soon as it is known.

The rule both follow: a holder is over the limit when the total is above the cap *and* it
is not the only one holding memory, so one request or connection within its own limits
always goes on (nothing deadlocks behind a cap smaller than one body or frame). Raw TCP
connections that wait for room take turns past the cap, one at a time: when every
connection holds half a line and waits, none could otherwise read on to finish its line or
to see its peer close. Memory stays below the cap plus one connection's unit and read.
It must never count a byte twice, nor keep a count after its holder has gone.
"""

from __future__ import annotations

import trio

__all__ = ["Held", "InFlightBytes"]


class InFlightBytes:
    """The shared count; `limit_bytes` may change at runtime (SIGHUP)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self._freed = trio.Event()
        self._turn: Held | None = None  # the one waiter let past the cap, until it gives back

    def over_limit(self, held_bytes: int) -> bool:
        """Above the cap, and not alone: one holder within the limits always goes on."""
        used = self.used_bytes
        return used > self.limit_bytes and used > held_bytes

    def _change(self, holder: Held, delta_bytes: int) -> None:
        self.used_bytes += delta_bytes
        if delta_bytes < 0:
            if self._turn is holder:
                self._turn = None  # it made progress (a unit ended) or closed: next one
            self._freed.set()
            self._freed = trio.Event()

    async def wait_room(self, held: Held) -> None:
        """Return once `held` is not over the limit, or it is its turn past the cap."""
        while self.over_limit(held.bytes):
            if self._turn is None or self._turn is held:
                self._turn = held
                return
            await self._freed.wait()


class Held:
    """One request's or connection's share of an `InFlightBytes`."""

    __slots__ = ("bytes", "in_flight")

    def __init__(self, in_flight: InFlightBytes) -> None:
        self.in_flight = in_flight
        self.bytes = 0

    def add(self, n: int) -> None:
        """Count `n` more bytes that are in memory now."""
        self.bytes += n
        self.in_flight._change(self, n)

    def set(self, n: int) -> None:
        """Hold exactly `n` bytes from now on (in place of what was held)."""
        self.add(n - self.bytes)

    def release(self) -> None:
        """Give all of it back (the request was answered, the connection closed)."""
        self.set(0)
        if self.in_flight._turn is self:
            self.in_flight._turn = None

    def over_limit(self) -> bool:
        return self.in_flight.over_limit(self.bytes)
