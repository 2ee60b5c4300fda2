"""Test segments for rollup tests: Arrow IPC files (zstd) or Parquet with the streams'
schemas from gravixd.schema, deterministic content, keyed as the daemon keys them."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from gravixd.schema import SEVERITY_NAMES, STREAMS


def facts_table(hour: datetime, start: int, rows: int) -> pa.Table:
    ids = range(start, start + rows)
    return pa.table(
        {
            "timestamp": [hour + timedelta(milliseconds=i) for i in ids],
            "service": [f"svc-{i % 5}" for i in ids],
            "route": [f"/users/{{id}}/{i % 17}" for i in ids],
            "method": [("GET", "POST", "PUT")[i % 3] for i in ids],
            "status_code": [(200, 201, 404, 500)[i % 4] for i in ids],
            "duration_ms": [i * 0.25 for i in ids],
            "bytes_in": [i * 3 for i in ids],
            "bytes_out": [i * 7 for i in ids],
            "trace_id": [f"{i:032x}" for i in ids],
            "attributes": [[("row", str(i)), ("zone", f"z{i % 3}")] for i in ids],
        },
        schema=STREAMS["facts"],
    )


def events_table(hour: datetime, start: int, rows: int) -> pa.Table:
    ids = range(start, start + rows)
    return pa.table(
        {
            "timestamp": [hour + timedelta(milliseconds=i) for i in ids],
            "service": [f"svc-{i % 5}" for i in ids],
            "kind": [("deploy", "restart", "error")[i % 3] for i in ids],
            "severity": [SEVERITY_NAMES[i % len(SEVERITY_NAMES)] for i in ids],
            "message": [f"event number {i}" for i in ids],
            "trace_id": [f"{i:032x}" for i in ids],
            "attributes": [[("row", str(i))] for i in ids],
        },
        schema=STREAMS["events"],
    )


def table_for(stream: str, hour: datetime, start: int, rows: int) -> pa.Table:
    return (facts_table if stream == "facts" else events_table)(hour, start, rows)


def arrow_file_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_file(sink, table.schema, options=options) as writer:
        # Several record batches, as a spool segment has one per group commit.
        for batch in table.to_batches(max_chunksize=max(1, table.num_rows // 4 or 1)):
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def segment_key(stream: str, hour: datetime, segment_id: str, ext: str = "arrow") -> str:
    return f"{stream}/dt={hour:%Y-%m-%d}/hour={hour:%H}/{segment_id}.{ext}"


def segment_id(hour: datetime, n: int) -> str:
    """A sortable, ULID-like id (26 chars): hour then counter."""
    return f"{int(hour.timestamp() * 1000):013d}{n:013d}"
