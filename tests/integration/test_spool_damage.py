"""Damaged spool files against the real daemon: detected, kept, and never stored as-is.

What a user relies on (DESIGN section 3): every record batch in the spool carries a
checksum, verified at recovery, at seal and before upload. Damage is never stored silently
and never destroys good bytes: the original file goes to quarantine before anything is cut,
and every intact batch, before and after the damage, is still delivered.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import trio
from daemon import Daemon, read_store, wait_for

from gravixd.runtime.segment_files import read_segment
from gravixd.stores.local import LocalStore

EVENTS_PER_REQUEST = 10


def post_events(d: Daemon, prefix: str, requests: int) -> list[str]:
    """One request per group commit (sequential), so each is its own batch in the file."""
    acked = []
    for n in range(requests):
        ids = [f"{prefix}-{n}-{i}" for i in range(EVENTS_PER_REQUEST)]
        body = json.dumps(
            [{"service": "damage", "route": "/r", "status_code": 200, "trace_id": t} for t in ids]
        ).encode()
        status, reply, _ = d.post("/v1/facts", body)
        assert status == 202, reply
        acked += ids
    return acked


def only_file(folder: Path, pattern: str = "*") -> Path:
    [path] = list(folder.glob(pattern))
    return path


def rows_in(path: Path, start: int, end: int) -> int:
    """Rows of the batches that overlap bytes [start, end) of a spool file."""
    return sum(
        b.rows for b in read_segment("facts", path).blocks if b.offset < end and b.end > start
    )


def events(d: Daemon, name: str) -> list[dict]:
    return [e for e in d.log_events() if e.get("event") == name]


def test_zeroed_block_in_an_open_segment_costs_only_the_batches_it_hit(tmp_path: Path) -> None:
    """The finding: zeroing 4 KiB in the middle lost 151 of 300 acked events for good."""
    d = Daemon(tmp_path, "--segment-max-age-seconds=3600").start()
    acked = post_events(d, "z", 300 // EVENTS_PER_REQUEST)
    d.kill()
    segment = only_file(d.spool_dir / "open" / "facts", "*.arrows")
    size = segment.stat().st_size
    start = size // 2 - 2048
    hit_rows = rows_in(segment, start, start + 4096)
    data = bytearray(segment.read_bytes())
    data[start : start + 4096] = bytes(4096)
    segment.write_bytes(bytes(data))

    d.start()
    assert d.metric("spool_segments_quarantined_total", reason="damaged") == 1
    assert d.metric("spool_damaged_bytes_total", stage="recovery") >= 4096
    assert d.stop() == 0
    stored = read_store(d.store_dir, "facts").column("trace_id").to_pylist()
    assert set(stored) <= set(acked) and len(stored) == len(set(stored))
    assert len(stored) == len(acked) - hit_rows, "an intact batch was not delivered"
    assert hit_rows <= 5 * EVENTS_PER_REQUEST  # 4 KiB touches a handful of batches
    # The original, as it was when found, is in quarantine: nothing was destroyed.
    kept = only_file(d.spool_dir / "quarantine" / "facts", "*.arrows")
    assert kept.read_bytes() == bytes(data)
    [damaged] = events(d, "spool_segment_damaged")
    assert damaged["offset"] <= start < damaged["damaged_ranges"][-1][1]
    assert damaged["quarantined_to"] == str(kept)
    print(f"\nzeroed 4 KiB: {len(stored)} of {len(acked)} acked events kept ({hit_rows} hit)")


def test_a_zeroed_head_of_an_open_segment_keeps_every_batch(tmp_path: Path) -> None:
    """The finding: zeroing the first 64 bytes (magic and schema) kept 0 of 300 acked."""
    d = Daemon(tmp_path, "--segment-max-age-seconds=3600").start()
    acked = post_events(d, "h", 300 // EVENTS_PER_REQUEST)
    d.kill()
    segment = only_file(d.spool_dir / "open" / "facts", "*.arrows")
    hit_rows = rows_in(segment, 0, 64)
    data = bytearray(segment.read_bytes())
    data[:64] = bytes(64)
    segment.write_bytes(bytes(data))

    d.start()
    assert d.metric("spool_segments_quarantined_total", reason="damaged") == 1
    assert d.stop() == 0
    stored = read_store(d.store_dir, "facts").column("trace_id").to_pylist()
    assert hit_rows == 0  # 64 bytes hold the magic and part of the schema, no batch
    assert sorted(stored) == sorted(acked)
    kept = only_file(d.spool_dir / "quarantine" / "facts", "*.arrows")
    assert kept.read_bytes() == bytes(data)
    print(f"\nzeroed head: {len(stored)} of {len(acked)} acked events kept")


def test_a_flipped_byte_is_detected_not_stored(tmp_path: Path) -> None:
    """The finding: a single flipped byte went undetected and was stored silently."""
    d = Daemon(tmp_path, "--segment-max-age-seconds=3600").start()
    acked = post_events(d, "f", 10)
    d.kill()
    segment = only_file(d.spool_dir / "open" / "facts", "*.arrows")
    block = read_segment("facts", segment).blocks[4]
    data = bytearray(segment.read_bytes())
    data[block.offset + block.metadata_bytes + block.body_bytes // 2] ^= 0x01
    segment.write_bytes(bytes(data))

    d.start()
    assert d.stop() == 0
    table = read_store(d.store_dir, "facts")
    stored = table.column("trace_id").to_pylist()
    assert set(stored) == set(acked) - {f"f-4-{i}" for i in range(EVENTS_PER_REQUEST)}
    assert set(table.column("service").to_pylist()) == {"damage"}  # nothing altered
    [damaged] = events(d, "spool_segment_damaged")
    assert damaged["offset"] == block.offset and "checksum" in damaged["error"]


def test_damaged_sealed_segment_is_caught_by_spool_check_and_before_upload(
    tmp_path: Path,
) -> None:
    """The finding: 64 random bytes in a sealed file -> an object pyarrow cannot read in the
    store, every later rollup of that hour failing, and `spool check` saying it is fine."""
    blocked = tmp_path / "not-a-directory"
    blocked.write_bytes(b"")  # the store cannot write under a file: uploads fail, retried
    down = Daemon(
        tmp_path,
        "--segment-max-age-seconds=3600",
        "--drain-timeout-seconds=2",
        store_url=f"file://{blocked}/store",
    ).start()
    acked = post_events(down, "s", 30)
    assert down.stop() == 0  # sealed on the way out, not uploaded
    sealed = only_file(down.spool_dir / "sealed" / "facts", "*.arrow")
    hit_at = sealed.stat().st_size // 2
    hit_rows = rows_in(sealed, hit_at, hit_at + 64)
    data = bytearray(sealed.read_bytes())
    data[hit_at : hit_at + 64] = random.Random(7).randbytes(64)
    sealed.write_bytes(bytes(data))

    check = subprocess.run(
        [sys.executable, "-m", "gravixd", "spool", "check", f"--spool-dir={down.spool_dir}"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1, check.stdout
    assert "DAMAGED" in check.stdout and sealed.name in check.stdout

    up = Daemon(tmp_path, "--segment-max-age-seconds=3600")
    up.start()
    wait_for(lambda: not list(up.spool_dir.glob("sealed/facts/*")), what="the upload")
    assert up.metric("spool_damaged_bytes_total", stage="upload") > 0
    assert up.stop() == 0
    stored = read_store(up.store_dir, "facts").column("trace_id").to_pylist()
    assert len(stored) == len(acked) - hit_rows and set(stored) <= set(acked)
    assert only_file(up.spool_dir / "quarantine" / "facts").read_bytes() == bytes(data)

    # Rollup of that hour works: every object in the store is readable.
    from gravixd.rollup import rollup

    async def roll() -> int:
        report = await rollup(
            LocalStore(up.store_dir),
            target_file_bytes=1 << 20,
            now=dt.datetime.now(dt.UTC),
            include_current_hour=True,
        )
        return report.rows

    assert trio.run(roll) == len(stored)
    rolled = list((up.store_dir / "rollup" / "facts").rglob("*.parquet"))
    assert sum(pq.read_table(p).num_rows for p in rolled) == len(stored)
    print(f"\n64 random bytes in a sealed file: {len(stored)} of {len(acked)} events kept")
