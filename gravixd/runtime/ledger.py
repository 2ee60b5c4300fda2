"""The spool's byte ledger: the one owner of "how many bytes does the spool hold".

Appends reserve what they write, sealing what it adds (the footer), uploads and quarantine
release what leaves. Nothing else changes the count; `full` is what sheds load (503, and
no reads on raw TCP) and `wait_not_full` what resumes it.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class SpoolLedger:
    def __init__(self, limit_bytes: Callable[[], int]) -> None:
        self.used_bytes = 0
        self._limit_bytes = limit_bytes
        self._freed = trio.Event()

    @property
    def limit_bytes(self) -> int:
        return self._limit_bytes()

    @property
    def full(self) -> bool:
        return self.used_bytes >= self._limit_bytes()

    def reserve(self, size_bytes: int) -> None:
        """Bytes were written into the spool."""
        self.used_bytes += size_bytes

    def release(self, size_bytes: int) -> None:
        """Bytes left the spool (uploaded, quarantined, removed)."""
        self.used_bytes -= size_bytes
        if not self.full:
            self._freed.set()
            self._freed = trio.Event()

    async def wait_not_full(self) -> None:
        while self.full:
            await self._freed.wait()
