"""Streams segments into zstd Parquet parts of about a target size (blocking).

Runs in worker threads, one at a time; never touches the store (the run uploads what it
stages) and never holds more than one row group of rows in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import GravixdError

# Uncompressed bytes buffered before they are written as one Parquet row group: large row
# groups make scans fast (Trino and DuckDB read a row group per split/thread); 128 MiB is
# the size Parquet's own docs and Spark use, and bounds this process's memory.
MAX_ROW_GROUP_BYTES = 128 * 1024 * 1024


class RollupError(GravixdError):
    """An hour could not be rolled up (unreadable segment, wrong schema, failed check)."""


@dataclass(frozen=True)
class StagedPart:
    path: Path
    rows: int
    size_bytes: int
    sha256: str


class PartWriter:
    """Streams record batches into zstd Parquet files of about `target_file_bytes`.

    Batches are buffered up to one row group; after each row group the file's size is
    known exactly (Parquet writes row groups whole), and the part is closed once it reaches
    the target. Called from one worker thread at a time, never concurrently.
    """

    def __init__(self, schema: pa.Schema, target_file_bytes: int, directory: Path, first: int):
        self.schema = schema
        self.target_file_bytes = target_file_bytes
        self.row_group_bytes = min(target_file_bytes, MAX_ROW_GROUP_BYTES)
        self.directory = directory
        self.next_number = first
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._rows = 0

    def add_segment(self, key: str, data: bytes) -> tuple[int, list[StagedPart]]:
        table = read_segment(key, data)
        if table.schema.names == self.schema.names and not table.schema.equals(
            self.schema, check_metadata=False
        ):
            # A segment sealed for Iceberg tables holds microseconds: widen them back.
            # A cast that fails is reported just below, with both schemas.
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                table = table.cast(self.schema)
        if not table.schema.equals(self.schema, check_metadata=False):
            raise RollupError(
                f"Expected segment {key!r} to have the {self.schema.names} schema of its "
                f"stream, got {table.schema.names} with types "
                f"{[str(t) for t in table.schema.types]}"
            )
        done: list[StagedPart] = []
        for batch in table.to_batches():
            if batch.num_rows == 0:
                continue
            self._pending.append(batch)
            self._pending_bytes += batch.nbytes
            if self._pending_bytes >= self.row_group_bytes:
                done += self._flush_row_group()
        return table.num_rows, done

    def finish(self) -> list[StagedPart]:
        done = self._flush_row_group() if self._pending else []
        if self._writer is not None:
            done.append(self._close_part())
        return done

    def close(self) -> None:
        """Release an open file after a failure (the staging directory is removed anyway)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _flush_row_group(self) -> list[StagedPart]:
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._pending, self._pending_bytes = [], 0
        if self._writer is None:
            self._path = self.directory / f"part-{self.next_number:05d}.parquet"
            self.next_number += 1
            self._sink = pa.OSFile(str(self._path), "wb")
            self._writer = pq.ParquetWriter(
                self._sink, self.schema, compression="zstd", write_statistics=True
            )
            self._rows = 0
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self._rows += table.num_rows
        assert self._sink is not None
        if self._sink.tell() >= self.target_file_bytes:
            return [self._close_part()]
        return []

    def _close_part(self) -> StagedPart:
        assert self._writer is not None and self._sink is not None and self._path is not None
        self._writer.close()
        self._sink.close()
        self._writer = self._sink = None
        digest = hashlib.sha256()
        with open(self._path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return StagedPart(self._path, self._rows, self._path.stat().st_size, digest.hexdigest())


def read_segment(key: str, data: bytes) -> pa.Table:
    """Decode one segment: Arrow IPC file (or stream) format, or Parquet."""
    try:
        if key.endswith(".parquet"):
            return pq.read_table(pa.BufferReader(data))
        if data[:6] == b"ARROW1":
            return pa.ipc.open_file(pa.BufferReader(data)).read_all()
        return pa.ipc.open_stream(pa.BufferReader(data)).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise RollupError(f"Expected segment {key!r} to be readable, got: {exc}") from exc
