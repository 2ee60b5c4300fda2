"""`gravixd spool requeue`: what a refusing store sent to quarantine is delivered once the
cause is fixed, by one documented command, never twice; `gravixd spool check` lists it.

End to end: a daemon whose store refuses the `events` stream (a permanent error: S3's
AccessDenied) quarantines the segment; `spool check` lists it as one requeue hands back;
requeue refuses while a daemon holds the spool; once stopped, requeue moves it back, and the
next daemon delivers every refused event exactly once. A torn tail and a damaged original,
also in quarantine, stay there, listed with the reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio
from daemon import Daemon, column, read_store
from faulty_store import FaultyStore
from inproc_daemon import running_daemon

from gravixd.errors import PermanentStoreError
from gravixd.stores.local import LocalStore

FAST = {"segment_max_age_seconds": 0.2, "drain_timeout_seconds": 10}


def gravixd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gravixd", *args], capture_output=True, text=True, timeout=60
    )


async def quarantine_refused_events(workdir: Path, ids: list[str]) -> Path:
    """Run a daemon whose store refuses `events/`; returns the quarantined file."""
    store = FaultyStore(LocalStore(workdir / "store"))
    store.fail_puts(
        PermanentStoreError("injected: AccessDenied"), match=lambda key: key.startswith("events/")
    )
    events = [{"service": "svc", "kind": "deploy", "trace_id": t} for t in ids]
    async with running_daemon(workdir, store=store, **FAST) as d:
        status, _, _ = await d.post("/v1/events", json.dumps(events).encode())
        assert status == 202
        with trio.fail_after(30):
            while d.metric("spool_segments_quarantined_total", reason="store_rejected") < 1:
                await trio.sleep(0.05)
    [refused] = (workdir / "spool" / "quarantine" / "events").iterdir()
    return refused


async def test_requeue_delivers_what_a_refusing_store_quarantined(tmp_path: Path) -> None:
    ids = [f"e-{i}" for i in range(25)]
    refused = await quarantine_refused_events(tmp_path, ids)
    spool_dir = tmp_path / "spool"
    quarantine = spool_dir / "quarantine" / "events"
    torn = quarantine / f"{refused.name.split('.')[0]}.arrows.torn-at-4096"
    torn.write_bytes(b"\xff\xff\xff\xff" + bytes(60))
    damaged = quarantine / f"{refused.name.split('.')[0]}.arrows.1"
    data = bytearray(refused.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 8] = b"\x01" * 8
    damaged.write_bytes(bytes(data))

    check = gravixd("spool", "check", "--spool-dir", str(spool_dir))
    assert refused.name in check.stdout
    line = next(x for x in check.stdout.splitlines() if refused.name + " " in x)
    assert "25 events: `gravixd spool requeue` hands it back" in line, check.stdout
    assert "torn tail" in next(x for x in check.stdout.splitlines() if torn.name in x)
    assert "damaged original" in next(x for x in check.stdout.splitlines() if damaged.name in x)

    d = Daemon(tmp_path).start()
    try:
        busy = gravixd("spool", "requeue", "--spool-dir", str(spool_dir))
        assert busy.returncode == 1
        assert "in use by another gravixd" in busy.stdout and "stop it first" in busy.stdout
        assert refused.exists()
    finally:
        assert d.stop() == 0

    done = gravixd("spool", "requeue", "--spool-dir", str(spool_dir))
    assert done.returncode == 0, done.stderr
    assert f"requeued quarantine/events/{refused.name}" in done.stdout
    assert "1 of 3 quarantined file(s) requeued" in done.stdout
    assert sorted(p.name for p in quarantine.iterdir()) == sorted([torn.name, damaged.name])

    d.start()  # the cause is fixed: this daemon's store accepts events
    assert d.stop() == 0
    assert sorted(column(read_store(d.store_dir, "events"), "trace_id")) == sorted(ids)
    # Requeue again: nothing left to hand back, and nothing delivered twice.
    again = gravixd("spool", "requeue", "--spool-dir", str(spool_dir))
    assert "0 of 2 quarantined file(s) requeued" in again.stdout
    d.start()
    assert d.stop() == 0
    assert sorted(column(read_store(d.store_dir, "events"), "trace_id")) == sorted(ids)


async def test_requeue_never_overwrites_the_same_segment_still_in_the_spool(
    tmp_path: Path,
) -> None:
    refused = await quarantine_refused_events(tmp_path, ["x-1", "x-2"])
    sealed = tmp_path / "spool" / "sealed" / "events" / f"{refused.name.split('.')[0]}.arrow"
    sealed.write_bytes(refused.read_bytes())  # the same segment, put back by hand
    result = gravixd("spool", "requeue", "--spool-dir", str(tmp_path / "spool"))
    assert result.returncode == 0
    assert "exists (the same segment is still there)" in result.stdout
    assert refused.exists() and sealed.exists()


def test_requeue_of_a_mistyped_spool_creates_nothing(tmp_path: Path) -> None:
    result = gravixd("spool", "requeue", "--spool-dir", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert f"spool_dir {tmp_path / 'nope'}: no such directory" in result.stdout
    assert not (tmp_path / "nope").exists()
