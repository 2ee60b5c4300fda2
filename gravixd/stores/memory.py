"""An in-memory object store (`memory://`), for unit tests and benchmarks of the pipeline
without disk or network. Not durable by design."""

from __future__ import annotations

from pathlib import Path

from ..errors import ObjectNotFound
from .base import Body, ObjectStore, validate_key


class MemoryStore(ObjectStore):
    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self.objects: dict[str, bytes] = {}

    async def put(self, key: str, body: Body) -> None:
        validate_key(key)
        self.objects[key] = body.read_bytes() if isinstance(body, Path) else bytes(body)

    async def get(self, key: str) -> bytes:
        try:
            return self.objects[validate_key(key)]
        except KeyError:
            raise ObjectNotFound(f"No object at key {key!r} in {self.url}") from None

    async def delete(self, key: str) -> None:
        self.objects.pop(validate_key(key), None)

    async def list(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))
