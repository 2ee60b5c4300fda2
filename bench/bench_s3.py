"""S3 store and rollup throughput against SeaweedFS on loopback.

    python -m bench.bench_s3                 # default: 5 uploads per case, 2M rollup rows
    python -m bench.bench_s3 --uploads 3 --rollup-rows 1000000

1. Upload: sealed segments of the default size go up through `S3Store.put(key, Path)`, the
   uploader's call. Cases: a segment of `segment_max_events` (1 000 000) facts as the daemon
   seals it (Arrow IPC file, zstd), and a 64 MiB file (`segment_max_bytes`, incompressible:
   the byte-size bound), each with 1 and 2 uploads at once (`upload_concurrency` = 2).
2. Rollup: one hour of 100 000-row segments rolled into zstd Parquet parts of
   `rollup_target_file_bytes` (256 MiB), against SeaweedFS and against the memory store
   (which leaves only the Arrow/Parquet work).

Prints a table and writes bench/results/s3.json. SeaweedFS runs on 127.0.0.1 on free ports
(tests/seaweed.py), on the same 2 cores as this process: figures are loopback, not network.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import trio

from gravixd.rollup import rollup
from gravixd.schema import STREAMS
from gravixd.stores import ObjectStore, open_store
from gravixd.stores.s3 import S3Store

from .machine import describe

_REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_REPO / "tests"))
from seaweed import SeaweedServer  # noqa: E402

RESULTS = _REPO / "bench" / "results" / "s3.json"
MiB = 1024 * 1024
SEGMENT_MAX_EVENTS = 1_000_000  # config default segment_max_events
SEGMENT_MAX_BYTES = 64 * MiB  # config default segment_max_bytes
ROLLUP_TARGET_FILE_BYTES = 256 * MiB  # config default rollup_target_file_bytes
HOUR = datetime(2026, 1, 1, 10, tzinfo=UTC)


def facts_table(start: int, rows: int) -> pa.Table:
    """Realistic facts built column-wise (fast for a million rows, no numpy needed)."""
    ids = pa.array(range(start, start + rows), pa.int64())
    mod = lambda n: pc.cast(pc.bit_wise_and(ids, n - 1), pa.int64())  # noqa: E731
    strs = lambda a: pc.cast(a, pa.string())  # noqa: E731
    base_ns = int(HOUR.timestamp() * 1e9)
    keys = pa.array(["zone", "region"] * rows)
    values = pc.binary_join_element_wise(
        pa.array(["z", "eu-"] * rows),
        pc.cast(pc.bit_wise_and(pa.array(range(2 * rows)), 3), pa.string()),
        "",
    )
    offsets = pa.array(range(0, 2 * rows + 1, 2), pa.int32())
    return pa.table(
        {
            "timestamp": pc.cast(pc.add(ids, base_ns), pa.timestamp("ns", tz="UTC")),
            "service": pc.binary_join_element_wise("svc-", strs(mod(8)), ""),
            "route": pc.binary_join_element_wise("/api/v1/items/{id}/", strs(mod(32)), ""),
            "method": pc.take(pa.array(["GET", "POST", "PUT", "DELETE"]), mod(4)),
            "status_code": pc.cast(
                pc.take(pa.array([200, 200, 201, 404, 500, 200, 204, 302]), mod(8)), pa.int32()
            ),
            "duration_ms": pc.divide(pc.cast(pc.bit_wise_and(ids, 1023), pa.float64()), 7.0),
            "bytes_in": pc.bit_wise_and(ids, 4095),
            "bytes_out": pc.multiply(pc.bit_wise_and(ids, 65535), 3),
            "trace_id": pc.binary_join_element_wise("0123456789abcdef", strs(ids), ""),
            "attributes": pa.MapArray.from_arrays(offsets, keys, values),
        },
        schema=STREAMS["facts"],
    )


def arrow_file(table: pa.Table, path: Path) -> Path:
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with (
        pa.OSFile(str(path), "wb") as sink,
        pa.ipc.new_file(sink, table.schema, options=options) as w,
    ):
        for batch in table.to_batches(max_chunksize=8192):  # a group commit's worth each
            w.write_batch(batch)
    return path


async def bench_upload(
    store: ObjectStore, path: Path, uploads: int, concurrency: int
) -> dict[str, Any]:
    size = path.stat().st_size
    keys = [f"bench/upload/{path.stem}-{concurrency}-{i:03d}.arrow" for i in range(uploads)]
    limiter = trio.Semaphore(concurrency)
    durations: list[float] = []

    async def one(key: str) -> None:
        async with limiter:
            t0 = time.perf_counter()
            await store.put(key, path)
            durations.append(time.perf_counter() - t0)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(one, key)
    elapsed = time.perf_counter() - started
    for key in keys:
        await store.delete(key)
    durations.sort()
    return {
        "segment_bytes": size,
        "uploads": uploads,
        "concurrency": concurrency,
        "seconds": round(elapsed, 3),
        "mb_per_second": round(size * uploads / elapsed / 1e6, 1),
        "segments_per_second": round(uploads / elapsed, 2),
        "upload_seconds_p50": round(durations[len(durations) // 2], 3),
        "upload_seconds_max": round(durations[-1], 3),
    }


async def bench_rollup(store: ObjectStore, rows: int, segment_rows: int) -> dict[str, Any]:
    segments = max(1, rows // segment_rows)
    for n in range(segments):
        table = facts_table(n * segment_rows, segment_rows)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(
            sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")
        ) as w:
            w.write_table(table, max_chunksize=8192)
        await store.put(
            f"facts/dt={HOUR:%Y-%m-%d}/hour={HOUR:%H}/seg{n:05d}.arrow",
            sink.getvalue().to_pybytes(),
        )
    t0 = time.perf_counter()
    report = await rollup(
        store,
        streams=("facts",),
        target_file_bytes=ROLLUP_TARGET_FILE_BYTES,
        now=HOUR + timedelta(hours=2),
    )
    elapsed = time.perf_counter() - t0
    assert report.ok and report.rows == segments * segment_rows, report.errors
    for key in await store.list("rollup/"):
        await store.delete(key)
    return {
        "store": store.url.split(":")[0],
        "segments": segments,
        "rows": report.rows,
        "parts": report.parts_written,
        "parquet_bytes": report.bytes_written,
        "seconds": round(elapsed, 3),
        "rows_per_second": round(report.rows / elapsed),
    }


async def run(args: argparse.Namespace, server: SeaweedServer, workdir: Path) -> dict[str, Any]:
    store = open_store(f"s3://{server.bucket}/bench", **server.store_options())
    assert isinstance(store, S3Store)
    events_segment = arrow_file(facts_table(0, SEGMENT_MAX_EVENTS), workdir / "events-1M.arrow")
    bytes_segment = workdir / "bytes-64MiB.arrow"
    bytes_segment.write_bytes(os.urandom(SEGMENT_MAX_BYTES))
    upload = []
    for path, case in ((events_segment, "1M facts (zstd IPC)"), (bytes_segment, "64 MiB")):
        for concurrency in (1, 2):
            row = {"case": case, **await bench_upload(store, path, args.uploads, concurrency)}
            upload.append(row)
            print_row(
                row,
                (
                    "case",
                    "segment_bytes",
                    "concurrency",
                    "mb_per_second",
                    "segments_per_second",
                    "upload_seconds_p50",
                ),
            )
    rollups = []
    for target in (store, open_store("memory://")):
        row = await bench_rollup(target, args.rollup_rows, args.segment_rows)
        rollups.append(row)
        print_row(
            row,
            ("store", "segments", "rows", "parts", "parquet_bytes", "seconds", "rows_per_second"),
        )
    await store.aclose()
    return {
        "upload": upload,
        "rollup": rollups,
        "events_segment_bytes": events_segment.stat().st_size,
    }


def print_row(row: dict[str, Any], columns: tuple[str, ...]) -> None:
    print("  ".join(f"{c}={row[c]}" for c in columns), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--uploads", type=int, default=5, help="uploads per case")
    parser.add_argument("--rollup-rows", type=int, default=2_000_000)
    parser.add_argument("--segment-rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    machine = describe()
    with (
        tempfile.TemporaryDirectory(prefix="gravixd-bench-s3-") as tmp,
        SeaweedServer(Path(tmp) / "seaweed") as server,
    ):
        results = trio.run(run, args, server, Path(tmp))
    doc = {
        "scenario": "s3",
        "command": "python -m bench.bench_s3 "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "seaweedfs": "weed mini on 127.0.0.1 (same machine)",
        **results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(format_tables(doc))
    print(f"wrote {RESULTS}")
    return 0


def format_tables(doc: dict[str, Any]) -> str:
    lines = [
        "| upload case | bytes | concurrency | MB/s | segments/s | p50 s |",
        "|---|---|---|---|---|---|",
    ]
    for r in doc["upload"]:
        lines.append(
            f"| {r['case']} | {r['segment_bytes']:,} | {r['concurrency']} | {r['mb_per_second']} "
            f"| {r['segments_per_second']} | {r['upload_seconds_p50']} |"
        )
    lines += [
        "",
        "| rollup store | segments | rows | parts | Parquet bytes | s | rows/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rollup"]:
        lines.append(
            f"| {r['store']} | {r['segments']} | {r['rows']:,} | {r['parts']} "
            f"| {r['parquet_bytes']:,} | {r['seconds']} | {r['rows_per_second']:,} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
