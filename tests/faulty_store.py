"""A fault-injecting ObjectStore wrapper, for tests of outages and permanent store errors.

`FaultyStore(inner)` passes every call through to `inner` unless a fault is armed:
`fail_puts(StoreError(...))` makes every `put` raise (a retryable outage), a
`PermanentStoreError` makes it a refusal the uploader must quarantine, `fail_next_puts(n)`
fails only the next n calls, and `heal()` ends it. `put_keys` records every attempted key,
so tests can check that a retry reuses the same key (idempotent uploads).

`FailingOpsStore(inner, fail)` raises StoreError on the calls `fail(op, key)` picks, e.g.
`after_n("put", "part-", 1)`: a process that dies half way through (the rollup's crash tests).
"""

from __future__ import annotations

from collections.abc import Callable

from gravixd.errors import StoreError
from gravixd.stores.base import Body, ObjectStore


class FaultyStore(ObjectStore):
    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = f"faulty+{inner.url}"
        self._error: Exception | None = None
        self._remaining: int | None = None  # None: until heal()
        self._match: Callable[[str], bool] = lambda key: True
        self.put_keys: list[str] = []
        self.failed_puts = 0
        self.ok_puts = 0

    # --- arming --------------------------------------------------------------------------

    def fail_puts(
        self, error: Exception | None = None, *, match: Callable[[str], bool] | None = None
    ) -> None:
        """Every `put` (of a key `match` accepts) raises `error` until `heal()`."""
        self._error = error or StoreError("injected outage: store unreachable")
        self._remaining = None
        self._match = match or (lambda key: True)

    def fail_next_puts(self, count: int, error: Exception | None = None) -> None:
        self.fail_puts(error)
        self._remaining = count

    def heal(self) -> None:
        self._error = None
        self._remaining = None

    @property
    def failing(self) -> bool:
        return self._error is not None

    # --- ObjectStore ---------------------------------------------------------------------

    async def put(self, key: str, body: Body) -> None:
        self.put_keys.append(key)
        if self._error is not None and self._match(key):
            error = self._error
            if self._remaining is not None:
                self._remaining -= 1
                if self._remaining <= 0:
                    self.heal()
            self.failed_puts += 1
            raise error
        await self.inner.put(key, body)
        self.ok_puts += 1

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def list(self, prefix: str = "") -> list[str]:
        return await self.inner.list(prefix)

    async def aclose(self) -> None:
        await self.inner.aclose()


class FailingOpsStore(ObjectStore):
    """Wraps a store and raises StoreError on the operations `fail` picks (a crash)."""

    def __init__(self, inner: ObjectStore, fail: Callable[[str, str], bool]) -> None:
        self.inner, self.fail, self.url = inner, fail, inner.url

    def _check(self, op: str, key: str) -> None:
        if self.fail(op, key):
            raise StoreError(f"injected failure: {op} {key}")

    async def put(self, key: str, body: Body) -> None:
        self._check("put", key)
        await self.inner.put(key, body)

    async def get(self, key: str) -> bytes:
        self._check("get", key)
        return await self.inner.get(key)

    async def delete(self, key: str) -> None:
        self._check("delete", key)
        await self.inner.delete(key)

    async def list(self, prefix: str = "") -> list[str]:
        self._check("list", prefix)
        return await self.inner.list(prefix)


def after_n(op_wanted: str, key_part: str, n: int) -> Callable[[str, str], bool]:
    """Fail every `op_wanted` on keys containing `key_part` after the first `n` succeeded."""
    seen = 0

    def fail(op: str, key: str) -> bool:
        nonlocal seen
        if op != op_wanted or key_part not in key:
            return False
        seen += 1
        return seen > n

    return fail
