"""Bearer-token auth and TLS on the HTTP listener, with real clients against a real daemon.

Tokens come from `auth_tokens` and `auth_tokens_file` (several, for rotation); a missing or
wrong token gets 401 with `WWW-Authenticate`, and nothing of the request is stored. TLS uses
a certificate generated here, trusted by the client as its CA.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from daemon import Daemon, column, read_store

EVENT = b'{"service":"auth","trace_id":"%s"}'


def self_signed_cert(directory: Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{common_name}.crt", directory / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def post(
    conn: http.client.HTTPConnection, body: bytes, token: str | None = None, scheme: str = "Bearer"
) -> tuple[int, dict, dict]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    try:
        conn.request("POST", "/v1/facts", body, headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())
    finally:
        conn.close()


def test_tokens_from_config_and_file_each_work_others_get_401(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# rotated monthly\nfile-token-1\n\nfile-token-2\n")
    with Daemon(
        tmp_path, "--auth-tokens=flag-token-a,flag-token-b", f"--auth-tokens-file={tokens_file}"
    ) as d:
        accepted = []
        for n, token in enumerate(["flag-token-a", "flag-token-b", "file-token-1", "file-token-2"]):
            status, body, _ = post(d.connection(), EVENT % f"ok-{n}".encode(), token)
            assert (status, body) == (202, {"accepted": 1}), token
            accepted.append(f"ok-{n}")
        refusals = {
            "no header": None,
            "wrong token": "flag-token-c",
            "a prefix of a token": "flag-token",
            "right token, wrong scheme": ("flag-token-a", "Basic"),
            "empty token": "",
        }
        for what, token in refusals.items():
            scheme = "Bearer"
            if isinstance(token, tuple):
                token, scheme = token
            status, body, headers = post(d.connection(), EVENT % b"refused", token, scheme)
            assert status == 401, what
            assert body["reason"] == "unauthorized"
            assert body["error"].startswith("Expected Authorization: Bearer <token>")
            assert "flag-token" not in body["error"]  # never echoes a token
            assert headers["www-authenticate"].startswith("Bearer")
        assert d.metric("ingestion_requests_total", endpoint="/v1/facts", code="401") == len(
            refusals
        )
        assert d.metric(
            "ingestion_events_rejected_total", stream="facts", source="http", reason="unauthorized"
        ) == len(refusals)
    assert sorted(column(read_store(d.store_dir, "facts"), "trace_id")) == accepted


def test_no_tokens_configured_means_no_auth(tmp_path: Path) -> None:
    with Daemon(tmp_path) as d:
        assert post(d.connection(), EVENT % b"open")[0] == 202
        assert post(d.connection(), EVENT % b"open2", "anything")[0] == 202


def test_unreadable_tokens_file_is_a_start_error(tmp_path: Path) -> None:
    d = Daemon(tmp_path, f"--auth-tokens-file={tmp_path / 'missing'}")
    with pytest.raises(RuntimeError, match="auth_tokens_file"):
        d.start()


@pytest.mark.parametrize(
    "listen_args",
    [
        ["--tcp-listen", "0.0.0.0:0"],
        ["--tcp-listen", "", "--config", "{config}"],
    ],
)
def test_an_open_tcp_listener_beside_tokens_is_refused(
    tmp_path: Path, listen_args: list[str]
) -> None:
    """Raw TCP has no auth: with tokens, a TCP listener other hosts can reach is an error
    that names it, unless `tcp_allow_unauthenticated` says so on purpose. (The daemon
    refuses before it binds: nothing listens on 0.0.0.0 here.)"""
    config = tmp_path / "gravixd.toml"
    config.write_text('[[tcp_listeners]]\nlisten = "[::]:0"\nstream = "events"\n')
    args = [arg.format(config=config) for arg in listen_args]
    daemon = Daemon(tmp_path, *args, "--auth-tokens=tok")
    done = subprocess.run(daemon.command(), capture_output=True, text=True, env=daemon.env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    named = "tcp_listen" if "0.0.0.0:0" in args else "tcp_listeners[0].listen"
    assert f"`{named}`" in line and "tcp_allow_unauthenticated" in line, line
    # Loopback needs no opt-in.
    with Daemon(tmp_path, "--auth-tokens=tok") as d:
        assert d.tcp_ports


def tls_context(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


def test_tls_with_a_real_client_and_auth(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    other_ca, _ = self_signed_cert(tmp_path, "someone-else")
    with Daemon(
        tmp_path, f"--tls-cert-file={cert}", f"--tls-key-file={key}", "--auth-tokens=tls-token"
    ) as d:
        for host in ("localhost", "127.0.0.1"):
            conn = http.client.HTTPSConnection(
                host, d.http_port, timeout=10, context=tls_context(cert)
            )
            status, body, _ = post(conn, EVENT % f"tls-{host}".encode(), "tls-token")
            assert (status, body) == (202, {"accepted": 1})
            conn = http.client.HTTPSConnection(
                host, d.http_port, timeout=10, context=tls_context(cert)
            )
            assert post(conn, EVENT % b"no-token")[0] == 401

        # A client that does not trust the certificate refuses the handshake.
        conn = http.client.HTTPSConnection(
            "localhost", d.http_port, timeout=10, context=tls_context(other_ca)
        )
        with pytest.raises(ssl.SSLCertVerificationError):
            post(conn, EVENT % b"untrusted", "tls-token")

        # Plain HTTP to the TLS port gets no 202 (the handshake fails, the connection closes).
        with socket.create_connection(("127.0.0.1", d.http_port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/facts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 17\r\nAuthorization: Bearer tls-token\r\n\r\n"
                b'{"service":"pl"}\n'
            )
            reply = b""
            try:
                while chunk := sock.recv(4096):
                    reply += chunk
            except (ConnectionResetError, TimeoutError):
                pass
            assert b" 202 " not in reply

        # The daemon still serves TLS clients after the bad handshakes.
        conn = http.client.HTTPSConnection(
            "localhost", d.http_port, timeout=10, context=tls_context(cert)
        )
        assert post(conn, EVENT % b"after", "tls-token")[0] == 202
    stored = sorted(column(read_store(d.store_dir, "facts"), "trace_id"))
    assert stored == ["after", "tls-127.0.0.1", "tls-localhost"]
