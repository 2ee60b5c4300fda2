"""Partial acceptance through the real daemon (DESIGN.md section 2): with `invalid_events =
"skip"` or `?invalid=skip`, the valid events of a request are stored, the answer says which
were left out and why, and /metrics counts them; a request without a valid event is a 400."""

from __future__ import annotations

import json
from pathlib import Path

from daemon import Daemon, ndjson, read_store
from strategies import to_protobuf

REJECTED = "ingestion_events_rejected_total"


def test_skip_per_request_stores_the_valid_events_and_names_the_others(tmp_path: Path) -> None:
    mixed = [
        {"service": "a", "trace_id": "kept-0"},
        {"service": "a", "trace_id": "bad", "status_code": "x"},
        {"service": "a", "trace_id": "kept-2", "route": None},
        {"service": "a", "timestamp_unix_nano": 1_700_000_000_000},
    ]
    body = json.dumps(mixed).encode()
    with Daemon(tmp_path) as d:
        status, answer, _ = d.post("/v1/facts", body)
        assert (status, answer["reason"]) == (400, "validation")  # the default: all or nothing
        assert d.metric(REJECTED, stream="facts", source="http", reason="validation") == 1

        status, answer, _ = d.post("/v1/facts?invalid=skip", body)
        assert status == 202
        assert answer == {
            "accepted": 2,
            "rejected": 2,
            "errors": [
                {
                    "path": "$[1].status_code",
                    "message": "Expected `int`, got `str` - at `$[1].status_code`",
                    "reason": "validation",
                },
                {
                    "path": "$[3].timestamp_unix_nano",
                    "message": "Expected Unix time in nanoseconds (>= 10^17, after 1973-03-03) "
                    "or 0, got `1700000000000`, which looks like milliseconds (times 10^6 is "
                    "nanoseconds) - at `$[3].timestamp_unix_nano`",
                    "reason": "validation",
                },
            ],
        }
        assert d.metric(REJECTED, stream="facts", source="http", reason="validation") == 3

        status, answer, _ = d.post("/v1/facts?invalid=skip", b'[{"service":""}]')
        assert (status, answer["reason"]) == (400, "validation")  # nothing valid
        status, answer, _ = d.post("/v1/facts?invalid=maybe", body)
        assert (status, answer["reason"]) == (400, "bad_query")
        assert answer["error"] == "Expected invalid=skip or invalid=reject, got 'invalid=maybe'"
        assert d.stop() == 0
    stored = read_store(d.store_dir, "facts").column("trace_id").to_pylist()
    assert sorted(stored) == ["kept-0", "kept-2"]


def test_skip_as_configured_for_ndjson_and_protobuf(tmp_path: Path) -> None:
    lines = ndjson([{"service": "e", "trace_id": "n-0"}, {"service": "e", "severity": "loud"}])
    lines += b"{not json}\n" + ndjson([{"service": "e", "trace_id": "n-3"}])
    protobuf = to_protobuf(
        "events", [{"service": "e", "trace_id": "p-0"}, {"service": "", "trace_id": "p-1"}]
    )
    with Daemon(tmp_path, "--invalid-events", "skip") as d:
        status, answer, _ = d.post("/v1/events", lines, "application/x-ndjson")
        assert status == 202
        assert (answer["accepted"], answer["rejected"]) == (2, 2)
        assert [(e["line"], e["path"], e["reason"]) for e in answer["errors"]] == [
            (2, "$.severity", "validation"),
            (3, "$", "invalid_json"),
        ]
        status, answer, _ = d.post("/v1/events", protobuf, "application/x-protobuf")
        assert status == 202
        assert (answer["accepted"], answer["rejected"]) == (1, 1)
        assert answer["errors"][0]["path"] == "$.events[1].service"
        # One request may still ask for all or nothing.
        status, _, _ = d.post("/v1/events?invalid=reject", lines, "application/x-ndjson")
        assert status == 400
        # Per event left out, and one for the rejected request (its first error's reason).
        assert d.metric(REJECTED, stream="events", source="http", reason="invalid_json") == 1
        assert d.metric(REJECTED, stream="events", source="http", reason="validation") == 3
        assert d.stop() == 0
    stored = read_store(d.store_dir, "events").column("trace_id").to_pylist()
    assert sorted(stored) == ["n-0", "n-3", "p-0"]


def test_a_big_body_decoded_in_slices_names_the_bad_event_by_its_place_in_the_body(
    tmp_path: Path,
) -> None:
    """From 512 KiB on a JSON or NDJSON body is decoded in slices of 2048 events; an error in
    a later slice still names the event's index (or line) in the whole body, all-or-nothing
    still rejects the body, and skip still keeps the rest."""
    items = [{"service": "big", "trace_id": f"t-{i:05}", "route": "/x" * 20} for i in range(9000)]
    items[6001]["status_code"] = 1000  # msgspec's check, in the third slice
    items[7002]["timestamp"] = "yesterday"  # _normalize's, in the fourth
    as_json = json.dumps(items).encode()
    as_ndjson = b"\n" + ndjson(items)  # a blank first line: line numbers are not indices + 1
    assert len(as_json) > 512 * 1024 and len(as_ndjson) > 512 * 1024
    with Daemon(tmp_path) as d:
        status, answer, _ = d.post("/v1/facts", as_json)
        assert (status, answer["reason"]) == (400, "validation")
        assert answer["error"] == "Expected `int` <= 999 - at `$[6001].status_code`"
        status, answer, _ = d.post("/v1/facts", as_ndjson, content_type="application/x-ndjson")
        assert (status, answer["reason"]) == (400, "validation")
        assert answer["error"] == "line 6003: Expected `int` <= 999 - at `$.status_code`"

        status, answer, _ = d.post("/v1/facts?invalid=skip", as_json)
        assert status == 202
        assert (answer["accepted"], answer["rejected"]) == (8998, 2)
        assert [e["path"] for e in answer["errors"]] == ["$[6001].status_code", "$[7002].timestamp"]
        assert d.stop() == 0
    stored = read_store(d.store_dir, "facts").column("trace_id").to_pylist()
    assert len(stored) == 8998 and "t-06001" not in stored and "t-07002" not in stored


def test_error_lists_are_bounded_excerpts(tmp_path: Path) -> None:
    """Issue 19: 25 bad 300 KB values made a 6 MB 202 body. Each echoed value is now an
    excerpt with its length, the list the first 20 errors, `rejected` counting them all."""
    huge = "9" * 300_000
    events = [{"service": "a", "trace_id": "good"}]
    events += [{"service": "a", "bytes_in": huge, "trace_id": f"bad-{i}"} for i in range(25)]
    body = json.dumps(events).encode()
    with Daemon(tmp_path) as d:
        connection = d.connection()
        try:
            connection.request(
                "POST", "/v1/facts?invalid=skip", body, {"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        assert response.status == 202
        answer = json.loads(raw)
        assert (answer["accepted"], answer["rejected"]) == (1, 25)
        assert len(answer["errors"]) == 20  # the first 20; `rejected` counts the rest
        assert len(raw) < 20 * 400, len(raw)  # before: 6 MB
        assert answer["errors"][0]["message"] == (
            "Expected `int` >= 0 and <= 9223372036854775807, got "
            f"`{'9' * 64}...` (300000 characters) - at `$[1].bytes_in`"
        )
        status, answer, _ = d.post("/v1/facts", json.dumps(events[1:2]).encode())
        assert status == 400 and len(answer["error"]) < 400  # the all-or-nothing 400 too
