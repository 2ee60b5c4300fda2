"""The spool's ledger: the one owner of "is the spool full".

Two things fill a spool, and both are counted here, nowhere else:
- bytes held: appends reserve what they write, sealing what it adds (the footer), uploads
  and quarantine release what leaves; `replace(old, new)` when a file is rewritten (sealed,
  salvaged, re-encoded);
- upload-queue slots: a sealed segment takes one before it is queued for upload (the sealer,
  recovery) and the uploader gives it back once the segment has left (uploaded, quarantined,
  vanished). Many small segments (age rotation) would otherwise outgrow memory long before
  `max_spool_bytes`.

`full_reason()` is the one predicate every shedder asks (the 503, /readyz, raw TCP's stop
of reads), naming the limit that tripped; `wait_not_full()` is the one thing every waiter
waits on. Every release sets the same event, so a waiter can never miss the change that
makes room, and never loops without yielding: it must never return while `full` holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

import trio

__all__ = ["FullReason", "SpoolLedger"]

FullReason = Literal["max_spool_bytes", "upload_queue"]

# Sealed segments queued for (or in) upload: 4096 segments of small age-rotated files are a
# few MiB of bookkeeping, yet two hours of one-a-second rotations of both streams.
DEFAULT_UPLOAD_SLOTS: Final = 4096


class SpoolLedger:
    def __init__(
        self, limit_bytes: Callable[[], int], *, upload_slots: int = DEFAULT_UPLOAD_SLOTS
    ) -> None:
        if upload_slots < 1:
            raise ValueError(f"Expected upload_slots >= 1, got {upload_slots}")
        self.used_bytes = 0
        self.upload_slots = upload_slots
        self.upload_slots_used = 0
        # Segments waiting for a slot (recovery, a sealer): they are on their way to upload.
        self.upload_slots_awaited = 0
        self._limit_bytes = limit_bytes
        self._changed = trio.Event()

    @property
    def limit_bytes(self) -> int:
        return self._limit_bytes()

    def full_reason(self) -> FullReason | None:
        """Which limit is reached (None: there is room). Bytes first: they are what an
        operator sizes, and a queue full of segments usually holds bytes too."""
        if self.used_bytes >= self._limit_bytes():
            return "max_spool_bytes"
        if self.upload_slots_used >= self.upload_slots:
            return "upload_queue"
        return None

    @property
    def full(self) -> bool:
        return self.full_reason() is not None

    def describe_full(self) -> str:
        """One sentence for a 503 body or a log line: the limit, what it holds now."""
        if self.full_reason() == "upload_queue":
            return (
                f"Expected fewer than {self.upload_slots} sealed segments waiting for upload, "
                f"got {self.upload_slots_used}; retry later"
            )
        return (
            f"Expected spool below max_spool_bytes={self._limit_bytes()}, got "
            f"{self.used_bytes} bytes waiting for upload; retry later"
        )

    # --- bytes ---------------------------------------------------------------------------

    def reserve(self, size_bytes: int) -> None:
        """Bytes were written into the spool."""
        self.used_bytes += size_bytes

    def release(self, size_bytes: int) -> None:
        """Bytes left the spool (uploaded, quarantined, removed). `release(0)` wakes the
        waiters when the byte limit itself rose (more disk space)."""
        self.used_bytes -= size_bytes
        self._wake()

    def replace(self, old_bytes: int, new_bytes: int) -> None:
        """A file of `old_bytes` became one of `new_bytes` (sealed, salvaged, re-encoded);
        0 for `new_bytes` when nothing of it is left in the spool."""
        self.used_bytes += new_bytes - old_bytes
        if new_bytes < old_bytes:
            self._wake()

    # --- upload-queue slots --------------------------------------------------------------

    async def take_upload_slot(self) -> None:
        """Wait for a free slot and take it (a sealed segment is about to be queued).

        Only slots are waited for, never bytes: the segment is already in the spool, and
        its upload is what frees bytes.
        """
        self.upload_slots_awaited += 1
        try:
            while self.upload_slots_used >= self.upload_slots:
                await self._changed.wait()
        finally:
            self.upload_slots_awaited -= 1
        self.upload_slots_used += 1

    def give_back_upload_slot(self) -> None:
        """A queued segment left the queue for good (uploaded, quarantined, vanished)."""
        if self.upload_slots_used <= 0:
            raise RuntimeError("give_back_upload_slot() without a slot taken")
        self.upload_slots_used -= 1
        self._wake()

    # --- waiting -------------------------------------------------------------------------

    async def wait_not_full(self) -> None:
        """Return once neither limit is reached (at once when there is room)."""
        while self.full:
            await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()
