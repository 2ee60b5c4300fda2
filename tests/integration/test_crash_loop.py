"""Crash loop: SIGKILL the daemon at random moments under concurrent load, restart, repeat.

What a user relies on (DESIGN section 3): a 202 means the events are durable. After the last
restart and a clean SIGTERM drain, every event that got a 202 is in the store exactly once
(checked by a unique trace_id per event), and no event, acknowledged or not, is in the store
twice (a crash between put and local delete re-uploads to the same key). Events whose
request died with the daemon may or may not be there: nobody was told they were safe.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from daemon import Daemon, column, read_store

KILLS = int(os.environ.get("GRAVIXD_CRASH_LOOP_KILLS", "12"))


class Client(threading.Thread):
    """Posts until stopped; records which trace_ids were acknowledged and which were tried."""

    def __init__(self, port: int, name: str, stream: str, kind: str, seed: int) -> None:
        super().__init__(name=name, daemon=True)
        self.port, self.stream, self.kind = port, stream, kind
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.acked: list[str] = []
        self.tried: list[str] = []
        self.requests = 0

    def body(self, ids: list[str]) -> tuple[bytes, str]:
        if self.stream == "facts":
            items = [
                {"service": "crash", "route": "/x", "status_code": 200, "trace_id": t} for t in ids
            ]
        else:
            items = [
                {"service": "crash", "kind": "deploy", "severity": "INFO", "trace_id": t}
                for t in ids
            ]
        if self.kind == "single":
            return json.dumps(items[0]).encode(), "application/json"
        if self.kind == "ndjson":
            return b"".join(json.dumps(i).encode() + b"\n" for i in items), "application/x-ndjson"
        return json.dumps(items).encode(), "application/json"

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        seq = 0
        while not self.stop.is_set():
            count = 1 if self.kind == "single" else self.random.randint(1, 60)
            ids = [f"{self.name}-{seq}-{i}" for i in range(count)]
            seq += 1
            body, content_type = self.body(ids)
            self.tried += ids
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("POST", f"/v1/{self.stream}", body, {"Content-Type": content_type})
                response = conn.getresponse()
                response.read()
                self.requests += 1
                if response.status == 202:
                    self.acked += ids
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)
        if conn is not None:
            conn.close()


@pytest.mark.slow
def test_sigkill_loop_loses_no_acknowledged_event(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("GRAVIXD_CRASH_LOOP_SEED", "0")) or None)
    daemon = Daemon(
        tmp_path,
        "--segment-max-events=300",
        "--segment-max-age-seconds=0.25",
        "--upload-retry-initial-seconds=0.05",
        "--upload-retry-max-seconds=0.5",
        "--drain-timeout-seconds=30",
        "--log-level=info",
    )
    clients: list[Client] = []
    kinds = [("facts", "batch"), ("facts", "single"), ("events", "ndjson"), ("facts", "ndjson")]
    started = time.monotonic()
    for round_ in range(KILLS + 1):
        daemon.start()
        round_clients = [
            Client(daemon.http_port, f"r{round_}c{n}", stream, kind, rng.randrange(1 << 30))
            for n, (stream, kind) in enumerate(kinds)
        ]
        for c in round_clients:
            c.start()
        clients += round_clients
        time.sleep(rng.uniform(0.3, 1.2))
        if round_ < KILLS:
            daemon.kill()
        else:
            for c in round_clients:
                c.stop.set()
            for c in round_clients:
                c.join(15)
            assert daemon.stop() == 0
        for c in round_clients:
            c.stop.set()
        for c in round_clients:
            c.join(15)
            assert not c.is_alive()

    acked = [t for c in clients for t in c.acked]
    tried = {t for c in clients for t in c.tried}
    stored = column(read_store(daemon.store_dir, "facts"), "trace_id") + column(
        read_store(daemon.store_dir, "events"), "trace_id"
    )
    counts = Counter(stored)
    duplicated = sorted(t for t, n in counts.items() if n > 1)
    missing = sorted(set(acked) - counts.keys())
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:5]}"
    assert not duplicated, f"{len(duplicated)} events stored twice, e.g. {duplicated[:5]}"
    assert counts.keys() <= tried, "the store holds events nobody sent"
    assert len(acked) == len(set(acked))
    # The drain left nothing behind.
    leftovers = [
        p
        for area in ("open", "sealed")
        for p in (daemon.spool_dir / area).rglob("*")
        if p.is_file()
    ]
    assert not leftovers, leftovers
    events = daemon.log_events()
    recovered = sum(1 for e in events if e.get("event") == "spool_recovered")
    torn = sum(1 for e in events if e.get("event") == "spool_torn_tail_truncated")
    print(
        f"\ncrash loop: {KILLS} SIGKILLs survived, {len(acked)} acknowledged events checked "
        f"({len(stored)} stored, {len(tried)} sent), {sum(c.requests for c in clients)} "
        f"requests answered, {recovered} starts recovered a spool, {torn} torn tails cut, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert len(acked) > 1000


def test_start_recovers_torn_segments_and_quarantines_garbage(tmp_path: Path) -> None:
    """A spool left with a torn segment, a zero-length one, garbage and a stray file: the
    daemon starts anyway, uploads the whole batches, quarantines (and counts) the rest,
    including the bytes cut from the torn tail."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "property"))
    from test_segment_recovery import BATCH_ENDS, BATCH_ROWS, SEGMENT

    from gravixd.core.segment import new_segment_id

    daemon = Daemon(tmp_path, "--log-level=info")
    spool = daemon.spool_dir
    for area in ("open", "sealed"):
        for stream in ("facts", "events"):
            (spool / area / stream).mkdir(parents=True)
    now_ms = int(time.time() * 1000)
    torn_id, empty_id, garbage_id = (new_segment_id(now_ms, n) for n in (1, 2, 3))
    (spool / "open" / "facts" / f"{torn_id}.arrows").write_bytes(SEGMENT[: BATCH_ENDS[1] + 7])
    (spool / "open" / "facts" / f"{empty_id}.arrows").write_bytes(b"")
    (spool / "open" / "events" / f"{garbage_id}.arrows").write_bytes(os.urandom(4096))
    (spool / "sealed" / "facts" / "notes.txt").write_bytes(b"a file someone left here")
    with daemon:
        status, body, _ = daemon.post("/v1/facts", b'{"service":"s","trace_id":"live"}')
        assert status == 202, body
        assert daemon.metric("spool_segments_quarantined_total", reason="unreadable") == 3
        assert daemon.metric("spool_segments_recovered_total", outcome="truncated") == 1
    assert daemon.proc is not None and daemon.proc.returncode == 0
    stored = column(read_store(daemon.store_dir, "facts"), "trace_id")
    assert sorted(stored) == sorted(
        [f"t-{i}" for i in range(BATCH_ROWS[0] + BATCH_ROWS[1])] + ["live"]
    )
    quarantined = sorted(p.name for p in (spool / "quarantine").rglob("*") if p.is_file())
    torn_tail = f"{torn_id}.arrows.torn-at-{BATCH_ENDS[1]}"  # the cut bytes are kept too
    assert quarantined == sorted(
        [f"{empty_id}.arrows", f"{garbage_id}.arrows", "notes.txt", torn_tail]
    )
    events = {e.get("event") for e in daemon.log_events()}
    assert {"spool_segment_quarantined", "spool_torn_tail_truncated", "spool_recovered"} <= events
