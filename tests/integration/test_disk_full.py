"""Disk full: the spool on a small tmpfs mounted by the test, filled up under load.

What a user relies on: a request that could not be made durable gets 503 (never 202) and
nothing of it is kept; once space returns the daemon serves 202s again without a restart;
every event that got a 202 ends up in the store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon import Daemon, column, read_store, wait_for

TMPFS_BYTES = 4 * 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs. CI runs as root (scripts/install-tools needs it too): a machine that
    cannot mount one fails here rather than skip the disk-full guarantees unseen."""
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    assert shutil.which("mount"), "no `mount` command (Debian: util-linux) for the small spool fs"
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        f"cannot mount a tmpfs for the spool (the tests run as root, with CAP_SYS_ADMIN):"
        f" {result.stderr.strip()}"
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def body(prefix: str, start: int, count: int) -> bytes:
    return json.dumps(
        [
            {
                "service": "diskfull",
                "route": "/x" * 20,
                "trace_id": f"{prefix}-{start + i}",
                "attributes": {"padding": f"{start + i:08d}" * 8},
            }
            for i in range(count)
        ]
    ).encode()


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def test_full_disk_answers_503_never_202_and_recovers(tmp_path: Path, small_fs: Path) -> None:
    spool = small_fs / "spool"
    daemon = Daemon(
        tmp_path,
        f"--spool-dir={spool}",
        "--segment-max-bytes=256KiB",
        "--upload-retry-initial-seconds=0.05",
        "--log-level=info",
    )
    acked: list[str] = []
    refused: list[str] = []
    with daemon:
        status, _, _ = daemon.post("/v1/facts", body("before", 0, 100))
        assert status == 202
        acked += [f"before-{i}" for i in range(100)]

        filler = small_fs / "filler"
        with open(filler, "wb") as f:  # leave ~150 KiB free
            f.write(b"\0" * max(free_bytes(small_fs) - 150 * 1024, 0))
        statuses = []
        for n in range(200):
            ids = [f"full-{n * 200 + i}" for i in range(200)]
            status, reply, headers = daemon.post("/v1/facts", body("full", n * 200, 200))
            statuses.append(status)
            if status == 202:
                acked += ids
                continue
            assert status == 503, reply
            refused += ids
            assert reply["reason"] == "not_durable", reply
            assert (
                "disk full" in reply["error"]
                and "nothing of this request was kept" in reply["error"]
            )
            assert int(headers["retry-after"]) >= 1
            if len(refused) >= 600:
                break
        assert refused, f"the spool never ran out of space: {statuses}"
        assert daemon.metric("spool_write_errors_total", stream="facts") >= 1
        assert daemon.metric("ingestion_requests_total", endpoint="/v1/facts", code="503") >= 1

        # Space returns: 202s again, no restart.
        filler.unlink()
        for n in range(5):
            status, reply, _ = daemon.post("/v1/facts", body("after", n * 50, 50))
            assert status == 202, reply
            acked += [f"after-{n * 50 + i}" for i in range(50)]
        assert daemon.proc is not None and daemon.proc.poll() is None
    assert daemon.proc.returncode == 0
    failures = [e for e in daemon.log_events() if e.get("event") == "spool_write_failed"]
    assert failures and "disk full" in failures[0]["error"]

    # A segment whose seal failed for lack of space stays in the spool for the next start.
    daemon.start()
    assert daemon.stop() == 0
    stored = column(read_store(daemon.store_dir, "facts"), "trace_id")
    assert len(stored) == len(set(stored))
    assert set(acked) <= set(stored), f"{len(set(acked) - set(stored))} acknowledged events lost"
    assert not set(refused) & set(stored), "a request answered 503 was (partly) kept"
    print(f"\ndisk full: {len(acked)} acknowledged events stored, {len(refused)} refused with 503")


def fill(small_fs: Path, leave_bytes: int = 0) -> Path:
    """Fill the filesystem with an outside file, leaving about `leave_bytes` free."""
    filler = small_fs / "ballast"
    with open(filler, "ab") as f:
        chunk = b"\0" * 65536
        while free_bytes(small_fs) > leave_bytes:
            try:
                f.write(chunk[: max(min(len(chunk), free_bytes(small_fs) - leave_bytes), 1)])
                f.flush()
            except OSError:
                break
    return filler


def files_in_spool(spool: Path) -> int:
    return sum(1 for area in ("open", "sealed") for p in (spool / area).glob("*/*"))


def test_sealing_needs_no_second_copy(tmp_path: Path, small_fs: Path) -> None:
    """The finding: sealing wrote a second, compressed copy; with less room than that left,
    every seal failed. Now it appends a footer and renames: ~1 KiB is enough."""
    spool = small_fs / "spool"
    daemon = Daemon(tmp_path, f"--spool-dir={spool}", "--segment-max-age-seconds=3600")
    acked: list[str] = []
    with daemon:
        for n in range(12):
            assert daemon.post("/v1/facts", body("big", n * 200, 200))[0] == 202
            acked += [f"big-{n * 200 + i}" for i in range(200)]
        [segment] = (spool / "open" / "facts").iterdir()
        size = segment.stat().st_size
        assert size > 64 * 1024  # compressed already; a second copy would need as much again
        fill(small_fs, leave_bytes=32 * 1024)
        # SIGTERM: the drain seals this segment on the full disk, then uploads it.
    assert daemon.proc is not None and daemon.proc.returncode == 0
    assert not [e for e in daemon.log_events() if e.get("event") == "spool_seal_failed"]
    stored = column(read_store(daemon.store_dir, "facts"), "trace_id")
    assert sorted(stored) == sorted(acked)
    print(f"\nsealed a {size}-byte segment with 32 KiB free on the spool's disk")


def test_restart_with_a_full_disk_starts_sheds_and_recovers(tmp_path: Path, small_fs: Path) -> None:
    """The findings: max_spool_bytes (1 GiB) above the disk was taken as given, and a restart
    with a full disk exited 1 on every start (a crash loop). Now the limit is clamped (logged
    with both numbers), and the daemon starts, answers 503 while the disk is full, reports
    truly what it leaves in the spool, and delivers everything once space returns."""
    spool = small_fs / "spool"
    daemon = Daemon(
        tmp_path,
        f"--spool-dir={spool}",
        "--segment-max-age-seconds=3600",
        "--upload-retry-initial-seconds=0.05",
        "--drain-timeout-seconds=3",
    )
    daemon.start()
    [clamped] = [e for e in daemon.log_events() if e.get("event") == "spool_max_bytes_clamped"]
    assert clamped["max_spool_bytes"] == 1 << 30 and clamped["disk_bytes"] <= TMPFS_BYTES
    assert daemon.metric("spool_limit_bytes") == clamped["clamped_to_bytes"] < TMPFS_BYTES
    acked = []
    for n in range(3):
        assert daemon.post("/v1/facts", body("pre", n * 50, 50))[0] == 202
        acked += [f"pre-{n * 50 + i}" for i in range(50)]
    daemon.kill()  # an open segment is left for recovery
    ballast = fill(small_fs)

    blocked = tmp_path / "not-a-directory"
    blocked.write_bytes(b"")  # the store is down too: nothing can leave the spool
    down = Daemon(
        tmp_path,
        f"--spool-dir={spool}",
        "--segment-max-age-seconds=3600",
        "--drain-timeout-seconds=3",
        store_url=f"file://{blocked}/store",
    )
    down.start()  # the old code exited 1 here, on every start
    status, reply, headers = down.post("/v1/facts", body("full", 0, 10))
    assert status == 503 and int(headers["retry-after"]) >= 1, reply
    assert down.side_get("/readyz")[0] == 503
    offset = down.log_path.stat().st_size
    assert down.stop() == 0
    [drained] = [e for e in down.log_events(offset) if e.get("event") == "drained"]
    assert drained["segments_left_in_spool"] == files_in_spool(spool) >= 1

    daemon.start()  # the store is back, the disk still full
    ballast.unlink()  # space returns: no restart needed
    wait_for(lambda: daemon.post("/v1/facts", body("back", 0, 10))[0] == 202, what="202s again")
    acked += [f"back-{i}" for i in range(10)]
    assert daemon.stop() == 0
    stored = column(read_store(daemon.store_dir, "facts"), "trace_id")
    assert set(acked) <= set(stored) and len(stored) == len(set(stored))
    assert not {t for t in stored if t.startswith("full-")}
