"""Uploader, directly, on a real spool's sealed segments, with trio's MockClock jumping
through its backoff: retries grow exponentially with full jitter up to the cap, a segment
leaves the spool (bytes and its upload slot, in the one ledger) only once stored, and a
permanent refusal quarantines it and frees both."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from gravixd.core.decode import decode
from gravixd.errors import PermanentStoreError
from gravixd.metrics import Metrics
from gravixd.runtime import uploader as uploader_module
from gravixd.runtime.spool import Spool, SpoolSettings
from gravixd.runtime.uploader import Uploader
from gravixd.stores.memory import MemoryStore

sys.path.insert(0, str(Path(__file__).parents[1]))
from faulty_store import FaultyStore  # noqa: E402

NOW_MS = 1_800_000_000_000
INITIAL_SECONDS = 1.0
MAX_SECONDS = 8.0


async def sealed_spool(tmp_path: Path, nursery: trio.Nursery) -> Spool:
    settings = SpoolSettings(
        segment_max_bytes=64 << 20,
        segment_max_events=1_000_000,
        segment_max_age_seconds=3600,
        segment_format="arrow",
        segment_compression="lz4",
        max_spool_bytes=1 << 30,
    )
    spool = Spool(tmp_path, settings, Metrics(), clock_unix_ms=lambda: NOW_MS)
    spool.recover_sync()
    await nursery.start(spool.run)
    event = decode("facts", "application/json", b'{"service":"s"}', NOW_MS * 1_000_000)
    await spool.streams["facts"].append(event, True)
    await spool.seal_all()  # one sealed segment, queued: it holds bytes and a slot
    return spool


def uploader_for(spool: Spool, store: FaultyStore) -> Uploader:
    return Uploader(
        store,
        spool.sealed_segments,
        spool.ledger,
        spool.dir,
        spool.metrics,
        concurrency=1,
        retry_initial_seconds=INITIAL_SECONDS,
        retry_max_seconds=MAX_SECONDS,
        clock_unix_seconds=lambda: NOW_MS / 1000,
    )


async def test_backoff_grows_to_its_cap_and_the_segment_leaves_once_stored(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delays: list[tuple[float, float]] = []

    def longest_jitter(low: float, high: float) -> float:
        delays.append((low, high))
        return high  # the longest full-jitter draw: the schedule's bound

    monkeypatch.setattr(uploader_module.random, "uniform", longest_jitter)
    store = FaultyStore(MemoryStore())
    store.fail_next_puts(6)
    async with trio.open_nursery() as nursery:
        spool = await sealed_spool(tmp_path, nursery)
        assert spool.ledger.upload_slots_used == 1 and spool.ledger.used_bytes > 0
        uploader = uploader_for(spool, store)
        started = trio.current_time()
        await nursery.start(uploader.run)
        await uploader.wait_drained()
        elapsed = trio.current_time() - started
        nursery.cancel_scope.cancel()
    assert [high for _, high in delays] == [1, 2, 4, 8, 8, 8]  # doubling, capped
    assert all(low == 0 for low, _ in delays)  # full jitter: anywhere from 0
    # It slept them all (1+2+4+8+8+8 s; the clock may also jump while a worker thread
    # verifies the file, to the spool's own timers).
    assert elapsed >= 31
    assert len(store.inner.objects) == 1  # type: ignore[attr-defined]
    assert spool.ledger.used_bytes == 0 and spool.ledger.upload_slots_used == 0
    assert spool.metrics.registry.get_sample_value("upload_retries_total") == 6


async def test_a_permanent_refusal_quarantines_and_frees_bytes_and_slot(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = FaultyStore(MemoryStore())
    store.fail_puts(PermanentStoreError("access denied"))
    async with trio.open_nursery() as nursery:
        spool = await sealed_spool(tmp_path, nursery)
        uploader = uploader_for(spool, store)
        await nursery.start(uploader.run)
        await uploader.wait_drained()
        nursery.cancel_scope.cancel()
    assert list((tmp_path / "quarantine").rglob("*.arrow"))
    assert spool.ledger.used_bytes == 0 and spool.ledger.upload_slots_used == 0
    assert not spool.full
