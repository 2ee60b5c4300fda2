"""`gravixd serve`: one trio process, one nursery, every component started in order.

Start: lock the spool (one daemon per spool), bind every listener (a port clash fails here,
before the spool is touched), serve the side port (/readyz says "starting"), recover the
spool (seal and queue what a previous run left), start the uploader and the spool's
committers, then accept on the ingest listeners; READY=1 goes to systemd once they accept.
SIGTERM drains: stop accepting, let in-flight requests finish, seal, upload within
`drain_timeout_seconds`, exit 0 (what is not uploaded stays in the spool for the next
start). SIGHUP reloads what can change live.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .. import __version__
from ..config import Config, LoadedConfig, parse_listen, read_auth_tokens
from ..core.http import HttpLimits
from ..errors import ConfigError, StartupError
from ..metrics import Metrics
from ..stores import ObjectStore, open_store
from . import fd_limit
from .committer import Committer
from .http_server import HttpServer, HttpSettings
from .listeners import ConnectionBudget, bind
from .malloc_tuning import pin_mmap_threshold
from .pipeline import Pipeline
from .sdnotify import SdNotifier
from .segment_files import SealedSegment
from .side_port import MAX_CONNECTIONS as SIDE_PORT_MAX_CONNECTIONS
from .side_port import serve_side_port
from .spool import Spool, SpoolSettings
from .spool_lock import SpoolLock
from .tcp_server import TcpDrain, serve_tcp_listener
from .uploader import Uploader

log = logging.getLogger("gravixd")

S3_OPTION_KEYS = (
    "s3_endpoint_url", "s3_region", "s3_path_style", "s3_access_key_id",
    "s3_secret_access_key", "s3_sse", "s3_sse_kms_key_id",
)  # fmt: skip


def store_from_config(config: Config) -> ObjectStore:
    """Raises ConfigError naming `store_url` for a URL no store can open."""
    options: dict[str, Any] = {}
    if config.store_url.startswith("s3://"):
        options = {key: getattr(config, key) for key in S3_OPTION_KEYS}
    try:
        return open_store(config.store_url, **options)
    except ValueError as exc:
        raise ConfigError(f"Invalid value for `store_url`: {exc}") from None


def iceberg_committer(
    config: Config, store: ObjectStore, spool: Spool, metrics: Metrics
) -> Committer | None:
    """The Iceberg committer when this daemon commits (`iceberg_commit = "daemon"`).

    Raises:
        ConfigError: a malformed `iceberg_catalog_uri`, or pyiceberg not installed (checked
            here, at start; an unreachable catalog is not an error: commits retry).
    """
    if not config.iceberg_catalog_uri:
        return None
    from ..iceberg.catalog import check_settings, settings_from_config

    settings = settings_from_config(config)
    check_settings(settings)
    if config.iceberg_commit != "daemon":
        return None  # `gravixd rollup` commits; daemons only upload
    return Committer(
        settings,
        store,
        spool.ledger,
        spool.dir,
        metrics,
        interval_seconds=config.iceberg_commit_interval_seconds,
        retention_seconds=config.iceberg_snapshot_retention_seconds,
        retry_initial_seconds=config.upload_retry_initial_seconds,
        retry_max_seconds=config.upload_retry_max_seconds,
        clock_unix_seconds=time.time,
    )


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
        max_in_flight_requests=config.max_in_flight_requests,
        max_in_flight_bytes=config.max_in_flight_bytes,
        request_timeout_seconds=config.request_timeout_seconds,
        idle_timeout_seconds=config.idle_timeout_seconds,
        invalid_events=config.invalid_events,
    )


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    if not config.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    return context


def _tls_files_digest(config: Config) -> str:
    """What the TLS files hold now, to tell on SIGHUP that they changed (read at start only)."""
    digest = hashlib.sha256()
    for path in (config.tls_cert_file, config.tls_key_file):
        digest.update(path.encode() + b"\0")
        try:
            with open(path, "rb") as file:
                digest.update(file.read())
        except OSError as exc:
            digest.update(str(exc).encode())
    return digest.hexdigest()


@dataclass
class Ports:
    """What the daemon bound (port 0 in config picks a free one)."""

    http: int | None = None
    metrics: int | None = None
    tcp: list[int] | None = None


@dataclass(frozen=True)
class TcpSpec:
    """One raw TCP listener: the setting it comes from and what it ingests."""

    setting: str  # `tcp_listen` or `tcp_listeners[i].listen`, for errors
    listen: str
    stream: str
    framing: str
    max_frame_bytes: int


def tcp_specs(config: Config) -> list[TcpSpec]:
    specs = []
    if config.tcp_listen:
        specs.append(
            TcpSpec("tcp_listen", config.tcp_listen, "facts", "ndjson", config.tcp_max_line_bytes)
        )
    for i, extra in enumerate(config.tcp_listeners):
        default = (
            config.tcp_max_line_bytes if extra.framing == "ndjson" else config.tcp_max_frame_bytes
        )
        specs.append(
            TcpSpec(
                f"tcp_listeners[{i}].listen",
                extra.listen,
                extra.stream,
                extra.framing,
                extra.max_frame_bytes or default,
            )
        )
    return specs


@dataclass
class Bound:
    """Every listening socket, opened before the spool is touched."""

    metrics: list[trio.SocketListener]
    http: list[trio.SocketListener]
    tcp: list[tuple[TcpSpec, list[trio.SocketListener]]]

    def close(self) -> None:
        """Close what no accept loop took over (closing twice is harmless)."""
        for listener in [*self.metrics, *self.http, *(x for _, ls in self.tcp for x in ls)]:
            listener.socket.close()


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
                parquet_timestamp_unit="us" if config.iceberg_catalog_uri else "ns",
            ),
            self.metrics,
            clock_unix_ms=lambda: time.time_ns() // 1_000_000,
        )
        self.committer = iceberg_committer(config, self.store, self.spool, self.metrics)
        self.uploader = Uploader(  # takes sealed segments from the spool's bounded channel
            self.store,
            self.spool.sealed_segments,
            self.spool.ledger,
            self.spool.dir,
            self.metrics,
            concurrency=config.upload_concurrency,
            retry_initial_seconds=config.upload_retry_initial_seconds,
            retry_max_seconds=config.upload_retry_max_seconds,
            clock_unix_seconds=time.time,
            after_upload=self._hand_to_committer if self.committer is not None else None,
        )
        self.pipeline = Pipeline(self.spool, self.metrics, ack=config.ack, protobuf_decoder=decoder)
        self.http = HttpServer(
            self.pipeline, self.metrics, http_settings(config), _ssl_context(config)
        )
        self.state = "starting"
        self.ports = Ports()
        self.notifier = SdNotifier.from_environ()
        self.tcp_drain = TcpDrain()
        self.tls_digest = _tls_files_digest(config) if config.tls_cert_file else ""
        fds = fd_limit.plan(config.max_connections, SIDE_PORT_MAX_CONNECTIONS)
        self.side_port_max_connections = fds.side_port_max_connections
        # One budget for HTTP and every raw TCP listener: `max_connections` counts them all.
        self.budget = ConnectionBudget(fds.max_connections)
        log.log(
            logging.WARNING if fds.max_connections < config.max_connections else logging.INFO,
            "connection limits fitted to the file descriptor limit",
            extra={
                "event": "fd_limits",
                "nofile_soft": fds.soft_limit,
                "nofile_hard": fds.hard_limit,
                "max_connections": fds.max_connections,
                "max_connections_configured": config.max_connections,
                "side_port_max_connections": fds.side_port_max_connections,
                "reserved_fds": fd_limit.RESERVED_FDS,
            },
        )

    def _hand_to_committer(self, segment: SealedSegment, key: str) -> bool:
        """After an upload: Parquet segments go to the Iceberg committer, which deletes
        their spool copy once committed. An Arrow segment sealed before the catalog was
        configured is stored (Hive layout) but cannot be a table file."""
        if self.committer is None or segment.segment_format != "parquet":
            return False
        self.committer.submit(segment, key)
        return True

    def readiness(self) -> str | None:
        if self.state != "serving":
            return self.state
        if self.spool.full:
            return "shedding load: spool is full (store slow or down?)"
        return None

    async def run(self, *, task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until SIGTERM/SIGINT, then drain.

        Raises:
            StartupError: the spool is locked by another daemon, or a listener cannot bind;
                nothing in the spool was touched.
        """
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            lock = SpoolLock.acquire(Path(self.config.spool_dir))
            try:
                bound = await self._bind_all()
                try:
                    await self._serve(bound, signals, task_status)
                finally:
                    bound.close()
            finally:
                lock.release()
        await self.store.aclose()
        if self.notifier:
            self.notifier.close()

    async def _bind_all(self) -> Bound:
        config = self.config
        bound = Bound(metrics=[], http=[], tcp=[])
        try:
            bound.metrics = await bind("metrics_listen", config.metrics_listen)
            if config.http_listen:
                bound.http = await bind(
                    "http_listen", config.http_listen, reuse_port=config.reuse_port
                )
            for spec in tcp_specs(config):
                listeners = await bind(spec.setting, spec.listen, reuse_port=config.reuse_port)
                bound.tcp.append((spec, listeners))
        except StartupError:
            bound.close()
            raise
        return bound

    async def _recover(self) -> None:
        recovered = await trio.to_thread.run_sync(self.spool.recover_sync)
        if recovered:
            log.info(
                "spool recovered",
                extra={"event": "spool_recovered", "segments": len(recovered)},
            )

    async def _serve(
        self,
        bound: Bound,
        signals: AsyncIterator[int],
        task_status: trio.TaskStatus[Ports],
    ) -> None:
        config = self.config
        async with trio.open_nursery() as nursery:
            self.ports.metrics = bound.metrics[0].socket.getsockname()[1]
            nursery.start_soon(
                functools.partial(
                    serve_side_port,
                    bound.metrics,
                    self.metrics,
                    self.readiness,
                    max_connections=self.side_port_max_connections,
                )
            )
            # The side port answers during recovery (/livez 200, /readyz 503 "starting"),
            # so a long recovery is visible instead of a hanging probe.
            await self._recover()
            if self.committer is not None:
                await nursery.start(self.committer.run)
            await nursery.start(self.uploader.run)
            await nursery.start(self.spool.run)
            if config.rollup_interval_seconds > 0 and config.iceberg_catalog_uri:
                # With a catalog the rollup is the tables' upkeep: the Hive compaction would
                # delete files the tables read.
                from ..iceberg.catalog import settings_from_config
                from ..rollup.tables import run_tables_schedule

                nursery.start_soon(
                    functools.partial(
                        run_tables_schedule,
                        self.store,
                        settings_from_config(config),
                        config.rollup_interval_seconds,
                        commit_new=config.iceberg_commit == "rollup",
                        retention_seconds=config.iceberg_snapshot_retention_seconds,
                        target_file_bytes=config.rollup_target_file_bytes,
                    )
                )
            elif config.rollup_interval_seconds > 0:
                from ..rollup.run import run_rollup_schedule

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
                        await self._start_listeners(bound, listeners, connections)
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
                                "reuse_port": config.reuse_port,
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

    async def _start_listeners(
        self, bound: Bound, listeners: trio.Nursery, connections: trio.Nursery
    ) -> None:
        config = self.config
        if bound.http:
            self.ports.http = bound.http[0].socket.getsockname()[1]
            listeners.start_soon(self.http.serve, bound.http, connections, self.budget)
        self.ports.tcp = []
        for spec, sockets in bound.tcp:
            port = await listeners.start(
                functools.partial(
                    serve_tcp_listener,
                    self.pipeline,
                    parse_listen(spec.listen),
                    spec.stream,
                    spec.framing,
                    spec.max_frame_bytes,
                    config.max_connections,
                    budget=self.budget,
                    listeners=sockets,
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
            if self.committer is not None:
                await self.committer.wait_drained()
        # Counted on disk, not from the upload queue: a segment whose seal is still being
        # retried (disk full) is in the spool too. A listing of two folders, on the loop: the
        # connections scope is cancelled here, an await would be too.
        left = self.spool.segments_left()
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
        """SIGHUP: re-read the configuration; apply what can change live, keep the rest.

        Nothing a new configuration holds may take the daemon down (a RecursionError from a
        3000-deep TOML array once did): any failure rejects the reload, logged as
        `reload_rejected`, and the running configuration stays.
        """
        if self.reload_config is None:
            return
        if self.notifier:
            self.notifier.reloading()
        try:
            new = self.reload_config().config
            settings = http_settings(new)
            self._check_auth_stays_on(new, settings)
        except Exception as exc:
            log.error(
                "reload rejected; keeping the running configuration",
                extra={"event": "reload_rejected", "error": str(exc) or type(exc).__name__},
            )
        else:
            self._apply(new, settings)
        if self.notifier:
            self.notifier.ready()

    def _check_auth_stays_on(self, new: Config, settings: HttpSettings) -> None:
        """An emptied tokens file must not switch authentication off."""
        if self.http.settings.auth_tokens and not settings.auth_tokens and new.auth != "none":
            raise ConfigError(
                "The new configuration has no bearer token, which would turn authentication"
                " off: expected at least one in `auth_tokens` or `auth_tokens_file`, or"
                ' `auth = "none"` to turn it off on purpose'
            )

    def _apply(self, new: Config, settings: HttpSettings) -> None:
        self.http.settings = settings
        self.budget.limit = fd_limit.plan(
            new.max_connections, self.side_port_max_connections
        ).max_connections
        spool = self.spool.settings
        spool.max_spool_bytes = new.max_spool_bytes
        spool.segment_max_bytes = new.segment_max_bytes
        spool.segment_max_events = new.segment_max_events
        spool.segment_max_age_seconds = new.segment_max_age_seconds
        if self.committer is not None:
            self.committer.interval_seconds = new.iceberg_commit_interval_seconds
            self.committer.retention_seconds = new.iceberg_snapshot_retention_seconds
        logging.getLogger().setLevel(new.log_level.upper())
        fixed = [k for k in _RESTART_KEYS if getattr(new, k) != getattr(self.config, k)]
        same_paths = "tls_cert_file" not in fixed and "tls_key_file" not in fixed
        if self.config.tls_cert_file and same_paths and _tls_files_digest(new) != self.tls_digest:
            fixed += ["tls_cert_file", "tls_key_file"]  # rewritten in place
        if "tls_cert_file" in fixed or "tls_key_file" in fixed:
            log.warning(
                "TLS certificate or key changed: restart gravixd to serve them",
                extra={
                    "event": "tls_restart_needed",
                    "tls_cert_file": new.tls_cert_file,
                    "tls_key_file": new.tls_key_file,
                },
            )
        log.info(
            "configuration reloaded",
            extra={
                "event": "reloaded",
                "auth_tokens": len(settings.auth_tokens),
                "ignored_until_restart": fixed,
            },
        )


# Keys a reload cannot apply: they name sockets, files or formats fixed at start.
_RESTART_KEYS = (
    "http_listen",
    "tcp_listen",
    "tcp_listeners",
    "metrics_listen",
    "reuse_port",
    "spool_dir",
    "store_url",
    "ack",
    "segment_format",
    "tls_cert_file",
    "tls_key_file",
    "iceberg_catalog_uri",
    "iceberg_catalog_name",
    "iceberg_namespace",
    "iceberg_commit",
)


def serve(loaded: LoadedConfig, flags: Mapping[str, Any], environ: Mapping[str, str]) -> int:
    """Run the daemon; returns the exit code (1: it could not start, said in one line)."""
    from ..config import load

    fd_limit.raise_soft_limit()  # before the plan in Daemon(): it fits the caps to the limit
    daemon = Daemon(loaded, reload=lambda: load(flags, environ))
    # Group commit hands each fsync to a worker thread; with CPython's default 5 ms switch
    # interval that thread waits for the GIL behind a busy event loop, and every durable ack
    # with it. 1 ms measured ~10-25% more single-event requests/s (bench/, issue 2 note).
    sys.setswitchinterval(0.001)
    pin_mmap_threshold()  # freed request bodies go back to the OS (see malloc_tuning.py)
    try:
        trio.run(daemon.run)
    except StartupError as exc:
        log.error(f"gravixd cannot start: {exc}", extra={"event": "startup_failed"})
        return 1
    return 0
