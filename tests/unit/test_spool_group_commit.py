"""Group commit: concurrent appends share fsyncs, rounds complete in order, and a failed
fsync fails every round that may depend on it (never a 202 for data that may be lost)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import trio

from gravixd.core.decode import decode
from gravixd.errors import DurabilityError
from gravixd.metrics import Metrics
from gravixd.runtime import segment_files
from gravixd.runtime.spool import Spool, SpoolSettings

NOW_MS = 1_764_000_000_000


def make_spool(tmp_path: Path, **spool_options: int) -> Spool:
    settings = SpoolSettings(
        segment_max_bytes=64 << 20,
        segment_max_events=1_000_000,
        segment_max_age_seconds=3600,
        segment_format="arrow",
        segment_compression="lz4",
        max_spool_bytes=1 << 30,
    )
    spool = Spool(tmp_path, settings, Metrics(), clock_unix_ms=lambda: NOW_MS, **spool_options)
    spool.recover_sync()
    return spool


def sealed_segments(spool: Spool) -> list:
    """What the spool queued for upload (its channel to the uploader)."""
    out = []
    while True:
        try:
            out.append(spool.sealed_segments.receive_nowait())
        except trio.WouldBlock:
            return out


def event(i: int):
    return decode("facts", "application/json", b'{"service":"s","trace_id":"%d"}' % i, 1)


async def test_concurrent_appends_share_fsyncs_and_all_land(tmp_path: Path) -> None:
    spool = make_spool(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        async with trio.open_nursery() as clients:
            for i in range(200):
                clients.start_soon(spool.streams["facts"].append, event(i), True)
        await spool.seal_all()
        nursery.cancel_scope.cancel()
    metrics = spool.metrics.registry
    rounds = metrics.get_sample_value("spool_group_commit_batches_count")
    assert rounds is not None and rounds < 200  # fsyncs were shared
    [segment] = sealed_segments(spool)
    assert segment.rows == 200


async def test_a_failed_fsync_fails_its_round_and_the_rounds_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = make_spool(tmp_path)
    first_sync_entered = threading.Event()
    calls = 0
    real_sync = segment_files.OpenSegment.sync

    def flaky_sync(self: segment_files.OpenSegment) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            first_sync_entered.set()
            time.sleep(0.3)  # the second round's fsync returns first
            self.failed = True
            raise DurabilityError("injected EIO")
        real_sync(self)

    monkeypatch.setattr(segment_files.OpenSegment, "sync", flaky_sync)
    stream = spool.streams["facts"]
    outcomes: dict[str, str] = {}

    async def append(name: str, i: int) -> None:
        try:
            await stream.append(event(i), True)
            outcomes[name] = "ok"
        except DurabilityError:
            outcomes[name] = "failed"

    async with trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        async with trio.open_nursery() as clients:
            clients.start_soon(append, "first", 1)
            await trio.to_thread.run_sync(first_sync_entered.wait)
            clients.start_soon(append, "second", 2)  # written while the first fsync runs
        assert outcomes == {"first": "failed", "second": "failed"}
        await append("after", 3)  # a fresh segment takes new writes
        assert outcomes["after"] == "ok"
        await spool.seal_all()
        nursery.cancel_scope.cancel()
    assert (
        spool.metrics.registry.get_sample_value("spool_write_errors_total", {"stream": "facts"})
        >= 1
    )


async def test_group_commits_hand_off_to_one_long_lived_fsync_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: a `trio.to_thread.run_sync` per round cost a thread hand-off and a task
    each time. Rounds now go to the stream's one fsync thread through a queue."""
    spool = make_spool(tmp_path)
    stream = spool.streams["facts"]
    fsync_threads: set[int] = set()
    real_sync = segment_files.OpenSegment.sync

    def recording_sync(self: segment_files.OpenSegment) -> None:
        fsync_threads.add(threading.get_ident())
        real_sync(self)

    monkeypatch.setattr(segment_files.OpenSegment, "sync", recording_sync)
    async with trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        await stream.append(event(0), True)  # creates the segment (a thread call, once)
        hand_offs = 0
        real_run_sync = trio.to_thread.run_sync

        async def counting_run_sync(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal hand_offs
            hand_offs += 1
            return await real_run_sync(*args, **kwargs)

        monkeypatch.setattr(trio.to_thread, "run_sync", counting_run_sync)
        for i in range(1, 51):  # one round each: every append waits for its fsync
            await stream.append(event(i), True)
        assert hand_offs == 0
        monkeypatch.setattr(trio.to_thread, "run_sync", real_run_sync)
        await spool.seal_all()
        nursery.cancel_scope.cancel()
    assert len(fsync_threads) == 1 and threading.get_ident() not in fsync_threads
    assert sealed_segments(spool)[0].rows == 51


async def test_one_ledger_counts_spool_bytes_and_the_upload_queue_is_bounded(
    tmp_path: Path,
) -> None:
    """Spool bytes have one owner (the ledger: appends reserve, sealing adds the footer, the
    uploader releases); each sealed segment holds an upload slot of the same ledger until
    the uploader gives it back, and all slots taken sheds load like a full spool (DESIGN 3:
    backpressure on the upload queue)."""
    spool = make_spool(tmp_path, upload_queue_segments=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        await spool.streams["facts"].append(event(1), True)
        assert spool.ledger.used_bytes == spool.streams["facts"]._segment.size_bytes
        await spool.seal_all()
        assert spool.full  # one sealed segment fills a one-segment queue
        assert spool.ledger.full_reason() == "upload_queue"
        segment = spool.sealed_segments.receive_nowait()  # the uploader takes it...
        assert spool.full  # ...and holds its slot while uploading
        assert spool.ledger.used_bytes == segment.size_bytes == segment.path.stat().st_size
        spool.ledger.release(segment.size_bytes)  # uploaded
        spool.ledger.give_back_upload_slot()
        assert spool.ledger.used_bytes == 0
        assert not spool.full
        nursery.cancel_scope.cancel()
