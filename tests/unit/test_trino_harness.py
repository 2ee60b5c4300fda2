"""The Trino harness picks a JDK that runs Trino 476 (Java >= 24) among the installed ones,
and says in one line what it found when none does (scripts/install-trino prints it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from trino_server import MIN_JAVA, find_java


def fake_jdk(root: Path, name: str, version: str) -> Path:
    home = root / name
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    # `java -version` writes to stderr, as the real one does.
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2025-09-16' >&2\n")
    java.chmod(0o755)
    return home


def test_the_newest_jdk_of_24_or_more_is_chosen(tmp_path: Path) -> None:
    fake_jdk(tmp_path, "java-17-openjdk-amd64", "17.0.13")
    fake_jdk(tmp_path, "temurin-24-jdk-amd64", "24.0.2")
    newest = fake_jdk(tmp_path, "temurin-25-jdk-amd64", "25.0.1")
    assert find_java(tmp_path) == newest


def test_no_jdk_new_enough_is_one_clear_error(tmp_path: Path) -> None:
    fake_jdk(tmp_path, "java-17-openjdk-amd64", "17.0.13")
    with pytest.raises(RuntimeError) as caught:
        find_java(tmp_path)
    message = str(caught.value)
    assert f"needs a JDK >= {MIN_JAVA} under {tmp_path}" in message
    assert "java-17-openjdk-amd64" in message  # what was found instead


@pytest.mark.trino
def test_the_script_form_prints_the_jdk_home() -> None:
    helper = Path(__file__).resolve().parents[1] / "trino_server.py"
    done = subprocess.run(
        [sys.executable, str(helper), "--find-java"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # On this machine a JDK >= 24 exists: its home is printed (the suite's Trino uses it).
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip(), "bin", "java").is_file()
