"""systemd/gravixd.service as systemd itself reads it (systemd-analyze)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "gravixd.service"
INSTALLED_EXEC = "/usr/local/bin/gravixd"
# systemd's own scale: 0 is sealed shut, 10 is wide open; "OK" ends at 4.9, we want far less.
MAX_EXPOSURE = 2.0


def setup_module() -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze missing: run scripts/install-tools"


def _service_section() -> dict[str, list[str]]:
    """[Service] keys to all their values, in order (systemd allows repeated keys)."""
    section, keys = "", {}  # type: ignore[var-annotated]
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


@pytest.fixture
def unit_file(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here, since verify
    rightly complains about a missing binary and gravixd is not installed system-wide."""
    exe = tmp_path / "gravixd"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = UNIT.read_text()
    assert INSTALLED_EXEC in text
    unit = tmp_path / "gravixd.service"
    unit.write_text(text.replace(INSTALLED_EXEC, str(exe)))
    return unit


def test_verify_has_no_warnings(unit_file: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "" and done.stdout.strip() == ""


def test_security_exposure_is_low(unit_file: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout


def test_unit_promises_what_the_daemon_keeps() -> None:
    service = {key: values[-1] for key, values in _service_section().items()}
    assert service["Type"] == "notify"
    assert service["ExecReload"].endswith("-HUP $MAINPID")
    assert service["DynamicUser"] == "yes"
    assert service["StateDirectory"] == "gravixd"
    # systemd must wait longer than the drain deadline (drain_timeout_seconds, 20 s).
    assert int(service["TimeoutStopSec"].removesuffix("s")) > 20
    for key in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp", "RestrictAddressFamilies"):
        assert key in service
    assert "@system-service" in _service_section()["SystemCallFilter"]


def test_environment_settings_are_valid_for_gravixd(tmp_path: Path) -> None:
    """The unit's Environment= lines and every example in gravixd.env, uncommented, are
    keys gravixd's config accepts (it rejects unknown GRAVIXD_* names)."""
    from gravixd.config import load

    env = {}
    for value in _service_section()["Environment"]:
        key, _, setting = value.partition("=")
        env[key] = setting.replace("%S", "/var/lib")
    for raw in (ROOT / "systemd" / "gravixd.env").read_text().splitlines():
        line = raw.lstrip("#")
        if line.startswith("GRAVIXD_") and "=" in line and " " not in line:
            key, _, setting = line.partition("=")
            env[key] = setting
    env.pop("GRAVIXD_CONFIG")  # an example path, not a file here
    loaded = load({}, env)
    assert loaded.config.spool_dir == "/var/lib/gravixd/spool"
    assert loaded.sources["drain_timeout_seconds"] == "env GRAVIXD_DRAIN_TIMEOUT_SECONDS"
