"""Apache Iceberg tables over the store's Parquet segments (docs/iceberg.md).

`catalog` opens the catalog an `iceberg_catalog_uri` names, `tables` creates the tables
(`{namespace}.facts`, `{namespace}.events`) and says where their files live, `datafiles`
turns a sealed Parquet segment into the Iceberg data files that hold it (one per event hour),
`commit` adds segments to a table exactly once. Everything here is blocking (pyiceberg is):
the trio runtime calls it from worker threads. pyiceberg is an install extra
(`gravixd[iceberg]`); importing this package does not import it.
"""

from __future__ import annotations

SEGMENTS_PROPERTY = "gravixd.segments"
"""Snapshot summary property: the comma-separated segment ids a commit adds."""

__all__ = ["SEGMENTS_PROPERTY"]
