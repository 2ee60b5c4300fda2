"""The ObjectStore contract, one suite run against every driver: memory, local, s3.

What callers (the uploader, rollup) rely on: whole objects, overwrite, ObjectNotFound,
idempotent delete, sorted prefix listing that is a plain string prefix (not a directory).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from gravixd.errors import ObjectNotFound
from gravixd.stores import ObjectStore, open_store


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.s3)])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    if request.param == "memory":
        return "memory://", {}
    if request.param == "local":
        return f"file://{tmp_path / 'store'}", {}
    server = request.getfixturevalue("seaweed")
    return f"s3://{server.bucket}/contract-{uuid.uuid4().hex[:12]}", server.store_options()


@pytest.fixture
async def store(store_spec: tuple[str, dict[str, Any]]) -> AsyncIterator[ObjectStore]:
    url, options = store_spec
    s = open_store(url, **options)
    try:
        yield s
    finally:
        await s.aclose()


KEY = "facts/dt=2026-11-25/hour=20/01JDX0000000000000000000AA.arrow"


@pytest.mark.parametrize(
    "body",
    [b"", b"hello", bytes(range(256)) * 1000, memoryview(b"view of bytes")],
    ids=["empty", "small", "binary-256k", "memoryview"],
)
async def test_put_then_get_returns_the_same_bytes(store: ObjectStore, body: Any) -> None:
    await store.put(KEY, body)
    assert await store.get(KEY) == bytes(body)


async def test_put_of_a_path_uploads_the_file(store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "segment.arrow"
    path.write_bytes(b"\x00arrow\xff" * 10_000)
    await store.put(KEY, path)
    assert await store.get(KEY) == path.read_bytes()


async def test_put_overwrites(store: ObjectStore) -> None:
    await store.put(KEY, b"first")
    await store.put(KEY, b"second, longer")
    assert await store.get(KEY) == b"second, longer"
    assert await store.list() == [KEY]


async def test_get_of_a_missing_key_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="no-such-key"):
        await store.get("facts/no-such-key.arrow")


async def test_delete_removes_and_is_idempotent(store: ObjectStore) -> None:
    await store.put(KEY, b"x")
    await store.delete(KEY)
    await store.delete(KEY)  # missing: not an error
    await store.delete("never/existed.arrow")
    with pytest.raises(ObjectNotFound):
        await store.get(KEY)
    assert await store.list() == []


async def test_list_returns_sorted_keys_under_a_string_prefix(store: ObjectStore) -> None:
    keys = [
        "facts/dt=2026-11-25/hour=21/b.arrow",
        "facts/dt=2026-11-25/hour=20/b.arrow",
        "facts/dt=2026-11-25/hour=02/a.arrow",
        "facts/dt=2026-11-25/hour=20/a.arrow",
        "events/dt=2026-11-25/hour=20/a.arrow",
        "rollup/facts/dt=2026-11-25/hour=20/part-00000.parquet",
    ]
    for key in keys:
        await store.put(key, key.encode())
    assert await store.list() == sorted(keys)
    assert await store.list("facts/") == sorted(k for k in keys if k.startswith("facts/"))
    # A prefix is a string prefix, not a directory: hour=2 matches hour=20 and hour=21.
    assert await store.list("facts/dt=2026-11-25/hour=2") == [
        "facts/dt=2026-11-25/hour=20/a.arrow",
        "facts/dt=2026-11-25/hour=20/b.arrow",
        "facts/dt=2026-11-25/hour=21/b.arrow",
    ]
    assert await store.list("nothing/") == []


async def test_list_pages_past_a_thousand_keys(store: ObjectStore) -> None:
    # S3 returns at most 1000 keys a page; the driver must follow continuation tokens.
    keys = [f"many/k{i:05d}" for i in range(1005)]

    async def put_range(start: int) -> None:
        for key in keys[start::8]:
            await store.put(key, b"")

    async with trio.open_nursery() as nursery:
        for start in range(8):
            nursery.start_soon(put_range, start)
    assert await store.list("many/") == keys


async def test_concurrent_puts_from_many_tasks(store: ObjectStore) -> None:
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(store.put, f"c/{i:02d}", f"body {i}".encode())
    assert await store.list("c/") == [f"c/{i:02d}" for i in range(20)]
    for i in range(20):
        assert await store.get(f"c/{i:02d}") == f"body {i}".encode()


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a//b", "a/./b", "a\\b"])
async def test_keys_that_could_escape_the_root_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="Expected"):
        await store.put(key, b"x")
