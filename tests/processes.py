"""What the tests' own servers (SeaweedFS, PostgreSQL, Trino) share: stopping one by the PID
the test started (never by name), and the end of its log for an error message."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


def stop_process(
    process: subprocess.Popen[bytes] | None,
    timeout_seconds: float,
    first_signal: int = signal.SIGTERM,
) -> None:
    """Stop `process` (if still running): `first_signal`, then SIGKILL after the timeout."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(first_signal)
    try:
        process.wait(timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_seconds)


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` of a server's log, or a note that there is none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
