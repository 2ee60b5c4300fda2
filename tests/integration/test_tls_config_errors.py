"""TLS misconfigurations: exit 2 with one line naming the setting, never a traceback, never
a passphrase prompt (an encrypted key under `docker run -t` used to block at "Enter PEM
pass phrase"; without a tty, each case below used to end in a Python traceback)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_pair(directory: Path, name: str, passphrase: bytes | None = None) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    return cert_path, key_path


def serve_args(tmp_path: Path, cert: Path, key: Path) -> list[str]:
    return [
        sys.executable, "-m", "gravixd", "serve",
        "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--tcp-listen", "",
        "--spool-dir", str(tmp_path / "spool"), "--store-url", f"file://{tmp_path / 'store'}",
        "--tls-cert-file", str(cert), "--tls-key-file", str(key),
    ]  # fmt: skip


def cases(tmp_path: Path) -> dict[str, tuple[Path, Path, str]]:
    """name -> (cert, key, the setting the error must name)."""
    cert, key = write_pair(tmp_path, "a")
    other_cert, other_key = write_pair(tmp_path, "b")
    _, encrypted_key = write_pair(tmp_path, "c", passphrase=b"secret")
    garbage = tmp_path / "garbage.crt"
    garbage.write_bytes(os.urandom(600))
    broken = tmp_path / "broken.crt"
    broken.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    return {
        "mismatched key": (cert, other_key, "tls_key_file"),
        "missing key": (cert, tmp_path / "absent.key", "tls_key_file"),
        "garbage certificate": (garbage, key, "tls_cert_file"),
        "broken PEM certificate": (broken, key, "tls_cert_file"),
        "directory as certificate": (tmp_path, key, "tls_cert_file"),
        "directory as key": (cert, tmp_path, "tls_key_file"),
        "swapped": (key, cert, "tls_cert_file"),
        "encrypted key": (cert, encrypted_key, "tls_key_file"),
    }


CASES = [
    "mismatched key",
    "missing key",
    "garbage certificate",
    "broken PEM certificate",
    "directory as certificate",
    "directory as key",
    "swapped",
    "encrypted key",
]


def assert_one_clear_line(output: str, setting: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output and "pass phrase" not in output.lower(), output
    assert lines[0].startswith("gravixd: configuration error: "), output
    assert setting in lines[0], output


@pytest.mark.parametrize("case", CASES)
def test_tls_misconfiguration_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    cert, key, setting = cases(tmp_path)[case]
    result = subprocess.run(
        serve_args(tmp_path, cert, key),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert_one_clear_line(result.stderr + result.stdout, setting)
    assert str(cert if setting == "tls_cert_file" else key) in result.stderr
    assert not (tmp_path / "spool").exists(), "the spool was touched"


def test_an_encrypted_key_never_prompts_on_a_tty(tmp_path: Path) -> None:
    """`docker run -t`: stdin, stdout and stderr are a terminal, where OpenSSL would ask."""
    cert, key, setting = cases(tmp_path)["encrypted key"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: gravixd on the terminal
        os.execv(sys.executable, serve_args(tmp_path, cert, key))
    output = b""
    deadline = time.monotonic() + 60
    status = None
    while status is None and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            with contextlib.suppress(OSError):  # the terminal closed: the child exited
                output += os.read(fd, 4096)
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail(f"gravixd still running (waiting for a passphrase?): {output!r}")
    assert os.waitstatus_to_exitcode(status) == 2, output
    assert_one_clear_line(output.decode(errors="replace"), setting)
