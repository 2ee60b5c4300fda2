"""What a result was measured on: the machine, the software versions and how busy the box was.

A figure without its machine is not a result; a figure from a busy shared box is noise, so
the load average at the start goes along with every result file.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
_LIBRARIES = (
    "trio",
    "h11",
    "msgspec",
    "protobuf",
    "pyarrow",
    "prometheus-client",
    "cffi",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "matplotlib",
)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _tool_version(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0].strip() if text else None


def _git_commit() -> str | None:
    return _tool_version(["git", "-C", str(_REPO), "rev-parse", "--short", "HEAD"])


def protobuf_paths() -> dict[str, Any]:
    """Which protobuf implementation the package uses, and whether gravixd's C decoder is built."""
    out: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        from google.protobuf.internal import api_implementation

        out["protobuf_implementation"] = api_implementation.Type()
    try:
        from gravixd import native  # noqa: F401 - only asked whether it imports

        available = getattr(native, "AVAILABLE", getattr(native, "available", True))
        out["gravixd_native"] = bool(available)
    except Exception as exc:  # not built, or not written yet
        out["gravixd_native"] = False
        out["gravixd_native_error"] = f"{type(exc).__name__}: {exc}"[:200]
    return out


def describe() -> dict[str, Any]:
    """The machine and software a benchmark ran on."""
    versions = {}
    for name in _LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": versions,
        "tools": {
            "wrk": _tool_version(["wrk", "-v"]),
            "nginx": _tool_version(["nginx", "-v"]),
        },
        "loadavg_at_start": list(os.getloadavg()),
        "gravixd_commit": _git_commit(),
        **protobuf_paths(),
    }
