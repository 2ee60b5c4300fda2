"""Iceberg tables: freshness, commits, compaction (no Trino needed).

    python -m bench.bench_iceberg                  # all three, short runs
    python -m bench.bench_iceberg --seconds 20 --compaction-rows 1000000

1. Freshness: one probe event every 0.1 s, each POSTed to a daemon with a sqlite catalog
   and a local store; a probe is visible at the commit time of the first snapshot that
   holds it. Reported: 202 -> visible, p50 / p99 / max. It is bounded by
   `segment_max_age_seconds` + `iceberg_commit_interval_seconds` (+ seal, upload and commit
   time): the run uses 2 s + 2 s so that it fits in seconds; the defaults (60 s + 10 s) scale
   it accordingly.
2. Commits with 1 and 4 daemons on one catalog, each under a steady load of 1000-event
   POSTs: commits per minute (snapshots of the table), commit duration p50 / p99 (the
   daemons' `iceberg_committed` log lines), conflicts and failed attempts.
3. Compaction: one closed event hour of N events (default 1 000 000) in 20 segment files
   committed to the table, then `gravixd rollup`'s table upkeep (one atomic replace):
   seconds of wall time and of CPU.

Prints a table and writes bench/results/iceberg.json. Everything runs on 127.0.0.1, on the
same cores as this process: a busy box moves the figures; compare within one run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import trio

from .machine import describe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from daemon import Daemon, ndjson  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "iceberg.json"
HOUR_NS = 3_600_000_000_000


def _catalog(uri: str) -> Any:
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog("gravix", uri=uri, init_catalog_tables="false")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def freshness(workdir: Path, seconds: float) -> dict[str, Any]:
    uri = f"sqlite:///{workdir}/catalog.db"
    acked: dict[str, float] = {}
    args = ("--segment-max-age-seconds=2", "--iceberg-commit-interval-seconds=2")
    with Daemon(workdir / "d", "--iceberg-catalog-uri", uri, *args, "--log-level=info") as d:
        conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=10)
        end = time.time() + seconds
        n = 0
        while time.time() < end:
            trace = f"probe-{n}"
            conn.request("POST", "/v1/facts", json.dumps({"service": "p", "trace_id": trace}),
                         {"Content-Type": "application/json"})  # fmt: skip
            response = conn.getresponse()
            response.read()
            if response.status == 202:
                acked[trace] = time.time()
            n += 1
            time.sleep(0.1)
        conn.close()
        deadline = time.time() + 30
        while time.time() < deadline:
            table = _catalog(uri).load_table(("gravix", "facts"))
            if table.scan().to_arrow().num_rows >= len(acked):
                break
            time.sleep(0.2)
    table = _catalog(uri).load_table(("gravix", "facts"))
    visible: dict[str, float] = {}
    for snapshot in sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms):
        for trace in (
            table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()["trace_id"].to_pylist()
        ):
            visible.setdefault(trace, snapshot.timestamp_ms / 1000)
    lags = [visible[t] - acked[t] for t in acked if t in visible]
    return {
        "probes": len(acked),
        "visible": len(lags),
        "segment_max_age_seconds": 2,
        "iceberg_commit_interval_seconds": 2,
        "p50_seconds": round(_percentile(lags, 0.5), 3),
        "p99_seconds": round(_percentile(lags, 0.99), 3),
        "max_seconds": round(max(lags), 3) if lags else None,
    }


def commits(workdir: Path, daemons: int, seconds: float) -> dict[str, Any]:
    uri = f"sqlite:///{workdir}/catalog.db"
    store_url = f"file://{workdir / 'store'}"
    args = ("--iceberg-catalog-uri", uri, "--segment-max-age-seconds=1",
            "--iceberg-commit-interval-seconds=1", "--log-level=info")  # fmt: skip
    group = [Daemon(workdir / f"d{i}", *args, store_url=store_url) for i in range(daemons)]
    body = ndjson({"service": "c", "trace_id": f"t{i}"} for i in range(1000))
    stop = threading.Event()
    posted = [0] * daemons

    def load(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", group[i].http_port, timeout=30)
        while not stop.is_set():
            conn.request("POST", "/v1/facts", body, {"Content-Type": "application/x-ndjson"})
            response = conn.getresponse()
            response.read()
            posted[i] += 1000 if response.status == 202 else 0
        conn.close()

    for d in group:
        d.start()
    try:
        threads = [threading.Thread(target=load, args=(i,)) for i in range(daemons)]
        started = time.time()
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join()
        for d in group:
            d.stop()
        elapsed = time.time() - started
        durations, conflicts, failures = [], 0, 0
        for d in group:
            for event in d.log_events():
                if event.get("event") == "iceberg_committed":
                    durations.append(event["seconds"])
                    conflicts += event.get("conflicts", 0)
                failures += event.get("event") == "iceberg_commit_retry"
    finally:
        for d in group:
            d.kill()
    table = _catalog(uri).load_table(("gravix", "facts"))
    rows = table.scan().to_arrow().num_rows
    return {
        "daemons": daemons,
        "seconds": round(elapsed, 1),
        "events_acknowledged": sum(posted),
        "rows_in_table": rows,
        "snapshots": len(table.metadata.snapshots),
        "commits_per_minute": round(len(table.metadata.snapshots) / elapsed * 60, 1),
        "commit_p50_seconds": round(_percentile(durations, 0.5), 3),
        "commit_p99_seconds": round(_percentile(durations, 0.99), 3),
        "failed_attempts": failures,
        "conflicts_retried": conflicts,
    }


def compaction(workdir: Path, rows: int, files: int = 20) -> dict[str, Any]:
    from gravixd.iceberg.catalog import CatalogSettings, open_catalog
    from gravixd.iceberg.commit import SegmentFiles, commit_segments
    from gravixd.iceberg.datafiles import write_table_file
    from gravixd.iceberg.tables import ensure_table, object_location, table_location
    from gravixd.rollup.tables import upkeep_tables
    from gravixd.schema import FACTS_SCHEMA
    from gravixd.stores.local import LocalStore

    workdir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{workdir}/catalog.db"
    store = LocalStore(workdir / "store")
    settings = CatalogSettings(uri=uri)
    catalog = open_catalog(settings)
    table = ensure_table(catalog, "gravix", "facts", table_location(store, "gravix", "facts"))
    hour_start = (time.time_ns() // HOUR_NS - 2) * HOUR_NS
    per_file = rows // files
    segments = []
    for f in range(files):
        base = f * per_file
        batch = pa.table(
            {
                "timestamp": pa.array(
                    [hour_start + (base + i) * 1000 for i in range(per_file)],
                    pa.timestamp("ns", tz="UTC"),
                ),  # fmt: skip
                "service": [f"svc-{i % 7}" for i in range(per_file)],
                "route": [f"/r/{i % 13}" for i in range(per_file)],
                "method": ["GET"] * per_file,
                "status_code": pa.array([200 + i % 5 for i in range(per_file)], pa.int32()),
                "duration_ms": [float(i % 997) for i in range(per_file)],
                "bytes_in": [i % 4096 for i in range(per_file)],
                "bytes_out": [i % 65536 for i in range(per_file)],
                "trace_id": [f"{f:02d}-{i:08d}" for i in range(per_file)],
                "attributes": pa.array(
                    [[("k", "v")]] * per_file, FACTS_SCHEMA.field("attributes").type
                ),
            },
            schema=FACTS_SCHEMA,
        )
        segment_id = f"01KC{f:022d}"
        key = f"facts/dt=x/hour=00/{segment_id}.parquet"
        path = workdir / "store" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        write_table_file(batch, path)
        segments.append(SegmentFiles(segment_id, ((path, object_location(store, key)),)))
    commit_segments(table, segments)

    async def run() -> Any:
        return await upkeep_tables(
            store, settings, streams=("facts",), commit_new=False,
            now_unix_seconds=time.time(), retention_seconds=7 * 86400, target_file_bytes=256 << 20,
        )  # fmt: skip

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    report = trio.run(run)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    facts = report.tables[0]
    assert facts.rows_compacted == per_file * files, facts
    return {
        "events": per_file * files,
        "files_in": facts.files_replaced,
        "files_out": facts.files_written,
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_iceberg")
    parser.add_argument("--seconds", type=float, default=15.0, help="freshness/commit run length")
    parser.add_argument("--compaction-rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["freshness", "commits", "compaction"])
    args = parser.parse_args(argv)
    results: dict[str, Any] = {
        "machine": describe(),
        "when": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
    }
    with tempfile.TemporaryDirectory(prefix="gravixd-bench-iceberg-") as tmp:
        root = Path(tmp)
        if args.only in (None, "freshness"):
            results["freshness"] = freshness(root / "fresh", args.seconds)
            print("freshness:", results["freshness"])
        if args.only in (None, "commits"):
            results["commits"] = [commits(root / f"c{n}", n, args.seconds) for n in (1, 4)]
            for row in results["commits"]:
                print("commits:", row)
        if args.only in (None, "compaction"):
            results["compaction"] = compaction(root / "compact", args.compaction_rows)
            print("compaction:", results["compaction"])
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
