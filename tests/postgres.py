"""A private PostgreSQL on loopback for tests: the Iceberg catalog gravixd (pyiceberg's SQL
catalog) and Trino (`iceberg.catalog.type=jdbc`) share.

The server binaries come from Debian's `postgresql` package (scripts/install-tools). The
cluster lives in a temp folder (initdb), listens on a free port of 127.0.0.1 only, and is
stopped by its own PID. PostgreSQL refuses to run as root: as root, the cluster belongs to
`nobody`. Never touches the machine's own PostgreSQL cluster or its service.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from processes import log_tail, stop_process

USER = "gravix"
PASSWORD = "gravix-test"  # a loopback test server's password, not a secret
DATABASE = "gravix"

_START_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 30.0


def pg_bin(name: str) -> str:
    """The path of a PostgreSQL server program (`initdb`, `postgres`): Debian keeps them
    under /usr/lib/postgresql/<version>/bin, off PATH."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"Expected PostgreSQL's `{name}` under /usr/lib/postgresql/*/bin or on PATH "
            "(scripts/install-tools installs Debian's postgresql), got nothing"
        )
    return path


def _version_key(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in `base_dir`, with one password-protected user and database."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        # Root may not run PostgreSQL; `nobody` owns the cluster then.
        self._as_user: pwd.struct_passwd | None = (
            pwd.getpwnam("nobody") if os.getuid() == 0 else None
        )

    # --- URIs ---------------------------------------------------------------------------

    @property
    def sqlalchemy_uri(self) -> str:
        """What gravixd's `iceberg_catalog_uri` (pyiceberg's SQL catalog) takes."""
        return f"postgresql+psycopg2://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def jdbc_url(self) -> str:
        """What Trino's `iceberg.jdbc-catalog.connection-url` takes."""
        return f"jdbc:postgresql://127.0.0.1:{self.port}/{DATABASE}"

    # --- lifecycle ----------------------------------------------------------------------

    def _demote(self) -> None:
        if self._as_user is not None:
            os.setgid(self._as_user.pw_gid)
            os.setuid(self._as_user.pw_uid)

    def _run(self, *args: str, input_text: str | None = None) -> None:
        done = subprocess.run(
            args,
            cwd=self.base_dir,
            input=input_text,
            capture_output=True,
            text=True,
            preexec_fn=self._demote,  # noqa: PLW1509 - single-threaded fixture set-up
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{args[0]} exited with {done.returncode}: {done.stderr.strip() or done.stdout}"
            )

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._as_user is not None:
            os.chown(self.base_dir, self._as_user.pw_uid, self._as_user.pw_gid)
        if not (self.data_dir / "PG_VERSION").exists():
            pwfile = self.base_dir / "pwfile"
            pwfile.write_text(PASSWORD + "\n")
            if self._as_user is not None:
                os.chown(pwfile, self._as_user.pw_uid, self._as_user.pw_gid)
            self._run(
                pg_bin("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",  # a throw-away cluster: no fsync of its template files
            )
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self.process = subprocess.Popen(
                [
                    pg_bin("postgres"),
                    "-D",
                    str(self.data_dir),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.base_dir),  # the Unix socket stays in our folder
                    "-c",
                    "fsync=off",
                    "-c",
                    "shared_buffers=32MB",
                ],
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._demote,  # noqa: PLW1509
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self._wait_ready()
            self._create_database()
        except BaseException:
            self.stop()
            raise

    def _connect(self, database: str) -> object:
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            password=PASSWORD,
            dbname=database,
            connect_timeout=5,
        )

    def _wait_ready(self) -> None:
        import psycopg2

        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                self._connect("postgres").close()  # type: ignore[attr-defined]
                return
            except psycopg2.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        raise RuntimeError(
            f"Expected PostgreSQL on 127.0.0.1:{self.port} within {_START_TIMEOUT_SECONDS} s, "
            f"got {last!r}:\n{self.log_tail()}"
        )

    def _create_database(self) -> None:
        conn = self._connect("postgres")
        try:
            conn.autocommit = True  # type: ignore[attr-defined]
            with conn.cursor() as cur:  # type: ignore[attr-defined]
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            conn.close()  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Stop the server by its PID (SIGINT: "fast" shutdown, which does not wait for
        Trino's pooled connections; then SIGKILL)."""
        process, self.process = self.process, None
        stop_process(process, _STOP_TIMEOUT_SECONDS, signal.SIGINT)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)
