"""The native decoder frees what it allocates: decoding many batches keeps RSS flat.

Each decoded batch owns malloc'd column buffers that must be freed when its Arrow arrays
are released; each rejected body must free its partial buffers at once. A leak of either
kind grows RSS by megabytes over these loops.
"""

from __future__ import annotations

import gc
import os

import pytest
from native_wire import item, ld

from gravixd import native
from gravixd.errors import DecodeError
from gravixd.proto.gravix.v1 import events_pb2

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _body(events: int) -> bytes:
    facts = [
        events_pb2.RequestFact(
            service="checkout", route="/users/{id}", method="GET", status_code=200,
            duration_ms=3.5, bytes_in=100, bytes_out=2000, trace_id=f"{i:032x}",
            attributes={"region": "eu-west-1", "pod": f"pod-{i % 64:02d}"},
        )
        for i in range(events)
    ]  # fmt: skip
    return events_pb2.RequestFactBatch(facts=facts).SerializeToString()


def _grows(run: object, rounds: int) -> int:
    for _ in range(rounds // 4):  # warm up allocator pools
        run()  # type: ignore[operator]
    gc.collect()
    before = _rss_bytes()
    for _ in range(rounds):
        run()  # type: ignore[operator]
    gc.collect()
    return _rss_bytes() - before


def test_decoded_batches_are_freed_when_released() -> None:
    body = _body(10_000)  # ~1.2 MB of column buffers a batch

    def decode_and_touch() -> None:
        batch = native.decode_protobuf("facts", body, 1)
        assert batch.num_rows == 10_000

    # 300 leaked batches would be ~400 MB.
    assert _grows(decode_and_touch, 300) < 24 * 2**20


def test_rejected_bodies_free_their_partial_buffers() -> None:
    valid = _body(2_000)
    cases = [valid + b"\x0a\x80", valid + item(ld(2, b"\xff")), valid + item(b"\x28\xe8\x07")]

    def reject() -> None:
        for body in cases:
            with pytest.raises(DecodeError):
                native.decode_protobuf("facts", body, 1)

    assert _grows(reject, 300) < 24 * 2**20


def test_release_callback_frees_the_batch_when_its_last_array_goes() -> None:
    # The C decoder counts exported batches whose buffers it has not freed: the Arrow
    # release callback (called by pyarrow when the last array over the buffers goes) is
    # what brings the count back. (The collector is held still so that garbage left by
    # other tests cannot move the count meanwhile; references are dropped by hand.)
    gc.collect()
    gc.disable()
    try:
        before = native.live_exports()
        batch = native.decode_protobuf("facts", _body(100), 1)
        assert native.live_exports() == before + 1
        attributes = batch.column("attributes").slice(10, 5)  # a child of a child, no copy
        del batch
        assert native.live_exports() == before + 1  # still in use: not freed
        assert attributes[0].as_py() == [("pod", "pod-10"), ("region", "eu-west-1")]
        del attributes
        assert native.live_exports() == before
    finally:
        gc.enable()


def test_rejected_bodies_export_nothing() -> None:
    gc.collect()
    gc.disable()
    try:
        before = native.live_exports()
        for body in (_body(10) + b"\x0a\x80", _body(10) + item(b"\x28\xe8\x07")):
            with pytest.raises(DecodeError):
                native.decode_protobuf("facts", body, 1)
        assert native.live_exports() == before
    finally:
        gc.enable()
