"""Store outages and refusals: nothing acknowledged is lost, and load is shed while full.

The daemon runs in-process with a `FaultyStore` around a `LocalStore`: the store fails for a
while (every put raises a retryable StoreError), the spool grows to `max_spool_bytes`, then
HTTP answers 503 + Retry-After and /readyz 503; once the store heals the backlog drains, /readyz
turns 200 and every event that got a 202 is in the store exactly once. A permanent refusal
quarantines the segment (counted and logged), never drops it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pytest
import trio
from daemon import column, read_store
from faulty_store import FaultyStore
from inproc_daemon import running_daemon

from gravixd.errors import PermanentStoreError
from gravixd.stores.local import LocalStore

FAST_SEGMENTS = {
    "segment_max_events": 20,
    "segment_max_age_seconds": 0.2,
    "upload_retry_initial_seconds": 0.02,
    "upload_retry_max_seconds": 0.2,
    "drain_timeout_seconds": 10,
}


def facts_body(prefix: str, start: int, count: int) -> bytes:
    return json.dumps(
        [
            {
                "service": "outage",
                "route": "/r",
                "status_code": 200,
                "trace_id": f"{prefix}-{start + i}",
            }
            for i in range(count)
        ]
    ).encode()


async def wait_until(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.05)


async def test_outage_sheds_load_then_drains_without_loss(tmp_path: Path) -> None:
    store = FaultyStore(LocalStore(tmp_path / "store"))
    acked: list[str] = []
    async with running_daemon(tmp_path, store=store, max_spool_bytes="48KiB", **FAST_SEGMENTS) as d:
        assert await d.side_get("/readyz") == 200
        status, _, _ = await d.post("/v1/facts", facts_body("before", 0, 10))
        assert status == 202
        acked += [f"before-{i}" for i in range(10)]

        store.fail_puts()
        shed = None
        for n in range(2000):
            status, body, headers = await d.post("/v1/facts", facts_body("during", n * 10, 10))
            if status == 202:
                acked += [f"during-{n * 10 + i}" for i in range(10)]
                continue
            shed = (status, body, headers)
            break
        assert shed is not None, "the spool never filled while the store was down"
        status, body, headers = shed
        assert status == 503
        assert body["reason"] == "spool_full"
        assert "max_spool_bytes" in body["error"]
        assert int(headers["retry-after"]) >= 1
        assert await d.side_get("/readyz") == 503
        assert d.metric("ingestion_load_shed_total", limit="spool") >= 1
        assert d.metric("ingestion_requests_total", endpoint="/v1/facts", code="503") >= 1
        assert store.failed_puts > 0
        assert d.metric("upload_errors_total", kind="retryable") > 0

        # Still down: more retries, still shedding, nothing acknowledged.
        await trio.sleep(0.3)
        status, _, _ = await d.post("/v1/facts", facts_body("shed", 0, 1))
        assert status == 503

        store.heal()

        async def ready() -> bool:
            return await d.side_get("/readyz") == 200

        await wait_until(ready, what="/readyz 200 after the store healed")
        status, _, _ = await d.post("/v1/facts", facts_body("after", 0, 10))
        assert status == 202
        acked += [f"after-{i}" for i in range(10)]

    # The drain uploaded everything: the spool holds nothing, the store holds each acked
    # event exactly once (the same key was retried, never a second object).
    trace_ids = column(read_store(tmp_path / "store", "facts"), "trace_id")
    assert sorted(trace_ids) == sorted(acked)
    assert len(acked) > 100
    assert not list((tmp_path / "spool" / "sealed" / "facts").iterdir())
    retried_keys = [k for k in set(store.put_keys) if store.put_keys.count(k) > 1]
    assert retried_keys, "expected some segment to be retried under its same key"
    assert len(list((tmp_path / "store" / "facts").rglob("*.arrow"))) == len(set(store.put_keys))


async def test_permanent_store_error_quarantines_counts_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store = FaultyStore(LocalStore(tmp_path / "store"))
    store.fail_puts(
        PermanentStoreError("injected: access denied"), match=lambda key: key.startswith("events/")
    )
    async with running_daemon(tmp_path, store=store, **FAST_SEGMENTS) as d:
        events = [{"service": "svc", "kind": "deploy", "trace_id": f"e-{i}"} for i in range(5)]
        status, _, _ = await d.post("/v1/events", json.dumps(events).encode())
        assert status == 202
        status, _, _ = await d.post("/v1/facts", facts_body("f", 0, 5))
        assert status == 202

        async def quarantined() -> bool:
            return d.metric("spool_segments_quarantined_total", reason="store_rejected") >= 1

        await wait_until(quarantined, what="the refused segment to be quarantined")
        assert d.metric("upload_errors_total", kind="permanent") >= 1
        assert await d.side_get("/readyz") == 200  # a refusal is not an outage

    logged = [r for r in caplog.records if getattr(r, "event", None) == "upload_quarantined"]
    assert logged and "access denied" in logged[0].error
    # The refused events are kept, readable, in the quarantine folder: never dropped.
    quarantined_files = list((tmp_path / "spool" / "quarantine" / "events").iterdir())
    assert len(quarantined_files) == 1
    with pa.ipc.open_file(pa.memory_map(str(quarantined_files[0]))) as reader:
        assert sorted(reader.read_all().column("trace_id").to_pylist()) == [
            f"e-{i}" for i in range(5)
        ]
    # The other stream was unaffected.
    assert sorted(column(read_store(tmp_path / "store", "facts"), "trace_id")) == [
        f"f-{i}" for i in range(5)
    ]
