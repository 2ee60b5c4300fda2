"""Shared pytest fixtures (fixtures only: helpers live in their own modules under tests/)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# Nothing in the test suite may probe the cloud instance-metadata address (169.254.169.254).
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One SeaweedFS S3 server for the session (tests use unique key prefixes)."""
    from seaweed import SeaweedServer

    with SeaweedServer(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture
def seaweed_private(tmp_path: Path) -> Iterator[object]:
    """A SeaweedFS server of this test alone, for tests that stop and restart it."""
    from seaweed import SeaweedServer

    with SeaweedServer(tmp_path / "seaweed") as server:
        yield server


@pytest.fixture
async def s3_store(seaweed: object) -> AsyncIterator[object]:
    """An S3Store on the session's SeaweedFS, under a prefix of this test alone."""
    from gravixd.stores import open_store

    server = seaweed
    store = open_store(
        f"s3://{server.bucket}/t-{uuid.uuid4().hex[:12]}",  # type: ignore[attr-defined]
        **server.store_options(),  # type: ignore[attr-defined]
    )
    try:
        yield store
    finally:
        await store.aclose()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One private PostgreSQL for the session: the Iceberg catalog gravixd and Trino share.
    Its folder is a fresh one under the system temp dir, not pytest's: as root the cluster
    runs as `nobody`, who cannot enter pytest's private (0700) temp root."""
    import shutil
    import tempfile

    from postgres import PostgresServer

    base = Path(tempfile.mkdtemp(prefix="gravixd-postgres-"))
    try:
        with PostgresServer(base) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def trino_server(
    tmp_path_factory: pytest.TempPathFactory, postgres: object, seaweed: object
) -> Iterator[object]:
    """One Trino 476 for the session, its `iceberg` catalog on the session's PostgreSQL
    (Iceberg JDBC catalog "gravix", gravixd's default iceberg_catalog_name) and SeaweedFS."""
    from postgres import PASSWORD, USER
    from trino_server import TrinoServer, iceberg_catalog_properties

    props = iceberg_catalog_properties(
        jdbc_url=postgres.jdbc_url,  # type: ignore[attr-defined]
        jdbc_user=USER,
        jdbc_password=PASSWORD,
        catalog_name="gravix",
        warehouse=f"s3://{seaweed.bucket}/trino-warehouse",  # type: ignore[attr-defined]
        s3_endpoint=seaweed.endpoint_url,  # type: ignore[attr-defined]
        s3_region=seaweed.region,  # type: ignore[attr-defined]
        s3_access_key=seaweed.access_key_id,  # type: ignore[attr-defined]
        s3_secret_key=seaweed.secret_access_key,  # type: ignore[attr-defined]
    )
    with TrinoServer(tmp_path_factory.mktemp("trino"), {"iceberg": props}) as server:
        yield server


@pytest.fixture(scope="session")
def gravix_tables(postgres: object, seaweed: object, trino_server: object) -> object:
    """`gravix.facts` and `gravix.events` in the shared catalog, as the docs name them,
    holding known rows of the last few hours (so the docs' "last day" filters find them at
    any hour); returns (facts, events) as pyarrow tables, the exact rows committed."""
    from datetime import UTC, datetime, timedelta

    from trino_tables import create_table, events_rows, facts_rows, hour_floor, sql_catalog

    catalog = sql_catalog(postgres, seaweed)
    start = hour_floor(datetime.now(UTC)) - timedelta(hours=2)
    facts = create_table(catalog, "gravix.facts", "facts")
    written_facts = facts_rows(1500, start=start, hours=2, seed=7)
    facts.append(written_facts.slice(0, 1000))  # two commits: two snapshots
    facts.append(written_facts.slice(1000))
    events = create_table(catalog, "gravix.events", "events")
    written_events = events_rows(900, start=start, hours=2, seed=8)
    events.append(written_events)
    return written_facts, written_events
