"""What a supervisor hands each worker: its spool, its share of the instance's limits, and
the status lines it reports back."""

from __future__ import annotations

import os

import pytest

from gravixd.config import load
from gravixd.runtime.worker_link import (
    STATUS_MAX_BYTES,
    WorkerLink,
    decode_status,
    encode_status,
    resolve_workers,
    worker_share,
)


def test_each_worker_gets_its_spool_and_a_share_of_the_limits() -> None:
    config = load(
        {"spool_dir": "/var/spool", "rollup_interval_seconds": 60.0, "max_in_flight_requests": 5},
        {},
    ).config
    shares = [worker_share(config, i, 3) for i in range(3)]
    assert [s.spool_dir for s in shares] == [f"/var/spool/worker-{i}" for i in range(3)]
    # Together no more than the instance's bytes; counts round up so none gets zero.
    assert sum(s.max_spool_bytes for s in shares) <= config.max_spool_bytes
    assert sum(s.max_in_flight_bytes for s in shares) <= config.max_in_flight_bytes
    assert {s.max_in_flight_requests for s in shares} == {2}
    assert {s.max_connections for s in shares} == {-(-config.max_connections // 3)}
    # One rollup schedule per instance, not one per worker.
    assert [s.rollup_interval_seconds for s in shares] == [60.0, 0.0, 0.0]
    # Everything else is the instance's.
    assert {s.store_url for s in shares} == {config.store_url}


def test_workers_zero_is_one_per_cpu_this_process_may_use() -> None:
    assert resolve_workers(0) == len(os.sched_getaffinity(0))
    assert resolve_workers(3) == 3


@pytest.mark.parametrize(
    "reason", [None, "starting", "shedding load: spool is full (store slow or down?)", "a\nb"]
)
def test_status_lines_round_trip(reason: str | None) -> None:
    line = encode_status(reason)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_status(line) == (None if reason is None else reason.replace("\n", " "))


def test_a_status_line_is_bounded() -> None:
    assert len(encode_status("x" * 10_000)) == STATUS_MAX_BYTES


def test_the_link_survives_the_environment() -> None:
    link = WorkerLink(1, 2, [5], [[6, 7], [8]], 9, os.getpid())
    assert WorkerLink.from_environ({"_GRAVIXD_WORKER": link.to_env()}) == link
    assert WorkerLink.from_environ({}) is None
    # Its variable is not a configuration key, so the worker's config loads as the supervisor's.
    assert load({}, {"_GRAVIXD_WORKER": link.to_env()}).config == load({}, {}).config
