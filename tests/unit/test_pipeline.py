"""Pipeline, directly, on a real spool: what it acknowledges is durable and counted, what it
refuses names the limit, and the injected Clock is where time of receipt comes from (down
to the stored object's hour partition, through a whole daemon)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
import trio
import trio.testing

from gravixd.config import load
from gravixd.core.decode import as_record_batch, decode_ndjson, decode_protobuf_pure
from gravixd.errors import SpoolFullError
from gravixd.metrics import Metrics
from gravixd.runtime.app import Daemon
from gravixd.runtime.clock import Clock
from gravixd.runtime.pipeline import Pipeline
from gravixd.runtime.spool import Spool, SpoolSettings

# 2031-05-26T13:20:00Z: far from any day a test runs on, so nothing else could produce it.
PINNED_UNIX_NANO = 1_937_568_000_000_000_000


def make_pipeline(tmp_path: Path, max_spool_bytes: int = 1 << 30) -> Pipeline:
    metrics = Metrics()
    clock = Clock(lambda: PINNED_UNIX_NANO)
    settings = SpoolSettings(
        segment_max_bytes=64 << 20,
        segment_max_events=1_000_000,
        segment_max_age_seconds=3600,
        segment_format="arrow",
        segment_compression="lz4",
        max_spool_bytes=max_spool_bytes,
    )
    spool = Spool(tmp_path, settings, metrics, clock_unix_ms=clock.unix_ms)
    spool.recover_sync()
    return Pipeline(
        spool, metrics, ack="durable", protobuf_decoder=decode_protobuf_pure, clock=clock
    )


def batch(pipeline: Pipeline, lines: int) -> pa.RecordBatch:
    body = b"".join(b'{"service":"s","trace_id":"t%d"}\n' % i for i in range(lines))
    return as_record_batch("facts", decode_ndjson("facts", body, pipeline.now_unix_nano()))


async def test_ingest_returns_once_durable_and_counts_by_source(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.spool.run)
        await pipeline.ingest("facts", batch(pipeline, 3), "tcp")
        segment = pipeline.spool.streams["facts"]._segment
        assert segment is not None and segment.rows == 3  # written and fsynced
        nursery.cancel_scope.cancel()
    accepted = pipeline.metrics.registry.get_sample_value(
        "ingestion_events_accepted_total", {"stream": "facts", "source": "tcp"}
    )
    assert accepted == 3


async def test_a_full_spool_refuses_before_appending_and_names_the_limit(tmp_path: Path) -> None:
    pipeline = make_pipeline(tmp_path, max_spool_bytes=1)
    pipeline.spool.ledger.reserve(1)
    with pytest.raises(SpoolFullError, match="max_spool_bytes=1") as refused:
        await pipeline.ingest("facts", batch(pipeline, 1), "http")
    assert refused.value.limit == "max_spool_bytes"
    assert pipeline.spool.streams["facts"]._pending == []


async def test_the_injected_clock_stamps_receipt_and_picks_the_partition(tmp_path: Path) -> None:
    flags = {
        "http_listen": "127.0.0.1:0",
        "tcp_listen": "",
        "metrics_listen": "127.0.0.1:0",
        "spool_dir": str(tmp_path / "spool"),
        "store_url": f"file://{tmp_path / 'store'}",
    }
    daemon = Daemon(load(flags, {}), clock=Clock(lambda: PINNED_UNIX_NANO))
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(daemon.run)
        stream = await trio.open_tcp_stream("127.0.0.1", ports.http)
        body = b'{"service":"clocked"}'
        await stream.send_all(
            b"POST /v1/facts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        answer = b""
        async with stream:
            while chunk := await stream.receive_some():
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 202 Accepted")
        os.kill(os.getpid(), signal.SIGTERM)  # drain: seal and upload
    [path] = (tmp_path / "store").rglob("*.parquet")  # the default segment format
    assert "dt=2031-05-26/hour=13" in str(path)
    table = pq.read_table(path)
    assert table.column("timestamp").cast(pa.int64()).to_pylist() == [PINNED_UNIX_NANO]


async def test_segment_age_follows_the_injected_clock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Wall time that moves with trio's MockClock: a segment rotates at its age limit
    without the test sleeping for it."""
    clock = Clock.fixed_then_following_trio(PINNED_UNIX_NANO)
    settings = SpoolSettings(
        segment_max_bytes=64 << 20,
        segment_max_events=1_000_000,
        segment_max_age_seconds=600,
        segment_format="arrow",
        segment_compression="lz4",
        max_spool_bytes=1 << 30,
    )
    spool = Spool(tmp_path, settings, Metrics(), clock_unix_ms=clock.unix_ms)
    spool.recover_sync()
    pipeline = Pipeline(
        spool, spool.metrics, ack="durable", protobuf_decoder=decode_protobuf_pure, clock=clock
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(spool.run)
        started = trio.current_time()
        await pipeline.ingest("facts", batch(pipeline, 1), "http")
        segment = await spool.sealed_segments.receive()  # sealed once 600 s have passed
        nursery.cancel_scope.cancel()
    assert trio.current_time() - started >= 600
    assert clock.unix_nano() - PINNED_UNIX_NANO >= 600 * 10**9
    assert segment.stream == "facts"
