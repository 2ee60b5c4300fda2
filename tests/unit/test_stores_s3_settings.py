"""How the S3 driver resolves its settings: URL, config keys, `_FILE` secrets (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gravixd.errors import ConfigError
from gravixd.stores.s3 import parse_s3_url, resolve_settings


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://bucket", "bucket", ""),
        ("s3://bucket/", "bucket", ""),
        ("s3://bucket/prefix", "bucket", "prefix/"),
        ("s3://bucket/a/b/", "bucket", "a/b/"),
    ],
)
def test_url_gives_bucket_and_prefix(url: str, bucket: str, prefix: str) -> None:
    assert parse_s3_url(url) == (bucket, prefix)


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://b/p?x=1", "s3://b/../p"])
def test_malformed_urls_are_config_errors(url: str) -> None:
    with pytest.raises((ConfigError, ValueError), match="Expected"):
        parse_s3_url(url)


def test_config_keys_win_and_file_secrets_are_ignored_then(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("file-secret\n")
    env = {"AWS_ACCESS_KEY_ID": "env-id", "AWS_SECRET_ACCESS_KEY_FILE": str(tmp_path / "s")}
    s = resolve_settings(
        "s3://b/p", env, s3_access_key_id="cfg-id", s3_secret_access_key="cfg-secret"
    )
    assert (s.access_key_id, s.secret_access_key) == ("cfg-id", "cfg-secret")


def test_file_secrets_are_read_without_their_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("file-secret\n")
    (tmp_path / "t").write_text("token")
    env = {
        "AWS_ACCESS_KEY_ID": "env-id",
        "AWS_SECRET_ACCESS_KEY_FILE": str(tmp_path / "s"),
        "AWS_SESSION_TOKEN_FILE": str(tmp_path / "t"),
    }
    s = resolve_settings("s3://b", env)
    assert (s.access_key_id, s.secret_access_key, s.session_token) == (
        "env-id",
        "file-secret",
        "token",
    )


def test_without_file_forms_botocore_keeps_its_own_chain() -> None:
    s = resolve_settings("s3://b", {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "x"})
    assert s.access_key_id == ""  # left to botocore, which reads the same variables


@pytest.mark.parametrize(
    ("env", "options", "message"),
    [
        ({"AWS_SECRET_ACCESS_KEY": "a", "AWS_SECRET_ACCESS_KEY_FILE": "/x"}, {}, "got both"),
        ({"AWS_SECRET_ACCESS_KEY_FILE": "/nonexistent/secret"}, {}, "Could not read"),
        ({}, {"s3_access_key_id": "only-id"}, "got only s3_access_key_id"),
        ({}, {"s3_sse": "rot13"}, "s3_sse"),
        ({}, {"s3_sse_kms_key_id": "k"}, "s3_sse_kms_key_id"),
        ({}, {"s3_path_style": "yes"}, "s3_path_style"),
    ],
)
def test_bad_settings_name_the_key(env: dict[str, str], options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_settings("s3://b", env, **options)


def test_repr_never_shows_secrets() -> None:
    s = resolve_settings("s3://b", {}, s3_access_key_id="id", s3_secret_access_key="hunter2")
    assert "hunter2" not in repr(s)
