"""SIGHUP reload: what can change live (tokens, limits, log level) is applied; an invalid new
configuration is rejected, logged as `reload_rejected`, and the running one is kept."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from daemon import Daemon, wait_for

EVENT = b'{"service":"reload"}'


def status_with(d: Daemon, token: str | None, body: bytes = EVENT) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return d.post("/v1/facts", body, headers=headers)[0]


def hup_and_wait(d: Daemon, event: str) -> dict:
    offset = d.log_path.stat().st_size
    d.signal(signal.SIGHUP)
    return wait_for(
        lambda: next((e for e in d.log_events(offset) if e.get("event") == event), None),
        timeout=10,
        what=f"the {event} log event",
    )


def test_sighup_rotates_tokens_from_the_file_and_keeps_old_config_on_error(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token\n")
    with Daemon(tmp_path, f"--auth-tokens-file={tokens}") as d:
        assert status_with(d, "old-token") == 202
        assert status_with(d, "new-token") == 401

        # Rotation: both tokens valid during the overlap, then only the new one.
        tokens.write_text("old-token\nnew-token\n")
        reloaded = hup_and_wait(d, "reloaded")
        assert reloaded["auth_tokens"] == 2
        assert status_with(d, "old-token") == 202 and status_with(d, "new-token") == 202
        tokens.write_text("new-token\n")
        hup_and_wait(d, "reloaded")
        assert status_with(d, "old-token") == 401 and status_with(d, "new-token") == 202

        # An invalid token line: rejected, named, and the running tokens are kept.
        tokens.write_text("new-token\nnot a token\n")
        rejected = hup_and_wait(d, "reload_rejected")
        assert "auth_tokens_file" in rejected["error"] and "line 2" in rejected["error"]
        assert rejected["level"] == "error"
        assert status_with(d, "new-token") == 202 and status_with(d, None) == 401

        # The file gone: rejected too, the daemon keeps serving with what it had.
        tokens.unlink()
        rejected = hup_and_wait(d, "reload_rejected")
        assert "auth_tokens_file" in rejected["error"]
        assert status_with(d, "new-token") == 202
        assert d.proc is not None and d.proc.poll() is None
    assert d.proc.returncode == 0


def test_sighup_applies_limits_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "gravixd.toml"
    config.write_text("max_body_bytes = 1048576\n")
    big = b'{"service":"reload","route":"' + b"r" * 5000 + b'"}'
    # The default segment format (no flag pins it), so that the file can ask to change it.
    with Daemon(tmp_path, f"--config={config}", default_segment_format=True) as d:
        assert status_with(d, None, big) == 202
        config.write_text('max_body_bytes = 4096\nlog_level = "warning"\n')
        reloaded = hup_and_wait(d, "reloaded")
        assert reloaded["ignored_until_restart"] == []
        assert status_with(d, None, big) == 413
        assert status_with(d, None, EVENT) == 202

        # A change that needs a restart is reported, not half-applied.
        config.write_text('max_body_bytes = 4096\nlog_level = "info"\nsegment_format = "arrow"\n')
        reloaded = hup_and_wait(d, "reloaded")
        assert reloaded["ignored_until_restart"] == ["segment_format"]

        # Invalid TOML, an unknown key, a bad value: each rejected, the limits stay.
        for text, named in [
            ("max_body_bytes = \n", "gravixd.toml"),
            ("max_body_bytes = 4096\nmax_bodybytes = 1\n", "max_bodybytes"),
            ('max_body_bytes = "lots"\n', "max_body_bytes"),
        ]:
            config.write_text(text)
            rejected = hup_and_wait(d, "reload_rejected")
            assert named in rejected["error"], rejected
            assert status_with(d, None, big) == 413
            assert status_with(d, None, EVENT) == 202
        time.sleep(0.1)
        assert d.proc is not None and d.proc.poll() is None


def test_a_pathologically_nested_config_on_sighup_is_rejected_not_fatal(tmp_path: Path) -> None:
    config = tmp_path / "gravixd.toml"
    config.write_text("max_body_bytes = 4096\n")
    with Daemon(tmp_path, f"--config={config}") as d:
        config.write_text("tcp_listeners = " + "[" * 3000 + "]" * 3000 + "\n")
        rejected = hup_and_wait(d, "reload_rejected")
        assert "nest" in rejected["error"] and "gravixd.toml" in rejected["error"], rejected
        assert d.proc is not None and d.proc.poll() is None
        assert status_with(d, None, EVENT) == 202
        big = b'{"service":"reload","route":"' + b"r" * 5000 + b'"}'
        assert status_with(d, None, big) == 413  # the running limits were kept
    assert d.proc.returncode == 0


def test_an_emptied_tokens_file_does_not_turn_auth_off(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("the-token\n")
    config = tmp_path / "gravixd.toml"
    config.write_text(f'auth_tokens_file = "{tokens}"\n')
    with Daemon(tmp_path, f"--config={config}") as d:
        assert status_with(d, None) == 401
        for emptied in ("", "# all tokens revoked\n\n"):
            tokens.write_text(emptied)
            rejected = hup_and_wait(d, "reload_rejected")
            assert 'auth = "none"' in rejected["error"], rejected
            assert status_with(d, None) == 401 and status_with(d, "the-token") == 202

        # Dropping the key from the config file is refused as well.
        config.write_text("")
        rejected = hup_and_wait(d, "reload_rejected")
        assert "no bearer token" in rejected["error"], rejected
        assert status_with(d, None) == 401

        # Turning auth off on purpose is a reload like any other.
        config.write_text('auth = "none"\n')
        reloaded = hup_and_wait(d, "reloaded")
        assert reloaded["auth_tokens"] == 0
        assert status_with(d, None) == 202


def test_rewritten_tls_files_are_reported_as_needing_a_restart(tmp_path: Path) -> None:
    from test_auth_tls import self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    with Daemon(tmp_path, f"--tls-cert-file={cert}", f"--tls-key-file={key}") as d:
        reloaded = hup_and_wait(d, "reloaded")
        assert reloaded["ignored_until_restart"] == []
        offset = d.log_path.stat().st_size
        self_signed_cert(tmp_path)  # a renewed certificate, written over the same files
        reloaded = hup_and_wait(d, "reloaded")
        assert reloaded["ignored_until_restart"] == ["tls_cert_file", "tls_key_file"]
        [warning] = [e for e in d.log_events(offset) if e["event"] == "tls_restart_needed"]
        assert warning["level"] == "warning" and "restart" in warning["msg"]
