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
from daemon import Daemon, column, read_store

TMPFS_BYTES = 4 * 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs; skipped when this process may not mount (not root, no CAP_SYS_ADMIN)."""
    mount_point = tmp_path / "small-fs"
    mount_point.mkdir()
    if not shutil.which("mount"):
        pytest.skip("no `mount` command to create a small filesystem for the spool")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {result.stderr.strip()}"
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
