"""kill -9 under load loses no acknowledged event, and duplicates none."""

from __future__ import annotations

import collections
import json
import threading
import time
from pathlib import Path

from daemon import Daemon, read_store


def _load(d: Daemon, client: int, acked: list[str], stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        size = 1 if n % 3 == 0 else 200  # single events and batches
        ids = [f"c{client}-{n}-{i}" for i in range(size)]
        body = json.dumps([{"service": "crash", "trace_id": t} for t in ids]).encode()
        n += 1
        try:
            status, _, _ = d.post("/v1/facts", body)
        except OSError:
            continue  # the daemon died mid-request: nothing was acknowledged
        if status == 202:
            acked.extend(ids)


def test_sigkill_under_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    d = Daemon(tmp_path, "--segment-max-age-seconds", "0.3").start()
    acked: list[str] = []
    stop = threading.Event()
    clients = [threading.Thread(target=_load, args=(d, c, acked, stop)) for c in range(4)]
    for t in clients:
        t.start()
    time.sleep(1.5)
    d.kill()  # SIGKILL, mid-load
    stop.set()
    for t in clients:
        t.join()
    assert len(acked) > 100

    d.start()  # recovery seals and uploads what the killed process left
    assert d.stop() == 0
    stored = collections.Counter(read_store(d.store_dir, "facts").column("trace_id").to_pylist())
    missing = [t for t in acked if stored[t] == 0]
    duplicated = [t for t, count in stored.items() if count > 1]
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {missing[:3]}"
    assert not duplicated, f"{len(duplicated)} events stored twice, e.g. {duplicated[:3]}"
