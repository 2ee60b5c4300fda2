"""Iceberg tables on S3 (SeaweedFS): the daemon commits its Parquet segments in the bucket
(a segment spanning event hours split into per-hour files there too), `gravixd rollup`
compacts a closed hour in the bucket, and pyiceberg reads every event once through the
same endpoint, path-style addressing and credentials gravixd's S3 store uses."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from daemon import Daemon, ndjson, wait_for
from iceberg_tables import duplicates, sqlite_uri
from seaweed import SeaweedServer, environ_without_aws

pytestmark = [pytest.mark.s3]

HOUR_NS = 3_600_000_000_000


def _s3_flags(server: SeaweedServer) -> list[str]:
    return [
        "--s3-endpoint-url", server.endpoint_url, "--s3-region", server.region,
        "--s3-path-style", "--s3-access-key-id", server.access_key_id,
        "--s3-secret-access-key", server.secret_access_key,
    ]  # fmt: skip


def _table(uri: str, server: SeaweedServer):  # type: ignore[no-untyped-def]
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        "gravix",
        uri=uri,
        init_catalog_tables="false",
        **{
            "s3.endpoint": server.endpoint_url,
            "s3.region": server.region,
            "s3.access-key-id": server.access_key_id,
            "s3.secret-access-key": server.secret_access_key,
            "s3.force-virtual-addressing": "false",
        },
    )
    return catalog.load_table(("gravix", "facts"))


def _ids(uri: str, server: SeaweedServer) -> list[str]:
    try:
        return _table(uri, server).scan().to_arrow().column("trace_id").to_pylist()
    except Exception:  # noqa: BLE001 - not created yet
        return []


def test_tables_on_s3_commit_split_and_compact(tmp_path: Path, seaweed: SeaweedServer) -> None:
    uri = sqlite_uri(tmp_path)
    store_url = f"s3://{seaweed.bucket}/ice-{uuid.uuid4().hex[:10]}"
    closed = (time.time_ns() // HOUR_NS - 3) * HOUR_NS  # an hour that closed 2 hours ago
    rows = [
        {"timestamp_unix_nano": closed + h * HOUR_NS + i, "service": "s", "trace_id": f"h{h}-{i}"}
        for h in range(2)
        for i in range(20)
    ]
    env = {k: v for k, v in environ_without_aws().items() if not k.startswith("GRAVIXD_")}
    daemon = Daemon(
        tmp_path / "d",
        "--iceberg-catalog-uri", uri, "--segment-max-age-seconds=0.2",
        "--iceberg-commit-interval-seconds=0.1", *_s3_flags(seaweed),
        store_url=store_url,
    )  # fmt: skip
    daemon.env = env
    with daemon:
        for half in (rows[:10] + rows[20:30], rows[10:20] + rows[30:]):  # two segments
            assert daemon.post("/v1/facts", ndjson(half), "application/x-ndjson")[0] == 202
            time.sleep(0.4)
        wait_for(lambda: len(_ids(uri, seaweed)) == 40, timeout=60, what="committed on S3")
    table = _table(uri, seaweed)
    files = [t.file.file_path for t in table.scan().plan_files()]
    assert len(files) == 4  # two segments, each split into its two event hours
    assert all(f.startswith(f"{store_url}/iceberg/gravix/facts/data/") for f in files)
    assert table.location() == f"{store_url}/iceberg/gravix/facts"

    result = subprocess.run(
        [
            sys.executable, "-m", "gravixd", "rollup", "--json", "--stream", "facts",
            "--store-url", store_url, "--iceberg-catalog-uri", uri, *_s3_flags(seaweed),
        ],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)["tables"][0]
    assert (report["hours_compacted"], report["files_replaced"]) == (2, 4)
    table = _table(uri, seaweed)
    assert len(list(table.scan().plan_files())) == 2
    ids = table.scan().to_arrow().column("trace_id").to_pylist()
    assert sorted(ids) == sorted(r["trace_id"] for r in rows) and not duplicates(ids)
