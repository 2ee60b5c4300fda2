"""The benchmark's bodies are what the daemon accepts, and its report renders: no timing here.

A benchmark whose bodies the daemon rejected would measure 400s; these tests make sure every
body bench/ sends (HTTP JSON / NDJSON / protobuf, gzip or not, raw-TCP ndjson and protobuf
framing) decodes through gravixd's own decoders into the same rows.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pyarrow as pa
import pytest

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(_REPO))

from bench import bodies, report  # noqa: E402
from gravixd.core import decode  # noqa: E402
from gravixd.core.framing import NdjsonFramer, ProtobufFramer  # noqa: E402

_NOW_NS = 1_800_000_000_000_000_000


def _as_batch(decoded: object) -> pa.RecordBatch:
    """A record batch from what `decode` returns: columns, or a small request's rows that the
    spool turns into columns later."""
    if isinstance(decoded, pa.RecordBatch):
        return decoded
    return decode.rows_to_batch("facts", [decoded])


@pytest.mark.parametrize("fmt", ["json", "ndjson", "protobuf"])
@pytest.mark.parametrize("events", [1, 1000])
@pytest.mark.parametrize("gzip_on", [False, True])
def test_http_bodies_decode_to_the_generated_facts(
    tmp_path: Path, fmt: str, events: int, gzip_on: bool
) -> None:
    body = bodies.write_body(tmp_path, fmt, events, gzip_on)
    wire = body.path.read_bytes()
    assert body.wire_bytes == len(wire)
    raw = gzip.decompress(wire) if gzip_on else wire
    assert body.raw_bytes == len(raw)

    batch = _as_batch(decode.decode("facts", body.content_type, raw, _NOW_NS))

    facts = bodies.make_facts(events)
    assert batch.num_rows == events
    assert batch.column("trace_id").to_pylist() == [f["trace_id"] for f in facts]
    assert batch.column("status_code").to_pylist() == [f["status_code"] for f in facts]
    assert dict(batch.column("attributes").to_pylist()[0]) == facts[0]["attributes"]


def test_every_http_format_gives_the_same_rows(tmp_path: Path) -> None:
    tables = [
        _as_batch(
            decode.decode(
                "facts",
                bodies.CONTENT_TYPES[fmt],
                bodies.ENCODERS[fmt](bodies.make_facts(50)),
                _NOW_NS,
            )
        )
        for fmt in ("json", "ndjson", "protobuf")
    ]
    assert tables[0].equals(tables[1])
    assert tables[0].equals(tables[2])


def test_tcp_ndjson_block_is_whole_lines_of_facts() -> None:
    block = bodies.tcp_stream("ndjson", 100)
    framer = NdjsonFramer(max_line_bytes=64 * 1024)
    lines = b"".join(ev.body for ev in framer.feed(block))
    assert lines == block  # every line complete, nothing left buffered
    assert decode.decode_ndjson("facts", lines, _NOW_NS).num_rows == 100


def test_tcp_protobuf_block_is_whole_delimited_frames() -> None:
    block = bodies.tcp_stream("protobuf", 100)
    feed = ProtobufFramer(max_frame_bytes=64 * 1024).feed(block)
    assert feed.error is None
    assert len(feed.frames) == 100
    batch = decode.decode_protobuf_pure("facts", feed.frames.batch_body(), _NOW_NS)
    expected = decode.decode_json("facts", bodies.encode_json(bodies.make_facts(100)), _NOW_NS)
    assert batch.equals(expected)


def _result(case: str, server: str, events_per_second: float, **variant: object) -> dict:
    figures = {"events_per_second": events_per_second, "peak_rss_mb": 50.0}
    return {
        "case": case,
        "server": server,
        "load": "wrk",
        "variant": variant,
        "runs": [figures],
        "median": figures,
        "min": figures,
        "max": figures,
    }


def test_report_states_met_and_missed_targets(tmp_path: Path) -> None:
    docs = {
        "http": {
            "scenario": "http",
            "preliminary": True,
            "results": [
                _result("protobuf-1000", "gravixd", 2.5e6),
                _result("protobuf-1000", "fastapi", 2.5e5),
                _result("json-1000", "gravixd", 6e5),
                _result("json-1000", "fastapi", 1.5e5),
            ],
        },
        "s3": {"scenario": "s3", "upload_rows_per_second": 123},
    }
    text = report.render(docs, chart=None)

    assert "Preliminary" in text
    assert "| #8 | batched protobuf ×1000, durable | ≥ 2M | 2.5M | met |" in text
    assert "| #8 | … vs FastAPI peer | ≥ 8.00× | 10.00× | met |" in text
    assert "| #8 | batched JSON ×1000, durable | ≥ 700k | 600k | **missed** |" in text
    assert "| #5 | TCP ndjson events/s | ≥ 500k | – | not measured |" in text
    assert "upload_rows_per_second" in text  # a scenario of its own shape is shown as is


def _with_cpu(row: dict, cpu_s_per_M_events: float) -> dict:
    for stat in ("median", "min", "max"):
        row[stat] = {**row[stat], "cpu_s_per_M_events": cpu_s_per_M_events}
    return row


def test_every_run_records_cpu_seconds_per_million_events() -> None:
    from bench import load, run

    result = load.LoadResult("wrk", 2.0, 100, 0, 400_000)
    figures = run._server_figures(result, cpu_s=0.5, rss=2**20, wire_bytes=1e6)
    assert figures["cpu_s_per_M_events"] == 1.25  # 0.5 CPU s over 400k events
    assert "cpu_s_per_M_events" in run.FIGURES  # so every summary has median/min/max of it


def test_readme_gets_one_short_table_with_cpu_and_no_issue_numbers() -> None:
    http = {
        "scenario": "http",
        "machine": {"gravixd_commit": "abc1234", "cpu_model": "Xeon"},
        "results": [
            _with_cpu(_result("protobuf-1000", "gravixd", 2.0e6), 0.48),
            _with_cpu(_result("protobuf-1000", "fastapi", 2.5e5), 3.7),
            _with_cpu(_result("protobuf-1000", "trio_h11", 9e6), 0.11),
            _with_cpu(_result("json-1000", "gravixd", 6e5), 1.5),
        ],
    }
    section = report.readme_section({"http": http})
    assert "| protobuf ×1000 | 2M | 0.48 | 250k | 3.70 | 9M | 0.11 |" in section
    assert "| JSON ×1000 | 600k | 1.50 | – | – | – | – |" in section
    assert "docs/benchmarks.md" in section
    assert "#" not in section.replace("](", "")  # no issue numbers; links are fine
    assert section.count("\n|---") == 1  # one table

    targets = "\n".join(report.targets({"http": http}))
    assert "| #13 | CPU s per M events, protobuf ×1000 | ≤ 0.50 s | 0.48 s | met |" in targets
    assert "| #13 | CPU s per M events, JSON ×1000 | ≤ 1.40 s | 1.50 s | **missed** |" in targets
