"""sd_notify as systemd receives it: a datagram socket we bind, as systemd binds its own."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gravixd.runtime.sdnotify import SdNotifier


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def test_absent_socket_means_no_notifier() -> None:
    assert SdNotifier.from_environ({}) is None
    assert SdNotifier.from_environ({"NOTIFY_SOCKET": ""}) is None


def test_messages_reach_the_socket(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    notifier = SdNotifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier is not None
    with notifier:
        assert notifier.ready()
        assert notifier.status("serving; spool 0 B\nsecond line")
        assert notifier.watchdog()
        assert notifier.stopping()
        got = [sock.recv(4096).decode() for _ in range(4)]
    assert got == ["READY=1", "STATUS=serving; spool 0 B second line", "WATCHDOG=1", "STOPPING=1"]


def test_reloading_carries_monotonic_usec(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    before_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    with SdNotifier(path) as notifier:
        assert notifier.reloading()
    lines = sock.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC"
    assert before_usec <= int(value) <= before_usec + 5_000_000


def test_abstract_socket() -> None:
    name = f"gravixd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        with SdNotifier("@" + name) as notifier:
            assert notifier.ready()
        assert sock.recv(64) == b"READY=1"
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("env", "interval_seconds"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}, 10.0),
        ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_is_half_the_timeout(
    env: dict[str, str], interval_seconds: float | None
) -> None:
    notifier = SdNotifier.from_environ({"NOTIFY_SOCKET": "/run/none", **env})
    assert notifier is not None
    with notifier:
        assert notifier.watchdog_interval_seconds() == interval_seconds


def test_a_missing_listener_is_not_fatal(tmp_path: Path) -> None:
    with SdNotifier(str(tmp_path / "gone")) as notifier:
        assert notifier.ready() is False


def test_a_relative_address_is_rejected() -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        SdNotifier("relative/path")
