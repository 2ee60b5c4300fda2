"""systemd/gravixd.service and the instance template gravixd@.service as systemd itself
reads them (systemd-analyze)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "gravixd.service"
TEMPLATE = ROOT / "systemd" / "gravixd@.service"
# What each unit file is verified as: the template as an instance (its name, the metrics port).
UNITS = {"gravixd.service": UNIT, "gravixd@9108.service": TEMPLATE}
INSTALLED_EXEC = "/usr/local/bin/gravixd"
# systemd's own scale: 0 is sealed shut, 10 is wide open; "OK" ends at 4.9, we want far less.
MAX_EXPOSURE = 2.0


def setup_module() -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze missing: run scripts/install-tools"


def _service_section(unit: Path = UNIT, instance: str = "") -> dict[str, list[str]]:
    """[Service] keys to all their values, in order (systemd allows repeated keys); `%i`
    becomes `instance`."""
    section, keys = "", {}  # type: ignore[var-annotated]
    for raw in unit.read_text().replace("%i", instance).splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


@pytest.fixture(params=list(UNITS))
def unit_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """The unit with ExecStart pointing at an executable that exists here, since verify
    rightly complains about a missing binary and gravixd is not installed system-wide.
    The template is written under an instance's name, as systemd loads it."""
    exe = tmp_path / "gravixd"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = UNITS[request.param].read_text()
    assert INSTALLED_EXEC in text
    unit = tmp_path / request.param
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


@pytest.mark.parametrize("unit", UNITS.values(), ids=list(UNITS))
def test_unit_promises_what_the_daemon_keeps(unit: Path) -> None:
    service = {key: values[-1] for key, values in _service_section(unit, "9108").items()}
    assert service["Type"] == "notify"
    assert service["ExecReload"].endswith("-HUP $MAINPID")
    assert service["DynamicUser"] == "yes"
    assert service["StateDirectory"] == ("gravixd" if unit == UNIT else "gravixd/9108")
    # systemd must wait longer than the drain deadline (drain_timeout_seconds, 20 s).
    assert int(service["TimeoutStopSec"].removesuffix("s")) > 20
    for key in ("ProtectSystem", "NoNewPrivileges", "PrivateTmp", "RestrictAddressFamilies"):
        assert key in service
    assert "@system-service" in _service_section(unit)["SystemCallFilter"]


def _instance_env(instance: str) -> dict[str, str]:
    env = {}
    for value in _service_section(TEMPLATE, instance)["Environment"]:
        key, _, setting = value.partition("=")
        env[key] = setting.replace("%S", "/var/lib")
    return env


def test_instances_share_the_ingest_address_and_nothing_else() -> None:
    """Two instances: one address (reuse_port), their own spool, store and metrics port;
    one user, since SO_REUSEPORT shares a port only between sockets of the same user."""
    from gravixd.config import load

    first, second = (load({}, _instance_env(i)).config for i in ("9108", "9109"))
    assert first.reuse_port and second.reuse_port
    assert first.http_listen == second.http_listen and first.tcp_listen == second.tcp_listen
    assert (first.metrics_listen, second.metrics_listen) == ("127.0.0.1:9108", "127.0.0.1:9109")
    assert first.spool_dir == "/var/lib/gravixd/9108/spool" != second.spool_dir
    assert first.store_url != second.store_url
    service = {key: values[-1] for key, values in _service_section(TEMPLATE).items()}
    assert service["User"] == "gravixd"
    assert _service_section(TEMPLATE, "9108")["EnvironmentFile"] == [
        "-/etc/gravixd/gravixd.env",
        "-/etc/gravixd/9108.env",
    ]


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
