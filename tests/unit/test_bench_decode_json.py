"""bench/bench_decode_json.py runs against the decoder as it is (no timing asserted here)."""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(_REPO))

import msgspec  # noqa: E402

from bench import bench_decode_json  # noqa: E402
from gravixd.core import decode  # noqa: E402


def test_every_stage_is_measured_on_both_streams() -> None:
    for stream in ("facts", "events"):
        stages = bench_decode_json.measure(stream, 40, 0.01, 1, "gravixd.core.decode", True)
        assert set(stages) == {
            "parse", "parse+columns", "columns", "decode_json", "decode_ndjson",
            "small (1-event requests, 64 a commit)", "json in slices", "ndjson in slices",
        } | ({"syslog-shaped ndjson"} if stream == "events" else set())  # fmt: skip
        # ("columns" is a difference of two timings: it may come out as anything here.)
        assert all(v["cpu_us_per_event"] > 0 for k, v in stages.items() if k != "columns")


def test_the_bench_events_are_valid_events() -> None:
    for events in (bench_decode_json.make_events(50), bench_decode_json.make_syslog_events(50)):
        body = b"\n".join(msgspec.json.encode(e) for e in events)
        batch = decode.as_record_batch("events", decode.decode_ndjson("events", body, 1))
        assert batch.num_rows == 50
