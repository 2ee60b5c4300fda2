"""SpoolLedger, directly: one predicate for "full" (bytes or upload slots), naming the limit,
and one event that wakes every waiter whatever made room."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gravixd.runtime.ledger import SpoolLedger


def test_bytes_and_slots_each_make_it_full_and_say_which() -> None:
    ledger = SpoolLedger(lambda: 100, upload_slots=2)
    assert ledger.full_reason() is None
    ledger.reserve(100)
    assert ledger.full_reason() == "max_spool_bytes"
    assert "max_spool_bytes=100" in ledger.describe_full()
    ledger.release(1)
    assert not ledger.full
    ledger.upload_slots_used = 2
    assert ledger.full_reason() == "upload_queue"
    assert "2 sealed segments" in ledger.describe_full()


def test_replace_swaps_a_files_bytes_in_one_step() -> None:
    ledger = SpoolLedger(lambda: 1000)
    ledger.reserve(300)
    ledger.replace(300, 340)  # a footer added
    assert ledger.used_bytes == 340
    ledger.replace(340, 0)  # quarantined whole
    assert ledger.used_bytes == 0


def test_a_slot_given_back_without_one_taken_is_a_bug() -> None:
    with pytest.raises(RuntimeError, match="without a slot"):
        SpoolLedger(lambda: 1).give_back_upload_slot()
    with pytest.raises(ValueError, match="upload_slots >= 1"):
        SpoolLedger(lambda: 1, upload_slots=0)


async def test_waiters_wake_when_either_limit_makes_room(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ledger = SpoolLedger(lambda: 10, upload_slots=1)
    ledger.reserve(10)
    await ledger.take_upload_slot()
    woke: list[str] = []

    async def waiter() -> None:
        await ledger.wait_not_full()
        woke.append("writer")

    async def sealer() -> None:
        await ledger.take_upload_slot()
        woke.append("sealer")
        # Its segment is uploaded at once: were the sealer scheduled first, the queue would
        # otherwise be full again and the writer rightly back to waiting.
        ledger.give_back_upload_slot()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(sealer)
        await trio.testing.wait_all_tasks_blocked()
        assert ledger.upload_slots_awaited == 1
        ledger.release(10)  # bytes free, the queue still full: both keep waiting
        await trio.testing.wait_all_tasks_blocked()
        assert woke == []
        ledger.give_back_upload_slot()  # one release wakes both
    assert sorted(woke) == ["sealer", "writer"]
    assert ledger.upload_slots_used == 0
    assert ledger.upload_slots_awaited == 0
