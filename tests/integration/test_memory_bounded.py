"""Memory is bounded by the caps, whatever the wire carries: `max_in_flight_bytes` counts a
request's bytes after gzip inflates them and the decoder's working memory and decoded batch,
so many small gzip bodies that inflate to megabytes each cannot take the daemon's RSS past
the cap (they used to: 64 such clients reached 2.7 GiB). Shed requests get 503 +
Retry-After and are retried; every event of every 202 is stored.
"""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import time
from collections import Counter
from pathlib import Path

from daemon import Daemon, read_store, vm_kib

CLIENTS = 64
REQUESTS_PER_CLIENT = 1
# ~1.07 KiB each: ~7.2 MiB inflated, ~40 KB on the wire.
EVENTS_PER_REQUEST = 7_000
# With the default caps (max_in_flight_bytes 256 MiB), from a ~90 MiB baseline: ~320 MiB
# measured; the code before this test, counting wire bytes only, reached 785 MiB.
RSS_BOUND_MIB = 512


def gzip_body(trace_id: str) -> bytes:
    event = json.dumps({"service": "gz", "route": "/" + "r" * 1000, "trace_id": trace_id})
    return gzip.compress(("[" + ",".join([event] * EVENTS_PER_REQUEST) + "]").encode(), 1)


def test_gzip_inflating_clients_cannot_take_memory_past_the_cap(tmp_path: Path) -> None:
    # Sealing reads a whole segment into memory (the spool's, not the requests'): small
    # segments keep that apart from what this test measures.
    with Daemon(
        tmp_path,
        "--log-level=info",
        "--request-timeout-seconds=60",
        "--segment-max-bytes=16MiB",
    ) as d:
        assert d.proc is not None
        bodies = {
            f"c{c}-r{r}": gzip_body(f"c{c}-r{r}")
            for c in range(CLIENTS)
            for r in range(REQUESTS_PER_CLIENT)
        }
        assert 7 << 20 < len(gzip.decompress(bodies["c0-r0"])) < 8 << 20
        assert len(bodies["c0-r0"]) < 100_000
        start = threading.Barrier(CLIENTS)
        accepted: list[str] = []
        statuses: Counter[int] = Counter()
        errors: list[str] = []

        def client(c: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=120)
            start.wait()
            for r in range(REQUESTS_PER_CLIENT):
                trace_id = f"c{c}-r{r}"
                for _attempt in range(200):
                    try:
                        conn.request(
                            "POST",
                            "/v1/facts",
                            bodies[trace_id],
                            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                        )
                        response = conn.getresponse()
                        response.read()
                    except (OSError, http.client.HTTPException) as exc:
                        errors.append(repr(exc))
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=120)
                        continue
                    statuses[response.status] += 1
                    if response.status == 202:
                        accepted.append(trace_id)
                        break
                    assert response.status == 503, response.status
                    assert response.getheader("retry-after")
                    time.sleep(0.25)  # a shed client waits, as Retry-After says (a bit less)
            conn.close()

        threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        peak_mib = vm_kib(d.proc.pid, "VmHWM") / 1024
        print(f"\ngzip load: {dict(statuses)}, peak RSS {peak_mib:.0f} MiB")
        assert errors == []
        assert sorted(accepted) == sorted(bodies)  # every request got its 202 in the end
        assert peak_mib < RSS_BOUND_MIB, f"peak RSS {peak_mib:.0f} MiB under gzip load"
    stored = Counter(read_store(d.store_dir, "facts").column("trace_id").to_pylist())
    assert stored == dict.fromkeys(bodies, EVENTS_PER_REQUEST)
