"""Store faults that time heals: retried with backoff, never sent to quarantine.

What a user relies on (DESIGN section 3): a local store whose hour directory answers EACCES,
EPERM, EROFS, ENOSPC or EIO for a while (a chmod, a read-only remount, a full disk, a flaky
device) gets the same jittered exponential backoff as an S3 outage. Every acknowledged event
arrives once the fault is gone, and quarantine stays empty: nothing waits for a human.

The daemon runs in-process over a real `LocalStore`; link(2) into the store's directory
fails with the injected errno while the fault lasts (chmod does not stop root, who runs
the tests on CI), so the store's own error handling decides what the uploader sees.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import trio
from daemon import column, read_store
from faulty_store import FaultyStore
from inproc_daemon import running_daemon

from gravixd.errors import PermanentStoreError
from gravixd.stores import local
from gravixd.stores.local import LocalStore

FAST = {
    "segment_max_events": 20,
    "segment_max_age_seconds": 0.2,
    "upload_retry_initial_seconds": 0.02,
    "upload_retry_max_seconds": 0.3,
    "drain_timeout_seconds": 20,
}
# How long the fault lasts while clients post; longer for a figure (docs/guarantees.md).
FAULT_SECONDS = float(os.environ.get("GRAVIXD_STORE_FAULT_SECONDS", "2"))


def facts(prefix: str, start: int, count: int) -> bytes:
    return json.dumps(
        [{"service": "fault", "trace_id": f"{prefix}-{start + i}"} for i in range(count)]
    ).encode()


class DirectoryFault:
    """While `active`, linking a segment into the store fails with `code`, as the kernel
    answers for an unwritable, read-only, full or failing directory."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
        self.code = code
        self.active = False
        self.hits = 0
        real_link = local._link

        def link(source: Path, target: Path) -> bool:
            if self.active:
                self.hits += 1
                raise OSError(self.code, os.strerror(self.code), str(target))
            return real_link(source, target)

        monkeypatch.setattr(local, "_link", link)


async def delivered(store_dir: Path, count: int) -> list[str]:
    """The store's trace ids once it holds `count` events (or what it holds after 30 s)."""
    stored: list[str] = []
    with trio.move_on_after(30):
        while len(stored) < count:
            await trio.sleep(0.1)
            table = await trio.to_thread.run_sync(read_store, store_dir, "facts")
            stored = column(table, "trace_id") if table.num_rows else []
    return stored


async def ingest_through_fault(d, fault: DirectoryFault) -> list[str]:  # type: ignore[no-untyped-def]
    """Post while the fault lasts (about FAULT_SECONDS); returns the acknowledged ids."""
    acked: list[str] = []
    fault.active = True
    n = 0
    with trio.move_on_after(FAULT_SECONDS):
        while True:
            status, body, _ = await d.post("/v1/facts", facts("during", n * 10, 10))
            if status == 202:
                acked += [f"during-{n * 10 + i}" for i in range(10)]
            else:
                assert status == 503, body  # shedding while the spool fills is fine
                await trio.sleep(0.05)
            n += 1
    fault.active = False
    return acked


HEALABLE = [errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EIO]


@pytest.mark.parametrize("code", HEALABLE, ids=errno.errorcode.get)
async def test_a_store_fault_that_heals_strands_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    fault = DirectoryFault(monkeypatch, code)
    store = LocalStore(tmp_path / "store")
    async with running_daemon(tmp_path, store=store, **FAST) as d:
        status, _, _ = await d.post("/v1/facts", facts("before", 0, 10))
        assert status == 202
        acked = [f"before-{i}" for i in range(10)]
        acked += await ingest_through_fault(d, fault)
        assert fault.hits > 0, "no upload met the fault"
        assert d.metric("upload_errors_total", kind="retryable") > 0
        assert d.metric("upload_errors_total", kind="permanent") == 0
        status, _, _ = await d.post("/v1/facts", facts("after", 0, 10))
        assert status == 202
        acked += [f"after-{i}" for i in range(10)]
        # Delivered while the daemon runs (not left to the drain): every acknowledged
        # event, once; quarantine empty.
        stored = await delivered(tmp_path / "store", len(acked))
    assert sorted(stored) == sorted(acked)
    assert not list((tmp_path / "spool" / "quarantine").rglob("*.*"))
    print(f"\n{errno.errorcode[code]}: {len(acked)} acknowledged, {len(stored)} delivered")


async def test_a_refusal_caused_by_a_healable_fault_is_retried(tmp_path: Path) -> None:
    """Any store: a driver that calls a read-only filesystem "permanent" is retried anyway."""
    store = FaultyStore(LocalStore(tmp_path / "store"))
    cause = OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/store")
    try:
        raise PermanentStoreError("store refused the write") from cause
    except PermanentStoreError as refusal:
        store.fail_puts(refusal)
    async with running_daemon(tmp_path, store=store, **FAST) as d:
        status, _, _ = await d.post("/v1/facts", facts("f", 0, 10))
        assert status == 202
        with trio.fail_after(20):
            while store.failed_puts < 3:
                await trio.sleep(0.05)
        store.heal()
    assert sorted(column(read_store(tmp_path / "store", "facts"), "trace_id")) == sorted(
        f"f-{i}" for i in range(10)
    )
    assert not list((tmp_path / "spool" / "quarantine").rglob("*.*"))
