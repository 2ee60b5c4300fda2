"""A gravixd `Daemon` run inside the test's own trio loop, with an injected ObjectStore.

For fault injection that a subprocess can't get (a `FaultyStore`), and for reading metrics
from the daemon's own registry. HTTP calls are blocking `http.client` calls run in worker
threads, so the test talks to the daemon over real sockets like any client.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from gravixd.config import load
from gravixd.runtime.app import Daemon, Ports
from gravixd.stores.base import ObjectStore


def daemon_flags(workdir: Path, **settings: Any) -> dict[str, str]:
    flags = {
        "http_listen": "127.0.0.1:0",
        "tcp_listen": "",
        "metrics_listen": "127.0.0.1:0",
        "spool_dir": str(workdir / "spool"),
        "store_url": f"file://{workdir / 'store'}",
        # Outage and stuck-segment tests look at Arrow IPC segments (tests/daemon.py says why).
        "segment_format": "arrow",
    }
    flags.update({key: str(value) for key, value in settings.items()})
    return flags


class InprocDaemon:
    def __init__(self, daemon: Daemon, ports: Ports) -> None:
        self.daemon = daemon
        self.ports = ports

    def post_sync(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports.http, timeout=30)
        try:
            conn.request("POST", path, body, {"Content-Type": content_type, **(headers or {})})
            response = conn.getresponse()
            data = response.read()
            return response.status, (json.loads(data) if data else {}), dict(response.getheaders())
        finally:
            conn.close()

    async def post(
        self,
        path: str,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        return await trio.to_thread.run_sync(self.post_sync, path, body, content_type, headers)

    async def side_get(self, path: str) -> int:
        def get() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", self.ports.metrics, timeout=10)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                return response.status
            finally:
                conn.close()

        return await trio.to_thread.run_sync(get)

    def metric(self, name: str, **labels: str) -> float:
        value = self.daemon.metrics.registry.get_sample_value(name, labels)
        return value or 0.0


@asynccontextmanager
async def running_daemon(
    workdir: Path, store: ObjectStore | None = None, **settings: Any
) -> AsyncIterator[InprocDaemon]:
    """Start a Daemon; on exit SIGTERM it (a real drain: seal, upload by the deadline)."""
    flags = daemon_flags(workdir, **settings)
    daemon = Daemon(load(flags, {}), reload=lambda: load(flags, {}), store=store)
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(daemon.run)
        try:
            yield InprocDaemon(daemon, ports)
        finally:
            # The daemon's own signal receiver turns this into its drain.
            os.kill(os.getpid(), signal.SIGTERM)
