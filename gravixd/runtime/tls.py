"""The HTTPS server context, from `tls_cert_file` and `tls_key_file`, or one clear error.

Every way those two files can be wrong (missing, a directory, not PEM, swapped, a key of
another certificate, an encrypted key) is a ConfigError of one line that names the setting
and the path: exit 2, never a traceback. It must never prompt: OpenSSL asks for a passphrase
on the terminal when a key is encrypted and no password callback is given, which would hang
a `docker run -t` or a systemd unit forever; the callback here refuses instead.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from ..errors import ConfigError

__all__ = ["server_context"]

_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"
_KEY_MARKER = b"PRIVATE KEY-----"


class _EncryptedKey(Exception):
    """OpenSSL asked for a passphrase: the key is encrypted."""


def _refuse_passphrase() -> bytes:
    raise _EncryptedKey


def _read(setting: str, path: str) -> bytes:
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{setting} {path}: Expected a PEM file, got a directory")
    try:
        return target.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{setting} {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: cannot read it: {exc.strerror or exc}") from None


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """An SSLContext for the server side, with the certificate chain and key loaded.

    Raises:
        ConfigError: one line naming `tls_cert_file` or `tls_key_file` and what is wrong.
    """
    cert = _read("tls_cert_file", cert_file)
    key = _read("tls_key_file", key_file)
    if _CERT_MARKER not in cert:
        got = "a private key" if _KEY_MARKER in cert else "no PEM certificate"
        hint = (
            " (tls_cert_file and tls_key_file swapped?)"
            if _KEY_MARKER in cert and _CERT_MARKER in key
            else ""
        )
        raise ConfigError(
            f"tls_cert_file {cert_file}: Expected a PEM certificate ({_CERT_MARKER.decode()}),"
            f" got {got}{hint}"
        )
    if _KEY_MARKER not in key:
        got = "a certificate" if _CERT_MARKER in key else "no PEM private key"
        raise ConfigError(
            f"tls_key_file {key_file}: Expected a PEM private key (-----BEGIN PRIVATE KEY-----),"
            f" got {got}"
        )
    if b"ENCRYPTED" in key:
        raise _encrypted(key_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_passphrase)
    except _EncryptedKey:
        raise _encrypted(key_file) from None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            raise ConfigError(
                f"tls_key_file {key_file}: the key does not belong to the certificate in"
                f" tls_cert_file {cert_file}"
            ) from None
        if "PEM" in reason.upper() or "ASN1" in reason.upper() or "CERT" in reason.upper():
            raise ConfigError(
                f"tls_cert_file {cert_file} / tls_key_file {key_file}: OpenSSL cannot load them"
                f" ({reason})"
            ) from None
        raise ConfigError(
            f"tls_key_file {key_file}: OpenSSL cannot load it with tls_cert_file {cert_file}"
            f" ({reason})"
        ) from None
    return context


def _encrypted(key_file: str) -> ConfigError:
    return ConfigError(
        f"tls_key_file {key_file}: the key is encrypted (it asks for a passphrase, and"
        " gravixd never prompts); give it an unencrypted key, e.g."
        f" `openssl pkey -in {key_file} -out server.key` (keep it mode 0600)"
    )
