"""A real Trino 476 on loopback for tests and bench/bench_trino.py: one node (coordinator and
worker), a small heap, and one catalog, `iceberg`, on the same Iceberg JDBC catalog
(PostgreSQL, tests/postgres.py) and the same S3 (SeaweedFS, tests/seaweed.py) gravixd writes.
(Named trino_server, not trino: that is the client package's name.)

The server comes from scripts/install-trino (cached under ~/.cache/gravixd-tools); it runs on
the newest JDK >= 24 under /usr/lib/jvm. Only the Iceberg plugin is loaded (a plugin folder
of links), so a start takes seconds, not a minute. Every port is a free port of 127.0.0.1;
the process is stopped by its own PID. Never writes into the shared Trino home.

`python3 tests/trino_server.py --find-java` prints the JDK it would use (scripts/install-trino's
check) and exits 1 when there is none.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processes import log_tail, stop_process

VERSION = 476
MIN_JAVA = 24
CATALOG = "iceberg"  # the Trino catalog name the docs' queries use
TOOLS_CACHE = Path(os.environ.get("GRAVIXD_TOOLS_CACHE", Path.home() / ".cache/gravixd-tools"))
JVM_ROOT = Path("/usr/lib/jvm")

# A cold JVM on a loaded 2-core box: Trino's own start is ~15 s there, allow a lot more.
_START_TIMEOUT_SECONDS = 240.0
_STOP_TIMEOUT_SECONDS = 30.0


def trino_home() -> Path:
    home = TOOLS_CACHE / f"trino-server-{VERSION}"
    if not (home / "lib").is_dir():
        raise RuntimeError(
            f"Expected Trino {VERSION} unpacked in {home} (bash scripts/install-trino fetches "
            "it), got nothing"
        )
    return home


def _java_major(java: Path) -> int:
    done = subprocess.run(
        [str(java), "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    match = re.search(r'version "(\d+)', done.stderr)
    return int(match[1]) if match else 0


def find_java(root: Path = JVM_ROOT) -> Path:
    """The newest JDK >= MIN_JAVA under `root` (its home folder)."""
    found: list[tuple[int, Path]] = []
    for home in sorted(root.glob("*")) if root.is_dir() else []:
        java = home / "bin" / "java"
        if java.is_file() and not home.is_symlink():
            major = _java_major(java)
            if major >= MIN_JAVA:
                found.append((major, home))
    if not found:
        names = ", ".join(p.name for p in sorted(root.glob("*"))) if root.is_dir() else "none"
        raise RuntimeError(
            f"Trino {VERSION} needs a JDK >= {MIN_JAVA} under {root}; found: {names}"
        )
    return max(found)[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iceberg_catalog_properties(
    *,
    jdbc_url: str,
    jdbc_user: str,
    jdbc_password: str,
    catalog_name: str,
    warehouse: str,
    s3_endpoint: str,
    s3_region: str,
    s3_access_key: str,
    s3_secret_key: str,
) -> dict[str, str]:
    """Trino's Iceberg connector on Iceberg's JDBC catalog: the tables pyiceberg's SQL catalog
    writes (same `iceberg_tables` / `iceberg_namespace_properties` tables, keyed by
    `catalog_name` = gravixd's `iceberg_catalog_name`)."""
    return {
        "connector.name": "iceberg",
        "iceberg.catalog.type": "jdbc",
        "iceberg.jdbc-catalog.driver-class": "org.postgresql.Driver",
        "iceberg.jdbc-catalog.connection-url": jdbc_url,
        "iceberg.jdbc-catalog.connection-user": jdbc_user,
        "iceberg.jdbc-catalog.connection-password": jdbc_password,
        "iceberg.jdbc-catalog.catalog-name": catalog_name,
        "iceberg.jdbc-catalog.default-warehouse-dir": warehouse,
        # pyiceberg's SQL catalog creates its tables without Iceberg-JDBC's V1 schema column
        # (`iceberg_type`); V0 is the layout both read and write.
        "iceberg.jdbc-catalog.schema-version": "V0",
        "fs.native-s3.enabled": "true",
        "s3.endpoint": s3_endpoint,
        "s3.region": s3_region,
        "s3.path-style-access": "true",
        "s3.aws-access-key": s3_access_key,
        "s3.aws-secret-key": s3_secret_key,
        # Upkeep from the tests and the deployment (expire_snapshots/remove_orphan_files
        # with a short retention) must be allowed to name it.
        "iceberg.expire-snapshots.min-retention": "0s",
        "iceberg.remove-orphan-files.min-retention": "0s",
    }


class TrinoServer:
    """One Trino server in `base_dir` (etc/, data/, server.log) with the given catalogs."""

    def __init__(self, base_dir: Path, catalogs: Mapping[str, Mapping[str, str]]) -> None:
        self.base_dir = base_dir
        self.etc = base_dir / "etc"
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "server.log"
        self.catalogs = catalogs
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None

    def _write_config(self) -> None:
        home = trino_home()
        for d in (self.etc / "catalog", self.data_dir, self.base_dir / "plugin"):
            d.mkdir(parents=True, exist_ok=True)
        # Only the plugins the catalogs use: Trino loads every plugin folder at start.
        for name in {props["connector.name"] for props in self.catalogs.values()}:
            link = self.base_dir / "plugin" / name
            if not link.exists():
                link.symlink_to(home / "plugin" / name)
        (self.etc / "config.properties").write_text(
            "\n".join(
                [
                    "coordinator=true",
                    "node-scheduler.include-coordinator=true",
                    f"http-server.http.port={self.port}",
                    # Loopback only: bound, announced and discovered on 127.0.0.1.
                    "node.environment=gravixd_test",
                    f"node.id={uuid.uuid4()}",
                    "node.bind-ip=127.0.0.1",
                    "node.internal-address=127.0.0.1",
                    f"discovery.uri=http://127.0.0.1:{self.port}",
                    # 2 cores shared: a small heap, small query memory, few threads.
                    "query.max-memory=600MB",
                    "query.max-memory-per-node=600MB",
                    "memory.heap-headroom-per-node=300MB",
                    "task.concurrency=2",
                    "task.max-worker-threads=4",
                    "catalog.management=static",
                    f"catalog.config-dir={self.etc / 'catalog'}",
                    f"plugin.dir={self.base_dir / 'plugin'}",
                    "",
                ]
            )
        )
        (self.etc / "jvm.config").write_text(
            "\n".join(
                [
                    "-server",
                    "-Xmx1500m",
                    "-XX:+UseG1GC",
                    "-XX:+ExitOnOutOfMemoryError",
                    "-XX:-OmitStackTraceInFastThrow",
                    "-XX:ReservedCodeCacheSize=256M",
                    "-XX:+EnableDynamicAgentLoading",
                    "-Djdk.attach.allowAttachSelf=true",
                    "-Dfile.encoding=UTF-8",
                    "",
                ]
            )
        )
        (self.etc / "log.properties").write_text("io.trino=INFO\n")
        for name, props in self.catalogs.items():
            (self.etc / "catalog" / f"{name}.properties").write_text(
                "".join(f"{k}={v}\n" for k, v in props.items())
            )

    def command(self) -> list[str]:
        home = trino_home()
        java = find_java() / "bin" / "java"
        jvm = [line for line in (self.etc / "jvm.config").read_text().splitlines() if line]
        return [
            str(java),
            *jvm,
            "-cp",
            f"{home / 'lib'}/*",
            f"-Dconfig={self.etc / 'config.properties'}",
            f"-Dlog.levels-file={self.etc / 'log.properties'}",
            f"-Dnode.data-dir={self.data_dir}",
            "io.trino.server.TrinoServer",
        ]

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self._write_config()
        started = time.monotonic()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "JAVA_HOME": str(find_java())},
            )
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started

    def _wait_ready(self) -> None:
        import json
        import urllib.error
        import urllib.request

        import trino

        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        last: object = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Trino exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/v1/info", timeout=5
                ) as response:
                    info = json.load(response)
                if not info.get("starting", True):
                    # Workers register a moment after the coordinator says it has started.
                    self.query("SELECT 1")
                    return
                last = info
            except (OSError, urllib.error.URLError, json.JSONDecodeError) as exc:
                last = exc
            except trino.exceptions.TrinoQueryError as exc:  # "no nodes available" at first
                last = exc
            time.sleep(0.5)
        raise RuntimeError(
            f"Expected Trino on 127.0.0.1:{self.port} within {_START_TIMEOUT_SECONDS} s, "
            f"got {last!r}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM (Trino shuts down), then SIGKILL."""
        process, self.process = self.process, None
        stop_process(process, _STOP_TIMEOUT_SECONDS)

    def __enter__(self) -> TrinoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- clients ------------------------------------------------------------------------

    def connect(self, **kwargs: Any) -> Any:
        """A DB-API connection of the `trino` client (PyPI) to this server."""
        import trino

        return trino.dbapi.connect(host="127.0.0.1", port=self.port, user="gravixd-test", **kwargs)

    def query(self, sql: str) -> list[list[Any]]:
        """Run one statement and return every row."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return list(cur.fetchall())
        finally:
            conn.close()

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


if __name__ == "__main__":
    if sys.argv[1:] == ["--find-java"]:
        try:
            print(find_java())
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            sys.exit(1)
    else:
        sys.exit("usage: python3 tests/trino_server.py --find-java")
