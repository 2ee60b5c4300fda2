"""A spool on a filesystem that reports no size (statvfs f_blocks = 0: FUSE, some network
mounts) sets no disk limit: max_spool_bytes alone applies, and it is said once in the log.
Before, the limit was clamped to 90% of "0 bytes free" and every request was a 503."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from gravixd.metrics import Metrics
from gravixd.runtime import spool as spool_module
from gravixd.runtime.spool import Spool, SpoolSettings

MAX_SPOOL_BYTES = 1 << 20


def new_spool(spool_dir: Path) -> Spool:
    settings = SpoolSettings(
        segment_max_bytes=1 << 16,
        segment_max_events=100,
        segment_max_age_seconds=60,
        segment_format="arrow",
        segment_compression="zstd",
        max_spool_bytes=MAX_SPOOL_BYTES,
    )
    return Spool(spool_dir, settings, Metrics(), clock_unix_ms=lambda: 0)


def fake_statvfs(blocks: int, free_blocks: int):  # type: ignore[no-untyped-def]
    real = os.statvfs

    def statvfs(path: object) -> os.statvfs_result:
        s = real(path)  # type: ignore[arg-type]
        fields = list(s)
        fields[1] = 4096  # f_frsize
        fields[2] = blocks  # f_blocks
        fields[3] = fields[4] = free_blocks  # f_bfree, f_bavail
        return os.statvfs_result(fields)

    return statvfs


def limit_gauge(spool: Spool) -> float | None:
    return spool.metrics.registry.get_sample_value("spool_limit_bytes")


def test_a_filesystem_without_a_size_sets_no_disk_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(spool_module.os, "statvfs", fake_statvfs(blocks=0, free_blocks=0))
    spool = new_spool(tmp_path / "spool")
    spool.recover_sync()
    assert spool.disk_limit_bytes is None
    assert spool.ledger.limit_bytes == MAX_SPOOL_BYTES
    assert limit_gauge(spool) == MAX_SPOOL_BYTES
    assert not spool.ledger.full
    spool._check_disk_sync(0)  # the periodic re-check: still no limit, not logged again
    assert spool.ledger.limit_bytes == MAX_SPOOL_BYTES
    said = [r for r in caplog.records if getattr(r, "event", "") == "spool_disk_size_unknown"]
    assert len(said) == 1 and said[0].max_spool_bytes == MAX_SPOOL_BYTES


def test_a_small_filesystem_still_clamps_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module.os, "statvfs", fake_statvfs(blocks=1000, free_blocks=100))
    spool = new_spool(tmp_path / "spool")
    spool.recover_sync()
    assert spool.ledger.limit_bytes == int(100 * 4096 * 0.9)


async def test_appends_are_accepted_on_a_sizeless_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(spool_module.os, "statvfs", fake_statvfs(blocks=0, free_blocks=0))
    spool = new_spool(tmp_path / "spool")
    spool.recover_sync()
    with trio.fail_after(5):
        await spool.ledger.wait_not_full()  # before: waited forever (limit 0)
