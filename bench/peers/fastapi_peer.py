"""The stack a Python user would otherwise write: FastAPI on uvicorn, pydantic models, pyarrow.

It does the work gravixd does for `POST /v1/facts`, written the way the FastAPI docs teach:
pydantic validates each fact (service required and non-empty, status_code 0..999, sizes
within int64, unknown keys ignored), the facts become a pyarrow RecordBatch with gravixd's
own FACTS_SCHEMA, the batch is appended to an Arrow IPC stream file, and the file is fsynced
before the 202 (the same durability as `ack = durable`). JSON arrays or objects, NDJSON and
protobuf `RequestFactBatch` bodies, optionally gzip-compressed, are accepted.

The fsync runs in FastAPI's thread pool (a blocking call in an `async def` would stall the
event loop); a lock keeps appends whole. No group commit: that is what a user would write.
It must never be tuned beyond what such a user would do: it is the yardstick, not a rival.

Run: python -m bench.peers.fastapi_peer --port P --out DIR [--no-fsync]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gravixd.proto.gravix.v1 import events_pb2
from gravixd.schema import FACTS_SCHEMA, MAX_INT64, MAX_STATUS_CODE

MAX_BODY_BYTES = 8 * 1024 * 1024  # gravixd's default max_body_bytes, after decompression


class RequestFact(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timestamp_unix_nano: int = 0
    service: Annotated[str, Field(min_length=1)]
    route: str = ""
    method: str = ""
    status_code: Annotated[int, Field(ge=0, le=MAX_STATUS_CODE)] = 0
    duration_ms: float = 0.0
    bytes_in: Annotated[int, Field(ge=0, le=MAX_INT64)] = 0
    bytes_out: Annotated[int, Field(ge=0, le=MAX_INT64)] = 0
    trace_id: str = ""
    attributes: dict[str, str] = {}


_facts_adapter = TypeAdapter(list[RequestFact])


class SegmentWriter:
    """An Arrow IPC stream file that every accepted batch is appended to."""

    def __init__(self, path: Path, fsync: bool) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - lives as long as the server
        self._writer = pa.ipc.new_stream(self._file, FACTS_SCHEMA)
        self._fsync = fsync
        self._lock = threading.Lock()

    def append(self, batch: pa.RecordBatch) -> None:
        with self._lock:
            self._writer.write_batch(batch)
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, "body too large")
        return body
    if encoding != "gzip":
        raise HTTPException(415, f"unsupported Content-Encoding {encoding!r}")
    try:
        out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise HTTPException(400, f"bad gzip body: {exc}") from exc
    if len(out) > MAX_BODY_BYTES:
        raise HTTPException(413, "body too large")
    return out


def _facts_from_json(body: bytes, content_type: str) -> list[RequestFact]:
    if content_type == "application/x-ndjson":
        return [RequestFact.model_validate_json(line) for line in body.splitlines() if line.strip()]
    if body.lstrip()[:1] == b"[":
        return _facts_adapter.validate_json(body)
    return [RequestFact.model_validate_json(body)]


def _batch_from_models(facts: list[RequestFact], now_ns: int) -> pa.RecordBatch:
    columns: dict[str, list] = {name: [] for name in FACTS_SCHEMA.names}
    for f in facts:
        columns["timestamp"].append(f.timestamp_unix_nano or now_ns)
        columns["service"].append(f.service)
        columns["route"].append(f.route)
        columns["method"].append(f.method)
        columns["status_code"].append(f.status_code)
        columns["duration_ms"].append(f.duration_ms)
        columns["bytes_in"].append(f.bytes_in)
        columns["bytes_out"].append(f.bytes_out)
        columns["trace_id"].append(f.trace_id)
        columns["attributes"].append(list(f.attributes.items()))
    return pa.RecordBatch.from_pydict(columns, schema=FACTS_SCHEMA)


def _batch_from_protobuf(body: bytes, now_ns: int) -> pa.RecordBatch:
    batch = events_pb2.RequestFactBatch()
    try:
        batch.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError
        raise HTTPException(400, f"bad protobuf body: {exc}") from exc
    columns: dict[str, list] = {name: [] for name in FACTS_SCHEMA.names}
    for i, f in enumerate(batch.facts):
        if not f.service:
            raise HTTPException(400, f"facts[{i}].service: expected a non-empty string")
        if f.status_code > MAX_STATUS_CODE:
            raise HTTPException(400, f"facts[{i}].status_code: expected 0..999")
        if f.bytes_in > MAX_INT64 or f.bytes_out > MAX_INT64:
            raise HTTPException(400, f"facts[{i}]: bytes_in/bytes_out above int64")
        columns["timestamp"].append(f.timestamp_unix_nano or now_ns)
        columns["service"].append(f.service)
        columns["route"].append(f.route)
        columns["method"].append(f.method)
        columns["status_code"].append(f.status_code)
        columns["duration_ms"].append(f.duration_ms)
        columns["bytes_in"].append(f.bytes_in)
        columns["bytes_out"].append(f.bytes_out)
        columns["trace_id"].append(f.trace_id)
        columns["attributes"].append(list(f.attributes.items()))
    return pa.RecordBatch.from_pydict(columns, schema=FACTS_SCHEMA)


def create_app(out_dir: Path, fsync: bool = True) -> FastAPI:
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = SegmentWriter(out_dir / f"facts-{os.getpid()}.arrow", fsync=fsync)
    app = FastAPI()

    @app.post("/v1/facts", status_code=202)
    async def post_facts(request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        body = _decompress(await request.body(), request.headers.get("content-encoding", ""))
        now_ns = time.time_ns()
        if content_type in ("application/json", "application/x-ndjson"):
            try:
                facts = _facts_from_json(body, content_type)
            except ValidationError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            batch = _batch_from_models(facts, now_ns)
        elif content_type == "application/x-protobuf":
            batch = _batch_from_protobuf(body, now_ns)
        else:
            raise HTTPException(415, f"unsupported Content-Type {content_type!r}")
        await run_in_threadpool(writer.append, batch)
        return JSONResponse({"accepted": batch.num_rows}, status_code=202)

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for the IPC file")
    parser.add_argument("--no-fsync", action="store_true", help="ack after write, no fsync")
    args = parser.parse_args()
    app = create_app(args.out, fsync=not args.no_fsync)
    # One worker (one core), no access log (gravixd logs no line per request either).
    # uvicorn picks uvloop and httptools when installed (the `bench` extra installs them,
    # as `pip install "fastapi[standard]"` would).
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
