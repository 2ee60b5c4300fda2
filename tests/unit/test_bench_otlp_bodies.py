"""bench/bench_otlp.py compares OTLP with gravixd's own endpoints on the same events: its OTLP
bodies must map to exactly the rows its /v1/facts and /v1/events bodies hold (no timing here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(_REPO))

from bench import bench_otlp  # noqa: E402
from bench.bodies import make_facts  # noqa: E402
from gravixd.core import otlp  # noqa: E402
from gravixd.core.decode import decode_protobuf_pure  # noqa: E402

_NOW_NS = 1_800_000_000_000_000_000


def _rows(batch: pa.RecordBatch) -> list[dict[str, object]]:
    index = batch.schema.get_field_index("timestamp")
    batch = batch.set_column(index, "timestamp", batch.column(index).cast("int64"))
    rows = batch.to_pylist()
    for row in rows:
        row["attributes"] = sorted(row["attributes"])
    return sorted(rows, key=lambda r: (r["timestamp"], r["trace_id"]))


def test_otlp_bodies_hold_the_same_rows_as_gravixd_bodies() -> None:
    facts = make_facts(200)
    pb = "application/x-protobuf"
    spans = otlp.decode_export(otlp.TRACES, pb, bench_otlp.traces_body(facts), _NOW_NS)
    logs = otlp.decode_export(otlp.LOGS, pb, bench_otlp.logs_body(facts), _NOW_NS)
    assert spans.batch.num_rows == logs.batch.num_rows == 200
    assert _rows(spans.batch) == _rows(
        decode_protobuf_pure("facts", bench_otlp.facts_body(facts), _NOW_NS)
    )
    assert _rows(logs.batch) == _rows(
        decode_protobuf_pure("events", bench_otlp.events_body(facts), _NOW_NS)
    )
