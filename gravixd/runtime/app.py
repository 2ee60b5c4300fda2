"""`gravixd serve`: one trio process, one nursery, every component started in order.

Start: recover the spool (seal and queue what a previous run left), start the uploader and
the spool's committers, bind the side port, then the ingest listeners; READY=1 goes to
systemd once everything listens. SIGTERM drains: stop accepting, let in-flight requests
finish, seal, upload within `drain_timeout_seconds`, exit 0 (what is not uploaded stays in
the spool for the next start). SIGHUP reloads what can change live.
"""

from __future__ import annotations

import functools
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .. import __version__
from ..config import Config, LoadedConfig, parse_listen, read_auth_tokens
from ..core.http import HttpLimits
from ..errors import ConfigError
from ..metrics import Metrics
from ..stores import ObjectStore, open_store
from .http_server import HttpServer, HttpSettings
from .pipeline import Pipeline
from .sdnotify import SdNotifier
from .side_port import serve_side_port
from .spool import Spool, SpoolSettings
from .tcp_server import TcpDrain, serve_tcp_listener
from .uploader import Uploader

log = logging.getLogger("gravixd")

S3_OPTION_KEYS = (
    "s3_endpoint_url", "s3_region", "s3_path_style", "s3_access_key_id",
    "s3_secret_access_key", "s3_sse", "s3_sse_kms_key_id",
)  # fmt: skip


def store_from_config(config: Config) -> ObjectStore:
    options: dict[str, Any] = {}
    if config.store_url.startswith("s3://"):
        options = {key: getattr(config, key) for key in S3_OPTION_KEYS}
    return open_store(config.store_url, **options)


def select_protobuf_decoder(config: Config) -> tuple[Callable[[str, bytes, int], Any], str]:
    """The native C decoder when built and enabled (`native`, env GRAVIXD_NATIVE), else
    the pure `protobuf` path; falling back for lack of the extension logs one line."""
    from .. import native
    from ..core.decode import decode_protobuf_pure

    if not config.native:
        return decode_protobuf_pure, "pure"
    return native.select_protobuf_decoder({})


def http_settings(config: Config) -> HttpSettings:
    return HttpSettings(
        limits=HttpLimits(config.max_body_bytes, config.max_header_bytes),
        auth_tokens=tuple(read_auth_tokens(config)),
        max_connections=config.max_connections,
        max_in_flight_requests=config.max_in_flight_requests,
        max_in_flight_bytes=config.max_in_flight_bytes,
        request_timeout_seconds=config.request_timeout_seconds,
        idle_timeout_seconds=config.idle_timeout_seconds,
    )


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return context


@dataclass
class Ports:
    """What the daemon bound (port 0 in config picks a free one)."""

    http: int | None = None
    metrics: int | None = None
    tcp: list[int] | None = None


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        reload: Callable[[], LoadedConfig] | None = None,
        store: ObjectStore | None = None,
    ) -> None:
        """`store` overrides `store_url` (tests inject fault-injecting stores)."""
        config = loaded.config
        self.config = config
        self.reload_config = reload
        self.metrics = Metrics()
        decoder, decoder_name = select_protobuf_decoder(config)
        self.decoder_name = decoder_name
        self.metrics.build_info.info({"version": __version__, "decoder": decoder_name})
        self.store = store if store is not None else store_from_config(config)
        self.spool = Spool(
            Path(config.spool_dir),
            SpoolSettings(
                segment_max_bytes=config.segment_max_bytes,
                segment_max_events=config.segment_max_events,
                segment_max_age_seconds=config.segment_max_age_seconds,
                segment_format=config.segment_format,
                segment_compression=config.segment_compression,
                max_spool_bytes=config.max_spool_bytes,
            ),
            self.metrics,
            on_sealed=lambda segment: self.uploader.submit(segment),
            clock_unix_ms=lambda: time.time_ns() // 1_000_000,
        )
        self.uploader = Uploader(
            self.store,
            self.spool,
            self.metrics,
            concurrency=config.upload_concurrency,
            retry_initial_seconds=config.upload_retry_initial_seconds,
            retry_max_seconds=config.upload_retry_max_seconds,
            clock_unix_seconds=time.time,
        )
        self.pipeline = Pipeline(self.spool, self.metrics, ack=config.ack, protobuf_decoder=decoder)
        self.http = HttpServer(
            self.pipeline, self.metrics, http_settings(config), _ssl_context(config)
        )
        self.state = "starting"
        self.ports = Ports()
        self.notifier = SdNotifier.from_environ()
        self.tcp_drain = TcpDrain()

    def readiness(self) -> str | None:
        if self.state != "serving":
            return self.state
        if self.spool.full:
            return "shedding load: spool is full (store slow or down?)"
        return None

    async def run(self, *, task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            recovered = await trio.to_thread.run_sync(self.spool.recover_sync)
            for segment in recovered:
                self.uploader.submit(segment)
            if recovered:
                log.info(
                    "spool recovered",
                    extra={"event": "spool_recovered", "segments": len(recovered)},
                )
            async with trio.open_nursery() as nursery:
                host, port = parse_listen(config.metrics_listen)
                self.ports.metrics = await nursery.start(
                    serve_side_port, host, port, self.metrics, self.readiness
                )
                await nursery.start(self.uploader.run)
                await nursery.start(self.spool.run)
                if config.rollup_interval_seconds > 0:
                    from ..rollup import run_rollup_schedule

                    nursery.start_soon(
                        functools.partial(
                            run_rollup_schedule,
                            self.store,
                            config.rollup_interval_seconds,
                            target_file_bytes=config.rollup_target_file_bytes,
                        )
                    )
                async with trio.open_nursery() as connections:
                    with trio.CancelScope() as accepting:
                        async with trio.open_nursery() as listeners:
                            await self._start_listeners(listeners, connections)
                            self.state = "serving"
                            log.info(
                                "gravixd serving",
                                extra={
                                    "event": "serving",
                                    "version": __version__,
                                    "decoder": self.decoder_name,
                                    "http_port": self.ports.http,
                                    "metrics_port": self.ports.metrics,
                                    "tcp_ports": self.ports.tcp,
                                    "store": self.store.url,
                                },
                            )
                            if self.notifier:
                                self.notifier.ready()
                                self.notifier.status(f"serving; decoder {self.decoder_name}")
                                nursery.start_soon(self._watchdog)
                            task_status.started(self.ports)
                            async for signum in signals:
                                if signum == signal.SIGHUP:
                                    self._reload()
                                    continue
                                break
                            accepting.cancel()
                    await self._drain(connections)
                nursery.cancel_scope.cancel()
        await self.store.aclose()
        if self.notifier:
            self.notifier.close()

    async def _start_listeners(self, listeners: trio.Nursery, connections: trio.Nursery) -> None:
        config = self.config
        if config.http_listen:
            host, port = parse_listen(config.http_listen)
            self.ports.http = await listeners.start(self.http.serve, host, port, connections)
        tcp = []
        if config.tcp_listen:
            tcp.append((config.tcp_listen, "facts", "ndjson", config.tcp_max_line_bytes))
        for extra in config.tcp_listeners:
            default = (
                config.tcp_max_line_bytes
                if extra.framing == "ndjson"
                else config.tcp_max_frame_bytes
            )
            tcp.append(
                (extra.listen, extra.stream, extra.framing, extra.max_frame_bytes or default)
            )
        limiter = trio.CapacityLimiter(config.max_connections)
        self.ports.tcp = []
        for listen, stream, framing, max_frame_bytes in tcp:
            port = await listeners.start(
                functools.partial(
                    serve_tcp_listener,
                    self.pipeline,
                    parse_listen(listen),
                    stream,
                    framing,
                    max_frame_bytes,
                    config.max_connections,
                    connection_limiter=limiter,
                    handler_nursery=connections,
                    drain=self.tcp_drain,
                )
            )
            self.ports.tcp.append(port)

    async def _drain(self, connections: trio.Nursery) -> None:
        """Listeners are closed; finish in-flight requests, seal, upload, all by a deadline."""
        self.state = "draining"
        self.http.draining = True
        log.info(
            "draining",
            extra={"event": "draining", "deadline_seconds": self.config.drain_timeout_seconds},
        )
        if self.notifier:
            self.notifier.stopping()
        deadline = trio.current_time() + self.config.drain_timeout_seconds
        self.tcp_drain.start()  # raw TCP: stop reading; what was read is still ingested
        with trio.move_on_at(deadline):
            await self.http.wait_idle()
            await self.tcp_drain.wait_idle()
        connections.cancel_scope.cancel()  # whatever is still open past the deadline
        # Shielded: this code runs inside `connections`, whose scope was just cancelled; only
        # the deadline may cut the seal and upload short.
        with trio.CancelScope(deadline=deadline, shield=True) as cancel_scope:
            await self.spool.seal_all()
            await self.uploader.wait_drained()
        left = self.uploader.backlog
        log.info(
            "drained",
            extra={
                "event": "drained",
                "segments_left_in_spool": left,
                "deadline_hit": cancel_scope.cancelled_caught,
            },
        )

    async def _watchdog(self) -> None:
        assert self.notifier is not None
        interval = self.notifier.watchdog_interval_seconds()
        if not interval:
            return
        while True:
            self.notifier.watchdog()
            await trio.sleep(interval)

    def _reload(self) -> None:
        """SIGHUP: re-read the configuration; apply what can change live, keep the rest."""
        if self.reload_config is None:
            return
        if self.notifier:
            self.notifier.reloading()
        try:
            new = self.reload_config().config
            settings = http_settings(new)
        except (ConfigError, OSError) as exc:
            log.error(
                "reload rejected; keeping the running configuration",
                extra={"event": "reload_rejected", "error": str(exc)},
            )
        else:
            self.http.settings = settings
            spool = self.spool.settings
            spool.max_spool_bytes = new.max_spool_bytes
            spool.segment_max_bytes = new.segment_max_bytes
            spool.segment_max_events = new.segment_max_events
            spool.segment_max_age_seconds = new.segment_max_age_seconds
            logging.getLogger().setLevel(new.log_level.upper())
            fixed = [
                k
                for k in (
                    "http_listen",
                    "tcp_listen",
                    "metrics_listen",
                    "spool_dir",
                    "store_url",
                    "ack",
                    "segment_format",
                )
                if getattr(new, k) != getattr(self.config, k)
            ]
            log.info(
                "configuration reloaded",
                extra={
                    "event": "reloaded",
                    "auth_tokens": len(settings.auth_tokens),
                    "ignored_until_restart": fixed,
                },
            )
        if self.notifier:
            self.notifier.ready()


def serve(loaded: LoadedConfig, flags: Mapping[str, Any], environ: Mapping[str, str]) -> int:
    from ..config import load

    daemon = Daemon(loaded, reload=lambda: load(flags, environ))
    # Group commit hands each fsync to a worker thread; with CPython's default 5 ms switch
    # interval that thread waits for the GIL behind a busy event loop, and every durable ack
    # with it. 1 ms measured ~10-25% more single-event requests/s (bench/, issue 2 note).
    sys.setswitchinterval(0.001)
    trio.run(daemon.run)
    return 0
