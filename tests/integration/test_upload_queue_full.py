"""One definition of "full": the upload queue's slots live in the spool's ledger, beside its
bytes, and every shedder and waiter asks the ledger.

Before, a full upload queue (sealed segments waiting for a slow store) with spool bytes
below `max_spool_bytes` made `Pipeline.ingest` refuse while `wait_writable` returned at
once: the raw TCP writer retried without ever yielding, the event loop spun and the
uploader never ran again. These tests run the real pieces (spool, ledger, sealer, uploader,
pipeline, raw TCP listener) against a store whose `put` blocks until released.
"""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pytest
import trio
import trio.testing

from gravixd.core.decode import decode_protobuf_pure
from gravixd.errors import SpoolFullError
from gravixd.metrics import Metrics
from gravixd.runtime.pipeline import Pipeline
from gravixd.runtime.spool import Spool, SpoolSettings
from gravixd.runtime.tcp_server import serve_tcp_listener
from gravixd.runtime.uploader import Uploader
from gravixd.stores.base import Body
from gravixd.stores.memory import MemoryStore

NOW_MS = 1_800_000_000_000
UPLOAD_SLOTS = 2


class BlockingStore(MemoryStore):
    """Every `put` waits until `open` is set (a store that stopped answering)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = trio.Event()
        self.waiting = 0

    async def put(self, key: str, body: Body) -> None:
        self.waiting += 1
        try:
            await self.open.wait()
        finally:
            self.waiting -= 1
        await super().put(key, body)


class Parts:
    def __init__(self, tmp_path: Path) -> None:
        self.metrics = Metrics()
        settings = SpoolSettings(
            segment_max_bytes=64 << 20,
            segment_max_events=1,  # every commit rotates: one segment per line
            segment_max_age_seconds=3600,
            segment_format="arrow",
            segment_compression="lz4",
            max_spool_bytes=1 << 30,  # far from full: only the queue fills
        )
        self.spool = Spool(
            tmp_path / "spool",
            settings,
            self.metrics,
            clock_unix_ms=lambda: NOW_MS,
            upload_queue_segments=UPLOAD_SLOTS,
        )
        self.spool.recover_sync()
        self.store = BlockingStore()
        self.uploader = Uploader(
            self.store,
            self.spool.sealed_segments,
            self.spool.ledger,
            self.spool.dir,
            self.metrics,
            concurrency=1,
            retry_initial_seconds=0.01,
            retry_max_seconds=0.1,
            clock_unix_seconds=lambda: NOW_MS / 1000,
        )
        self.pipeline = Pipeline(
            self.spool, self.metrics, ack="durable", protobuf_decoder=decode_protobuf_pure
        )

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self.uploader.run)
        await nursery.start(self.spool.run)

    async def fill_upload_queue(self) -> None:
        """Ingest until every upload slot is taken (one in upload, the rest queued)."""
        for i in range(UPLOAD_SLOTS):
            batch = _line_batch(i)
            await self.pipeline.ingest("facts", batch, "test")
        with trio.fail_after(30):
            while not self.spool.full:
                await trio.sleep(0.01)


def _line_batch(i: int):  # type: ignore[no-untyped-def]
    from gravixd.core.decode import as_record_batch, decode_ndjson

    line = b'{"service":"s","trace_id":"t%d"}\n' % i
    return as_record_batch("facts", decode_ndjson("facts", line, NOW_MS * 1_000_000))


async def test_full_upload_queue_is_full_for_every_shedder_and_waiter(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    async with trio.open_nursery() as nursery:
        await parts.start(nursery)
        await parts.fill_upload_queue()
        ledger = parts.spool.ledger
        assert ledger.used_bytes < ledger.limit_bytes  # bytes are not what is full
        assert ledger.full_reason() == "upload_queue"
        # The 503's message names the limit that tripped.
        with pytest.raises(SpoolFullError, match="sealed segments") as refused:
            parts.pipeline.check_writable()
        assert refused.value.limit == "upload_queue"
        # The waiter waits on the same predicate (it used to return at once here).
        woke = trio.Event()

        async def writer() -> None:
            await parts.pipeline.wait_writable()
            woke.set()

        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()
        parts.store.open.set()  # the store answers again: uploads free the slots
        with trio.fail_after(30):
            await woke.wait()
        assert not ledger.full
        nursery.cancel_scope.cancel()


async def test_raw_tcp_writer_waits_for_a_full_upload_queue_then_delivers_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's reproduction: a raw TCP sender keeps writing while the store blocks."""
    parts = Parts(tmp_path)
    # A spin shows as refusals with no checkpoint between them; the real check, counted.
    refusals_in_a_row = 0
    real_check = Pipeline.check_writable

    def counting_check(self: Pipeline) -> None:
        nonlocal refusals_in_a_row
        try:
            real_check(self)
        except SpoolFullError:
            refusals_in_a_row += 1
            if refusals_in_a_row > 1000:  # old code: the loop never yields again
                raise AssertionError("ingest refused 1000 times without waiting") from None
            raise
        refusals_in_a_row = 0

    monkeypatch.setattr(Pipeline, "check_writable", counting_check)
    lines = 8
    async with trio.open_nursery() as nursery:
        await parts.start(nursery)
        port = await nursery.start(
            partial(serve_tcp_listener, parts.pipeline, ("127.0.0.1", 0), "facts", "ndjson"),
            1 << 20,
            16,
        )
        sender = await trio.open_tcp_stream("127.0.0.1", port)
        sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(lines):
            await sender.send_all(b'{"service":"s","trace_id":"t%d"}\n' % i)
            await trio.sleep(0.02)  # separate reads, separate commits, separate segments
        with trio.fail_after(30):
            while not parts.spool.full:
                await trio.sleep(0.01)
        # Full of segments: everything else waits (the loop is idle, not spinning).
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
        assert parts.store.waiting == 1
        parts.store.open.set()
        await sender.send_eof()
        with trio.fail_after(30):
            assert await sender.receive_some() == b""  # the server ingested all and closed
            await parts.spool.seal_all()
            await parts.uploader.wait_drained()
        await sender.aclose()
        nursery.cancel_scope.cancel()
    trace_ids = [
        trace_id
        for body in parts.store.objects.values()
        for trace_id in pa.ipc.open_file(pa.py_buffer(body)).read_all().column("trace_id")
    ]
    # None lost, none twice.
    assert sorted(str(t) for t in trace_ids) == [f"t{i}" for i in range(lines)]
    assert (
        parts.metrics.registry.get_sample_value(
            "ingestion_events_accepted_total", {"stream": "facts", "source": "tcp"}
        )
        == lines
    )
