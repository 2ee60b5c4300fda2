"""Reading the Iceberg tables gravixd maintains, for tests: every snapshot, not only the last."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa


def sqlite_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir.absolute()}/catalog.db"


def catalog(uri: str, name: str = "gravix", **properties: str) -> Any:
    from pyiceberg.catalog.sql import SqlCatalog

    # The daemon creates the catalog's tables; a reader racing it must not try too.
    return SqlCatalog(name, uri=uri, init_catalog_tables="false", **properties)


def table(uri: str, stream: str = "facts", namespace: str = "gravix") -> Any | None:
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
    from sqlalchemy.exc import OperationalError

    try:
        return catalog(uri).load_table((namespace, stream))
    except (NoSuchTableError, NoSuchNamespaceError, OperationalError):
        return None  # not created yet


def scan(uri: str, stream: str = "facts", snapshot_id: int | None = None) -> pa.Table:
    loaded = table(uri, stream)
    if loaded is None:
        return pa.table({"trace_id": pa.array([], pa.string())})
    return loaded.scan(snapshot_id=snapshot_id).to_arrow()


def trace_ids(uri: str, stream: str = "facts") -> list[str]:
    return scan(uri, stream).column("trace_id").to_pylist()


def duplicates(ids: list[str]) -> dict[str, int]:
    return {k: n for k, n in Counter(ids).items() if n > 1}


def every_snapshot_ids(uri: str, stream: str = "facts") -> dict[int, list[str]]:
    """trace_ids of each snapshot the table keeps."""
    loaded = table(uri, stream)
    if loaded is None:
        return {}
    return {
        s.snapshot_id: loaded.scan(snapshot_id=s.snapshot_id)
        .to_arrow()
        .column("trace_id")
        .to_pylist()
        for s in loaded.metadata.snapshots
    }
