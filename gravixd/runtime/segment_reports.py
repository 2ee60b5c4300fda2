"""What sealing, recovering or verifying a spool segment found, logged and counted in one
place (the spool's sealer and recovery, and the uploader's check before upload, share it).
"""

from __future__ import annotations

import logging

from ..metrics import Metrics
from .segment_files import SealReport

log = logging.getLogger("gravixd.spool")


def report_segment(
    metrics: Metrics, stream: str, segment_id: str, stage: str, report: SealReport
) -> None:
    """Log and count what sealing, recovering or verifying a segment found."""
    fields = {"segment": segment_id, "stream": stream, "stage": stage}
    if report.quarantined is not None:
        fields["quarantined_to"] = str(report.quarantined)
    outcome, scan = report.outcome, report.scan
    if stage == "recovery" and outcome in ("sealed", "truncated", "unreadable"):
        label = "quarantined" if outcome == "unreadable" else outcome
        metrics.segments_recovered.labels(label).inc()
    if outcome == "truncated" and scan is not None:
        log.warning(
            "torn segment tail cut (the cut bytes are kept in quarantine)",
            extra={
                "event": "spool_torn_tail_truncated",
                **fields,
                "offset": scan.torn_at,
                "kept_bytes": scan.good_bytes,
                "dropped_bytes": scan.total_bytes - scan.good_bytes,
                "kept_rows": report.kept_rows,
            },
        )
    elif outcome == "salvaged" and scan is not None:
        metrics.segments_quarantined.labels("damaged").inc()
        metrics.damaged_bytes.labels(stage).inc(scan.damaged_bytes)
        metrics.segments_recovered.labels("salvaged").inc()
        log.error(
            "damaged segment: original quarantined, intact batches kept",
            extra={
                "event": "spool_segment_damaged",
                **fields,
                "offset": report.damaged[0][0] if report.damaged else None,
                "damaged_ranges": report.damaged,
                "damaged_bytes": scan.damaged_bytes,
                "kept_batches": len(scan.blocks),
                "kept_rows": report.kept_rows,
                "error": report.error,
            },
        )
    elif outcome in ("unreadable", "not_a_file"):
        metrics.segments_quarantined.labels(outcome).inc()
        log.error(
            "segment quarantined",
            extra={"event": "spool_segment_quarantined", **fields, "error": report.error},
        )
    elif outcome == "gone":
        metrics.segments_gone.labels(stage).inc()
        log.error(
            "segment file vanished from the spool; nothing left to seal or upload",
            extra={"event": "spool_segment_gone", **fields, "error": report.error},
        )
