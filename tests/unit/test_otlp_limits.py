"""OTLP protobuf record limits, on the C walker and on the Python mapping alike: more than
`max_records` spans or log records is a TooManyRecords (413) found while counting, before
the records cost memory; more than the working memory has room for is the retryable kind
(503). The pure path counts the wire's records before upb builds a single object."""

from __future__ import annotations

from typing import Any

import pytest

from gravixd import native
from gravixd.core import otlp
from gravixd.errors import DecodeError

PROTOBUF = "application/x-protobuf"
WALKERS = [
    pytest.param(None, id="python"),
    pytest.param(
        native.decode_otlp_protobuf if native.AVAILABLE else None,
        id="c",
        marks=pytest.mark.skipif(not native.AVAILABLE, reason="the C extension is not built"),
    ),
]


def _ld(field: int, payload: bytes) -> bytes:
    out, n = bytearray([field << 3 | 2]), len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def empty_records(n: int, before: bytes = b"") -> bytes:
    """An ExportLogsServiceRequest of n empty LogRecords (`before`: fields ahead of them)."""
    return before + _ld(1, _ld(2, b"\x12\x00" * n))


def _decode(walker: Any, body: bytes, **limits: Any) -> otlp.OtlpBatch:
    return otlp.decode_export(otlp.LOGS, PROTOBUF, body, 7, walker=walker, **limits)


@pytest.mark.parametrize("walker", WALKERS)
def test_records_up_to_the_limit_are_decoded(walker: Any) -> None:
    result = _decode(walker, empty_records(1000), max_records=1000)
    assert result.batch.num_rows == 1000
    assert set(result.batch.column("kind").to_pylist()) == {"log"}


@pytest.mark.parametrize("walker", WALKERS)
def test_one_record_past_the_limit_is_refused(walker: Any) -> None:
    with pytest.raises(otlp.TooManyRecords) as caught:
        _decode(walker, empty_records(1001), max_records=1000)
    assert not caught.value.retryable
    assert caught.value.reason == "too_many_records"
    assert "Expected at most 1000 log records in one " in caught.value.message
    assert "- at byte " in caught.value.message


@pytest.mark.parametrize("walker", WALKERS)
def test_records_past_the_working_memory_are_retryable(walker: Any) -> None:
    with pytest.raises(otlp.TooManyRecords) as caught:
        _decode(walker, empty_records(5000), max_records=10_000, working_bytes=100_000)
    assert caught.value.retryable
    assert "max_in_flight_bytes" in caught.value.message and "retry later" in caught.value.message


def test_the_python_count_sees_records_behind_unknown_fields_and_groups() -> None:
    # field 5 as a group holding a length-delimited field 1, then field 6 varint: skipped.
    noise = b"\x2b" + _ld(1, b"xx") + b"\x2c" + b"\x30\x01"
    with pytest.raises(otlp.TooManyRecords):
        otlp.check_record_count(otlp.LOGS, empty_records(600, before=noise), 500)
    otlp.check_record_count(otlp.LOGS, empty_records(500, before=noise), 500)


def test_a_body_too_short_to_exceed_the_limit_is_not_walked() -> None:
    # 2 bytes a record at least: 100 bytes cannot hold 60 records, garbage or not.
    otlp.check_record_count(otlp.LOGS, b"\x0a" + b"\xff" * 99, 60)


@pytest.mark.skipif(not native.AVAILABLE, reason="the C extension is not built")
def test_a_body_c_cannot_parse_is_judged_by_upb_with_cs_offset() -> None:
    body = empty_records(3)[:-1]  # cut short: ResourceLogs' length (byte 1) runs past the end
    assert isinstance(native.decode_otlp_protobuf(otlp.LOGS, body, 7, 10), otlp.Fallback)
    with pytest.raises(DecodeError) as caught:
        _decode(native.decode_otlp_protobuf, body)
    assert caught.value.reason == "invalid_protobuf"
    assert caught.value.message.endswith("- at byte 1")
