"""Starting the real daemon when something is in the way: a second daemon on the same spool,
a port already taken, a pathological config, a bad store URL. Each one stops the daemon
with one line that names the setting, before the spool is touched, never a traceback; the
daemon already running is not disturbed and keeps every event it acknowledged."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from daemon import Daemon, column, ndjson, read_store

_RUN_TIMEOUT_SECONDS = 60


def run_to_exit(daemon: Daemon) -> subprocess.CompletedProcess[str]:
    """Run `daemon`'s command to its exit (for daemons that must refuse to start)."""
    return subprocess.run(
        daemon.command(),
        capture_output=True,
        text=True,
        env=daemon.env,
        cwd=daemon.workdir,
        timeout=_RUN_TIMEOUT_SECONDS,
    )


def error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """What the refusing daemon said at level error (JSON log lines or plain text)."""
    lines = []
    for line in (done.stderr + done.stdout).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        if entry.get("level") in ("error", "critical"):
            lines.append(entry["msg"])
    return lines


def spool_areas(spool: Path) -> dict[str, int]:
    """Every file under the spool and its size."""
    return {str(p.relative_to(spool)): p.stat().st_size for p in spool.rglob("*") if p.is_file()}


def facts(start: int, count: int) -> bytes:
    return ndjson({"service": "lock", "trace_id": f"t{i:05d}"} for i in range(start, start + count))


def test_a_second_daemon_on_the_same_spool_refuses_and_the_first_keeps_every_event(
    tmp_path: Path,
) -> None:
    first = Daemon(tmp_path / "first", "--segment-max-age-seconds", "3600")
    with first:
        for batch in range(4):  # 200 acknowledged events, in the open segment
            status, body, _ = first.post("/v1/facts", facts(batch * 50, 50), "application/x-ndjson")
            assert (status, body) == (202, {"accepted": 50})
        before = spool_areas(first.spool_dir)

        second = Daemon(tmp_path / "second", "--spool-dir", str(first.spool_dir))
        done = run_to_exit(second)
        assert done.returncode == 1, done.stderr
        assert "Traceback" not in done.stderr + done.stdout
        [line] = error_lines(done)
        assert str(first.spool_dir) in line and f"pid {first.proc.pid}" in line, line
        # The second daemon recovered nothing: the first one's open segment is untouched.
        assert spool_areas(first.spool_dir) == before

        for batch in range(4, 8):
            status, body, _ = first.post("/v1/facts", facts(batch * 50, 50), "application/x-ndjson")
            assert (status, body) == (202, {"accepted": 50})
    assert first.proc.returncode == 0
    stored = column(read_store(first.store_dir, "facts"), "trace_id")
    assert sorted(stored) == [f"t{i:05d}" for i in range(400)]


def test_the_lock_is_released_at_exit_and_after_a_kill(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    daemon.start()
    daemon.kill()  # the kernel drops a flock with its process: no stale lock
    with daemon:
        assert daemon.post("/v1/facts", b'{"service":"again"}')[0] == 202
    with daemon:
        assert daemon.post("/v1/facts", b'{"service":"and again"}')[0] == 202


def _busy_port() -> socket.socket:
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    return blocker


@pytest.mark.parametrize(
    "setting", ["http_listen", "tcp_listen", "metrics_listen", "tcp_listeners[0].listen"]
)
def test_a_busy_port_is_one_line_naming_the_setting_before_the_spool_is_touched(
    tmp_path: Path, setting: str
) -> None:
    with _busy_port() as blocker:
        address = f"127.0.0.1:{blocker.getsockname()[1]}"
        if setting == "tcp_listeners[0].listen":
            config = tmp_path / "gravixd.toml"
            config.write_text(f'[[tcp_listeners]]\nlisten = "{address}"\nstream = "events"\n')
            daemon = Daemon(tmp_path, f"--config={config}")
        else:
            daemon = Daemon(tmp_path, "--" + setting.replace("_", "-"), address)
        done = run_to_exit(daemon)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert error_lines(done) == [f"gravixd cannot start: {setting} {address}: address in use"]
    # Only the lock: no segment area was created, nothing recovered.
    assert [p.name for p in daemon.spool_dir.iterdir()] == ["gravixd.lock"]


def test_a_pathologically_nested_config_is_a_one_line_config_error(tmp_path: Path) -> None:
    config = tmp_path / "gravixd.toml"
    config.write_text("tcp_listeners = " + "[" * 3000 + "]" * 3000 + "\n")
    done = run_to_exit(Daemon(tmp_path, f"--config={config}"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("gravixd: configuration error: Invalid TOML in file")
    assert "nest" in line and str(config) in line


def test_a_bad_s3_prefix_is_a_config_error_naming_store_url(tmp_path: Path) -> None:
    done = run_to_exit(Daemon(tmp_path, store_url="s3://bucket/../x"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("gravixd: configuration error:") and "`store_url`" in line, line
    assert "s3://bucket/../x" in line


def test_every_busy_port_is_reported_in_one_start(tmp_path: Path) -> None:
    """Before: one clash per start, so three clashes took three restarts to find."""
    with _busy_port() as http, _busy_port() as tcp, _busy_port() as metrics:
        addresses = {
            "metrics_listen": f"127.0.0.1:{metrics.getsockname()[1]}",
            "http_listen": f"127.0.0.1:{http.getsockname()[1]}",
            "tcp_listen": f"127.0.0.1:{tcp.getsockname()[1]}",
        }
        flags = [x for key, a in addresses.items() for x in ("--" + key.replace("_", "-"), a)]
        done = run_to_exit(Daemon(tmp_path, *flags))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert error_lines(done) == [
        f"gravixd cannot start: {key} {address}: address in use"
        for key, address in addresses.items()
    ]
