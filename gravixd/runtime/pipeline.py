"""The one path every event takes after decoding, whatever its source (HTTP or TCP):
shed if the spool is full, append to the stream's spool, wait per ack mode, count."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..core.decode import ProtobufDecoder
from ..core.unknown_fields import UnknownFields, UnknownFieldsMode
from ..errors import SpoolFullError
from ..metrics import Metrics
from .clock import Clock
from .spool import Spool


class Pipeline:
    def __init__(
        self,
        spool: Spool,
        metrics: Metrics,
        *,
        ack: str,
        protobuf_decoder: ProtobufDecoder,
        unknown_fields: UnknownFieldsMode = "attributes",
        clock: Clock | None = None,
    ) -> None:
        """`clock` gives events without a timestamp their time of receipt."""
        self.spool = spool
        self.metrics = metrics
        self.ack = ack
        self.protobuf_decoder = protobuf_decoder
        self.unknown_fields = unknown_fields  # SIGHUP may change it
        self.now_unix_nano = (clock or Clock()).unix_nano
        # (stream, source) -> cached counter child: labels() is slow on a hot path.
        self._accepted: dict[tuple[str, str], Any] = {}

    async def ingest(self, stream: str, batch: pa.RecordBatch, source: str) -> None:
        """Append `batch` to `stream`; returns once it is durable (ack=durable) or appended.

        Raises:
            SpoolFullError: the spool is above max_spool_bytes; nothing was appended.
            DurabilityError: the write or fsync failed; nothing of the batch is durable.
        """
        self.check_writable()
        await self.spool.streams[stream].append(batch, wait_durable=self.ack == "durable")
        counter = self._accepted.get((stream, source))
        if counter is None:
            counter = self._accepted[stream, source] = self.metrics.events_accepted.labels(
                stream, source
            )
        counter.inc(batch.num_rows)

    def unknown_keys(self) -> UnknownFields:
        """A fresh count of unknown JSON keys for one request or read, in the current mode."""
        return UnknownFields(self.unknown_fields)

    def count_unknown(self, stream: str, source: str, unknown: UnknownFields) -> None:
        """Count the unknown keys of events that were accepted."""
        if not unknown.found:
            return
        counter = self.metrics.unknown_fields
        if unknown.mode != "attributes":
            counter.labels(stream, source, "ignored").inc(unknown.found)
            return
        if unknown.found > unknown.over_limit:
            counter.labels(stream, source, "kept").inc(unknown.found - unknown.over_limit)
        if unknown.over_limit:
            counter.labels(stream, source, "over_limit").inc(unknown.over_limit)

    def check_writable(self) -> None:
        """Raises SpoolFullError while the spool's ledger says full (shed load); the error
        names the limit that tripped (`max_spool_bytes` or `upload_queue`)."""
        ledger = self.spool.ledger
        reason = ledger.full_reason()
        if reason is not None:
            raise SpoolFullError(ledger.describe_full(), limit=reason)

    async def wait_writable(self) -> None:
        """Return once the ledger has room again (TCP backpressure): the same predicate as
        `check_writable`, so a writer that was refused always waits here."""
        await self.spool.ledger.wait_not_full()
