"""gravixd: an embedded, high-throughput ingestion daemon.

Events arrive over HTTP or raw TCP, are made durable in a local Arrow spool, and land as
Arrow/Parquet objects in an object store laid out for Trino, DuckDB and Cube.
"""

__version__ = "0.1.0"
