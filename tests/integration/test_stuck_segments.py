"""Nothing retries forever in a way that blocks anything else (DESIGN section 3).

The findings: a directory or a vanished file in the sealed area, or an open segment that
disappeared, was retried forever and pinned one of the two upload workers (two of them
pinned both: nothing was uploaded any more). What time will not heal is quarantined (or,
when there is nothing left to keep, counted as gone) and logged; the rest flows on.
"""

from __future__ import annotations

import json
from pathlib import Path

import trio
from daemon import Daemon, read_store
from faulty_store import FaultyStore
from inproc_daemon import running_daemon

from gravixd.core.segment import new_segment_id
from gravixd.stores.local import LocalStore


def body(stream: str, prefix: str, count: int) -> bytes:
    extra = {"kind": "deploy"} if stream == "events" else {"route": "/r"}
    return json.dumps(
        [{"service": "stuck", "trace_id": f"{prefix}-{i}", **extra} for i in range(count)]
    ).encode()


def log_events(d: Daemon, name: str) -> list[dict]:
    return [e for e in d.log_events() if e.get("event") == name]


def test_directories_in_the_sealed_area_do_not_pin_the_upload_workers(tmp_path: Path) -> None:
    d = Daemon(tmp_path, "--upload-concurrency=2", "--drain-timeout-seconds=15")
    for n in (1, 2):  # as many as there are upload workers
        (d.spool_dir / "sealed" / "facts" / f"{new_segment_id(1_764_000_000_000, n)}.arrow").mkdir(
            parents=True
        )
    with d:
        assert d.metric("spool_segments_quarantined_total", reason="not_a_file") == 2
        status, reply, _ = d.post("/v1/facts", body("facts", "after", 5))
        assert status == 202, reply
    assert d.proc is not None and d.proc.returncode == 0
    [drained] = log_events(d, "drained")
    assert not drained["deadline_hit"] and drained["segments_left_in_spool"] == 0
    assert sorted(read_store(d.store_dir, "facts").column("trace_id").to_pylist()) == [
        f"after-{i}" for i in range(5)
    ]
    assert len(list((d.spool_dir / "quarantine" / "facts").iterdir())) == 2  # kept as found


def test_an_open_segment_that_vanished_is_counted_not_retried(tmp_path: Path) -> None:
    d = Daemon(tmp_path, "--segment-max-age-seconds=3600", "--drain-timeout-seconds=15")
    with d:
        assert d.post("/v1/facts", body("facts", "lost", 5))[0] == 202
        [open_file] = (d.spool_dir / "open" / "facts").iterdir()
        open_file.unlink()  # what a second daemon on the same spool used to do
        assert d.post("/v1/events", body("events", "kept", 5))[0] == 202
    assert d.proc is not None and d.proc.returncode == 0
    [gone] = log_events(d, "spool_segment_gone")
    assert gone["stage"] == "seal" and gone["stream"] == "facts"
    assert not log_events(d, "spool_seal_failed")  # reported once, never retried
    [drained] = log_events(d, "drained")
    assert not drained["deadline_hit"] and drained["segments_left_in_spool"] == 0
    assert read_store(d.store_dir, "events").num_rows == 5


async def test_sealed_segments_that_vanished_while_queued_free_their_workers(
    tmp_path: Path,
) -> None:
    store = FaultyStore(LocalStore(tmp_path / "store"))
    store.fail_puts()
    settings = {
        "segment_max_age_seconds": 0.2,
        "upload_concurrency": 2,
        "upload_retry_initial_seconds": 0.02,
        "upload_retry_max_seconds": 0.1,
        "drain_timeout_seconds": 10,
    }
    async with running_daemon(tmp_path, store=store, **settings) as d:
        for stream in ("facts", "events"):  # one stuck segment per upload worker
            assert (await d.post(f"/v1/{stream}", body(stream, "gone", 3)))[0] == 202
        sealed = tmp_path / "spool" / "sealed"
        with trio.fail_after(20):
            while store.failed_puts < 4 or len(list(sealed.glob("*/*.arrow"))) < 2:
                await trio.sleep(0.05)
        for path in sealed.glob("*/*.arrow"):
            path.unlink()
        store.heal()
        assert (await d.post("/v1/facts", body("facts", "after", 4)))[0] == 202
        with trio.fail_after(20):
            while not list((tmp_path / "store" / "facts").rglob("*.arrow")):
                await trio.sleep(0.05)
        assert d.metric("spool_segments_gone_total", stage="upload") == 2
        assert d.daemon.spool.bytes_used < 4096  # what vanished left the ledger too
    assert sorted(read_store(tmp_path / "store", "facts").column("trace_id").to_pylist()) == [
        f"after-{i}" for i in range(4)
    ]
