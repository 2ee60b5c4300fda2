"""A real gravixd store (the Hive files, no catalog) for the query-example tests.

`land` runs the real daemon (`python -m gravixd serve`, Parquet segments unless told
otherwise), posts events and stops it with SIGTERM (its drain seals and uploads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon import Daemon

ROOT = Path(__file__).resolve().parents[1]


def facts(tag: str, n: int, *, first_ns: int | None = None) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "service": f"svc-{i % 3}",
                "route": f"/r/{i % 4}",
                "method": ("GET", "POST")[i % 2],
                "status_code": (200, 201, 404, 500, 503)[i % 5],
                "duration_ms": (i * 7919) % 1000 / 10,
                "bytes_in": i * 3,
                "bytes_out": i * 11,
                "trace_id": f"{tag}-{i:06d}",
            }
        )
    if first_ns is not None and rows:
        rows[0]["timestamp_unix_nano"] = first_ns
    return rows


def events(tag: str, n: int) -> list[dict[str, Any]]:
    severities = ("DEBUG", "INFO", "WARN", "ERROR", "FATAL")
    return [
        {
            "service": f"svc-{i % 3}",
            "kind": ("deploy", "restart", "error")[i % 3],
            "severity": severities[i % len(severities)],
            "message": f"event {i}",
            "trace_id": f"{tag}-{i:06d}",
        }
        for i in range(n)
    ]


def land(
    workdir: Path, store_dir: Path, posts: dict[str, list[list[dict[str, Any]]]], *args: str
) -> None:
    """Post each stream's batches to a real daemon writing Parquet segments into `store_dir`,
    then stop it (SIGTERM: seal and upload everything acknowledged)."""
    with Daemon(
        workdir,
        "--segment-format",
        "parquet",
        "--store-url",
        f"file://{store_dir}",
        *args,
        store_url=f"file://{store_dir}",
    ) as daemon:
        for stream, batches in posts.items():
            for batch in batches:
                body = b"".join(json.dumps(row).encode() + b"\n" for row in batch)
                status, answer, _ = daemon.post(f"/v1/{stream}", body, "application/x-ndjson")
                assert (status, answer.get("accepted")) == (202, len(batch)), answer
        assert daemon.stop() == 0
