"""gravixd.config: precedence, spellings, validation messages, secrets, rendering."""

import argparse
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gravixd.config import (
    Config,
    LoadedConfig,
    TcpListener,
    add_arguments,
    load,
    parse_listen,
    read_auth_tokens,
    render,
)
from gravixd.errors import ConfigError

KiB, MiB, GiB = 1024, 1024**2, 1024**3
DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture
def toml(tmp_path: Path):
    """Writes a TOML file and returns its path as a string."""

    def write(text: str, name: str = "gravixd.toml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def parse_flags(*argv: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args(argv))


def load_error(flags: dict[str, Any], environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load(flags, environ)
    return str(info.value)


# --- defaults -------------------------------------------------------------------------

DEFAULTS = [
    ("http_listen", "127.0.0.1:8088"),
    ("tcp_listen", "127.0.0.1:5170"),
    ("metrics_listen", "127.0.0.1:9108"),
    ("spool_dir", "./gravixd-data/spool"),
    ("store_url", "file://./gravixd-data/store"),
    ("ack", "durable"),
    ("invalid_events", "reject"),
    ("max_body_bytes", 8 * MiB),
    ("segment_max_bytes", 64 * MiB),
    ("segment_max_events", 1_000_000),
    ("segment_max_age_seconds", 60.0),
    ("segment_format", "parquet"),
    ("segment_compression", "lz4"),
    ("max_spool_bytes", GiB),
    ("auth_tokens", []),
    ("auth_tokens_file", ""),
    ("auth", "auto"),
    ("tcp_allow_unauthenticated", False),
    ("reuse_port", False),
    ("tls_cert_file", ""),
    ("tls_key_file", ""),
    ("s3_endpoint_url", ""),
    ("s3_region", ""),
    ("s3_path_style", False),
    ("s3_access_key_id", ""),
    ("s3_secret_access_key", ""),
    ("s3_sse", ""),
    ("s3_sse_kms_key_id", ""),
    ("max_connections", 1024),
    ("max_in_flight_requests", 256),
    ("max_in_flight_bytes", 256 * MiB),
    ("max_header_bytes", 16 * KiB),
    ("request_timeout_seconds", 30.0),
    ("idle_timeout_seconds", 75.0),
    ("drain_timeout_seconds", 20.0),
    ("upload_concurrency", 2),
    ("upload_retry_initial_seconds", 0.5),
    ("upload_retry_max_seconds", 30.0),
    ("tcp_max_line_bytes", MiB),
    ("tcp_max_frame_bytes", 4 * MiB),
    ("tcp_listeners", []),
    ("rollup_interval_seconds", 0.0),
    ("rollup_target_file_bytes", 256 * MiB),
    ("iceberg_catalog_uri", ""),
    ("iceberg_catalog_name", "gravix"),
    ("iceberg_namespace", "gravix"),
    ("iceberg_commit", "daemon"),
    ("iceberg_commit_interval_seconds", 10.0),
    ("iceberg_catalog_token", ""),
    ("iceberg_catalog_warehouse", ""),
    ("iceberg_catalog_password", ""),
    ("iceberg_snapshot_retention_seconds", 7 * 86400.0),
    ("native", True),
    ("log_level", "info"),
    ("log_format", "json"),
]


def test_defaults_cover_every_key() -> None:
    assert {key for key, _ in DEFAULTS} == set(Config.__struct_fields__)


@pytest.mark.parametrize(("key", "default"), DEFAULTS)
def test_default(key: str, default: Any) -> None:
    loaded = load({}, {})
    assert getattr(loaded.config, key) == default
    assert loaded.sources[key] == "default"


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        load({}, {}).config.ack = "received"  # type: ignore[misc]


# --- precedence -----------------------------------------------------------------------

# key, file value (TOML), env value, flag argv, and the typed value each source gives.
PRECEDENCE = [
    ("max_body_bytes", "1024", "2KiB", ["--max-body-bytes", "3MB"], (1024, 2048, 3_000_000)),
    ("ack", '"received"', "durable", ["--ack", "received"], ("received", "durable", "received")),
    (
        "http_listen",
        '"127.0.0.1:1"',
        "127.0.0.1:2",
        ["--http-listen", ""],
        ("127.0.0.1:1", "127.0.0.1:2", ""),
    ),
    ("native", "false", "1", ["--no-native"], (False, True, False)),
    ("s3_path_style", "true", "false", ["--s3-path-style"], (True, False, True)),
    ("segment_max_age_seconds", "5", "2.5", ["--segment-max-age-seconds", "1e-3"], (5, 2.5, 1e-3)),
    ("auth_tokens", '["f"]', "e1,e2", ["--auth-tokens", "x"], (["f"], ["e1", "e2"], ["x"])),
]


@pytest.mark.parametrize(("key", "in_file", "in_env", "argv", "expected"), PRECEDENCE)
def test_each_source_beats_the_next(
    toml: Any, key: str, in_file: str, in_env: str, argv: list[str], expected: tuple[Any, ...]
) -> None:
    path = toml(f"{key} = {in_file}\n")
    env_name = "GRAVIXD_" + key.upper()
    flag = "--" + key.replace("_", "-")
    steps = [
        ({"GRAVIXD_CONFIG": path}, [], expected[0], f"file {path}"),
        ({"GRAVIXD_CONFIG": path, env_name: in_env}, [], expected[1], f"env {env_name}"),
        ({"GRAVIXD_CONFIG": path, env_name: in_env}, argv, expected[2], f"flag {flag}"),
    ]
    for environ, args, value, source in steps:
        loaded = load(parse_flags(*args), environ)
        assert getattr(loaded.config, key) == value
        assert loaded.sources[key] == source


def test_config_flag_beats_config_env(toml: Any) -> None:
    from_env = toml("ack = 'received'\n", "env.toml")
    from_flag = toml("segment_format = 'parquet'\n", "flag.toml")
    loaded = load(parse_flags("--config", from_flag), {"GRAVIXD_CONFIG": from_env})
    assert loaded.config.ack == "durable"
    assert loaded.config.segment_format == "parquet"
    assert loaded.config_file == from_flag


def test_unrelated_flags_are_ignored() -> None:
    loaded = load({"command": "serve", "verbose": True, "ack": "received"}, {})
    assert loaded.config.ack == "received"


def test_absent_flags_are_not_given() -> None:
    assert parse_flags() == {}
    assert parse_flags("--no-s3-path-style") == {"s3_path_style": False}


def test_tcp_listeners_has_no_flag() -> None:
    with pytest.raises(SystemExit):
        parse_flags("--tcp-listeners", "x")


def test_reload_sees_a_changed_file(toml: Any) -> None:
    path = toml("segment_max_events = 10\n")
    assert load({"config": path}, {}).config.segment_max_events == 10
    toml("segment_max_events = 20\n")
    assert load({"config": path}, {}).config.segment_max_events == 20


# --- TOML shape -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "segment_max_bytes = 1\nsegment_format = 'parquet'\n",
        "[segment]\nmax_bytes = 1\nformat = 'parquet'\n",
        "segment.max_bytes = 1\nsegment.format = 'parquet'\n",
        "[segment.max]\nbytes = 1\n[segment]\nformat = 'parquet'\n",
    ],
)
def test_nested_tables_flatten(toml: Any, text: str) -> None:
    config = load({"config": toml(text)}, {}).config
    assert (config.segment_max_bytes, config.segment_format) == (1, "parquet")


def test_nested_s3_table(toml: Any) -> None:
    path = toml("[s3]\nendpoint_url = 'http://127.0.0.1:8333'\npath_style = true\n")
    loaded = load({"config": path}, {})
    assert loaded.config.s3_endpoint_url == "http://127.0.0.1:8333"
    assert loaded.config.s3_path_style is True
    assert loaded.sources["s3_path_style"] == f"file {path}"


def test_same_key_twice_after_flattening(toml: Any) -> None:
    path = toml("segment_max_bytes = 1\n[segment]\nmax_bytes = 2\n")
    assert load_error({"config": path}, {}) == (
        f"Key `segment_max_bytes` is set twice in file {path}"
    )


def test_tcp_listeners(toml: Any) -> None:
    path = toml(
        """
[[tcp_listeners]]
listen = "127.0.0.1:5171"
stream = "events"
framing = "protobuf"
max_frame_bytes = "2MiB"

[[tcp_listeners]]
listen = "[::1]:0"
stream = "facts"
"""
    )
    assert load({"config": path}, {}).config.tcp_listeners == [
        TcpListener(
            listen="127.0.0.1:5171", stream="events", framing="protobuf", max_frame_bytes=2 * MiB
        ),
        TcpListener(listen="[::1]:0", stream="facts", framing="ndjson", max_frame_bytes=None),
    ]


# --- secrets from files ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["s3_secret_access_key", "s3_access_key_id", "spool_dir"])
def test_file_form_of_env(tmp_path: Path, key: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t/value\n")
    name = f"GRAVIXD_{key.upper()}_FILE"
    loaded = load({}, {name: str(secret)})
    assert getattr(loaded.config, key) == "s3cr3t/value"
    assert loaded.sources[key] == f"env {name}"


def test_file_form_strips_only_the_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("a b \r\n")
    assert load(
        {}, {"GRAVIXD_S3_SECRET_ACCESS_KEY_FILE": str(secret)}
    ).config.s3_secret_access_key == ("a b ")


def test_value_and_file_form_together_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    environ = {"GRAVIXD_S3_ACCESS_KEY_ID": "y", "GRAVIXD_S3_ACCESS_KEY_ID_FILE": str(secret)}
    message = load_error({}, environ)
    assert "GRAVIXD_S3_ACCESS_KEY_ID" in message and "GRAVIXD_S3_ACCESS_KEY_ID_FILE" in message


def test_unreadable_file_form_names_key_and_variable(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    message = load_error({}, {"GRAVIXD_S3_SECRET_ACCESS_KEY_FILE": str(missing)})
    assert message.startswith(
        "Cannot read `s3_secret_access_key` from env GRAVIXD_S3_SECRET_ACCESS_KEY_FILE"
    )
    assert str(missing) in message


def test_auth_tokens_file_env_is_the_key_not_a_file_form(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# ops team\nalpha\n\n  beta  \n# old: gamma\nalpha\n")
    loaded = load({}, {"GRAVIXD_AUTH_TOKENS_FILE": str(tokens), "GRAVIXD_AUTH_TOKENS": "zeta"})
    assert loaded.config.auth_tokens_file == str(tokens)
    assert loaded.config.auth_tokens == ["zeta"]
    assert read_auth_tokens(loaded.config) == ["zeta", "alpha", "beta"]


def test_auth_tokens_file_is_read_again(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("one\n")
    config = load({"auth_tokens_file": str(tokens)}, {}).config
    tokens.write_text("two\n")
    assert read_auth_tokens(config) == ["two"]


def test_bad_auth_tokens_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    assert missing in load_error({"auth_tokens_file": missing}, {})
    bad = tmp_path / "bad"
    bad.write_text("ok\nnot a token\n")
    message = load_error({"auth_tokens_file": str(bad)}, {})
    assert message.startswith(f"Invalid value for `auth_tokens_file` line 2 in {bad}")
    assert "not a token" not in message  # a near-miss token is still a secret


@pytest.mark.parametrize(
    ("raw", "tokens"),
    [
        ("a", ["a"]),
        ("a,b", ["a", "b"]),
        (" a , b ,,", ["a", "b"]),
        ("", []),
        ("dGVzdA==,x.y-z_~+/", ["dGVzdA==", "x.y-z_~+/"]),
    ],
)
def test_auth_tokens_list_from_env(raw: str, tokens: list[str]) -> None:
    assert load({}, {"GRAVIXD_AUTH_TOKENS": raw}).config.auth_tokens == tokens
    assert load(parse_flags("--auth-tokens", raw), {}).config.auth_tokens == tokens


# --- sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("10", 10),
        ("1B", 1),
        ("1KiB", 1024),
        ("1 KiB", 1024),
        ("1.5KiB", 1536),
        ("2KB", 2000),
        ("2kb", 2000),
        ("8MiB", 8 * MiB),
        ("8mib", 8 * MiB),
        ("64MB", 64_000_000),
        ("1GiB", GiB),
        ("1GB", 1_000_000_000),
        ("1TiB", 1024 * GiB),
        ("1TB", 10**12),
    ],
)
def test_size_suffixes(toml: Any, raw: str, size: int) -> None:
    assert load({}, {"GRAVIXD_MAX_BODY_BYTES": raw}).config.max_body_bytes == size
    path = toml(f'max_spool_bytes = "{raw}"\n')
    assert load({"config": path}, {}).config.max_spool_bytes == size


# --- invalid values -------------------------------------------------------------------

# (source, key, raw value, the message after "Invalid value for `key` from <source>: ")
INVALID = [
    ("env", "max_body_bytes", "abc", "Expected `int` >= 1 or a size such as `8MiB`, got `abc`"),
    ("env", "max_body_bytes", "0", "Expected `int` >= 1, got `0`"),
    ("env", "max_body_bytes", "-5", "Expected `int` >= 1, got `-5`"),
    ("env", "max_body_bytes", "0.5B", "Expected `int` >= 1 or a size such as `8MiB`, got `0.5B`"),
    ("env", "max_body_bytes", "8XB", "Expected `int` >= 1 or a size such as `8MiB`, got `8XB`"),
    ("flag", "segment_max_events", "1.5", "Expected `int` >= 1, got `1.5`"),
    ("flag", "segment_max_age_seconds", "0", "Expected `float` > 0.0, got `0`"),
    ("flag", "segment_max_age_seconds", "nan", "Expected `float` > 0.0, got `nan`"),
    ("env", "request_timeout_seconds", "soon", "Expected `float` > 0.0, got `soon`"),
    ("env", "rollup_interval_seconds", "-1", "Expected `float` >= 0.0, got `-1`"),
    ("env", "ack", "fast", "Expected `durable` or `received`, got `fast`"),
    ("flag", "segment_format", "csv", "Expected `arrow` or `parquet`, got `csv`"),
    ("env", "segment_compression", "gzip", "Expected `zstd` or `lz4` or `none`, got `gzip`"),
    ("env", "log_level", "INFO", "Expected `debug` or `info` or `warning` or `error`, got `INFO`"),
    ("env", "log_format", "xml", "Expected `json` or `text`, got `xml`"),
    ("env", "native", "maybe", "Expected `bool`, got `maybe`"),
    ("env", "s3_sse", "aes", "Expected `` or `AES256` or `aws:kms` or `aws:kms:dsse`, got `aes`"),
    ("env", "http_listen", "8088", "Expected `host:port` with port 0..65535, got `8088`"),
    (
        "env",
        "tcp_listen",
        "127.0.0.1:65536",
        "Expected `host:port` with port 0..65535, got `127.0.0.1:65536`",
    ),
    ("flag", "metrics_listen", "", "Expected `str` of length >= 1, got ``"),
    ("env", "spool_dir", "", "Expected `str` of length >= 1, got ``"),
    (
        "env",
        "store_url",
        "ftp://x",
        "Expected `str` matching regex '^(file|s3|memory)://', got `ftp://x`",
    ),
    (
        "file",
        "max_body_bytes",
        '"12 k"',
        'Expected `int` >= 1 or a size such as `8MiB`, got `"12 k"`',
    ),
    ("file", "max_body_bytes", "1.5", "Expected `int` >= 1, got `1.5`"),
    ("file", "ack", "1", "Expected `durable` or `received`, got `1`"),
    ("file", "native", '"false"', 'Expected `bool`, got `"false"`'),
    ("file", "http_listen", "8088", "Expected `str`, got `8088`"),
    ("file", "auth_tokens", '"a,b"', "Expected `array`, got `str`"),  # a secret: type only
    ("file", "spool_dir", "[1]", "Expected `str`, got `[1]`"),
]


@pytest.mark.parametrize(("kind", "key", "raw", "expected"), INVALID)
def test_invalid_value_names_key_source_expected_and_got(
    toml: Any, kind: str, key: str, raw: str, expected: str
) -> None:
    if kind == "env":
        flags, environ, source = {}, {f"GRAVIXD_{key.upper()}": raw}, f"env GRAVIXD_{key.upper()}"
    elif kind == "flag":
        flags, environ, source = {key: raw}, {}, f"flag --{key.replace('_', '-')}"
    else:
        path = toml(f"{key} = {raw}\n")
        flags, environ, source = {"config": path}, {}, f"file {path}"
    assert load_error(flags, environ) == f"Invalid value for `{key}` from {source}: {expected}"


def test_an_overridden_bad_value_is_still_an_error() -> None:
    message = load_error({"ack": "durable"}, {"GRAVIXD_ACK": "fast"})
    assert "from env GRAVIXD_ACK" in message


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"GRAVIXD_AUTH_TOKENS": "ok,has space"}, "`auth_tokens[1]` from env GRAVIXD_AUTH_TOKENS"),
        ({"GRAVIXD_S3_SECRET_ACCESS_KEY": "x", "GRAVIXD_S3_SSE": "bad"}, "`s3_sse`"),
    ],
)
def test_secrets_never_appear_in_errors(environ: dict[str, str], fragment: str) -> None:
    message = load_error({}, environ)
    assert fragment in message
    assert "has space" not in message
    if "auth_tokens" in fragment:
        assert message.endswith("got `***`")


def test_secret_of_wrong_type_in_toml_shows_only_the_type(toml: Any) -> None:
    path = toml("s3_secret_access_key = 12345\n")
    message = load_error({"config": path}, {})
    assert message == (
        f"Invalid value for `s3_secret_access_key` from file {path}: Expected `str`, got `int`"
    )


TCP_LISTENERS_INVALID = [
    (
        'listen = "127.0.0.1:9"\nstream = "fact"',
        '`tcp_listeners[0].stream` from {src}: Expected `facts` or `events`, got `"fact"`',
    ),
    (
        'listen = "127.0.0.1:9"\nstream = "facts"\nframing = "grpc"',
        '`tcp_listeners[0].framing` from {src}: Expected `ndjson` or `protobuf`, got `"grpc"`',
    ),
    (
        'listen = "127.0.0.1"\nstream = "facts"',
        "`tcp_listeners[0].listen` from {src}: Expected `host:port` with port 0..65535,"
        " got `127.0.0.1`",
    ),
    (
        'listen = "127.0.0.1:9"\nstream = "facts"\nmax_frame_bytes = 0',
        "`tcp_listeners[0].max_frame_bytes` from {src}: Expected `int` >= 1, got `0`",
    ),
    (
        'listen = "127.0.0.1:9"\nstream = "facts"\nport = 9',
        "`tcp_listeners[0]` from {src}: Object contains unknown field `port`",
    ),
    ('stream = "facts"', "`tcp_listeners[0]` from {src}: Object missing required field `listen`"),
]


@pytest.mark.parametrize(("table", "expected"), TCP_LISTENERS_INVALID)
def test_tcp_listeners_invalid(toml: Any, table: str, expected: str) -> None:
    first = '[[tcp_listeners]]\nlisten = "127.0.0.1:8"\nstream = "facts"\n'
    path = toml(f"{first}\n[[tcp_listeners]]\n{table}\n")
    expected = expected.replace("[0]", "[1]").format(src=f"file {path}")
    assert load_error({"config": path}, {}) == f"Invalid value for {expected}"


def test_tcp_listeners_not_a_list(toml: Any) -> None:
    path = toml('tcp_listeners = "127.0.0.1:1"\n')
    assert "Expected `array`" in load_error({"config": path}, {})


def test_tcp_listeners_only_in_toml() -> None:
    assert load_error({}, {"GRAVIXD_TCP_LISTENERS": "[]"}) == (
        "`tcp_listeners` can only be set in the config file, got env GRAVIXD_TCP_LISTENERS"
    )


# --- rules between keys ---------------------------------------------------------------

TOGETHER = [
    (
        {"GRAVIXD_TLS_CERT_FILE": "/c.pem"},
        "`tls_cert_file` (from env GRAVIXD_TLS_CERT_FILE) and `tls_key_file` (from default)"
        " must be set together: expected both or neither, got only `tls_cert_file`",
    ),
    (
        {"GRAVIXD_TLS_KEY_FILE": "/k.pem"},
        "`tls_cert_file` (from default) and `tls_key_file` (from env GRAVIXD_TLS_KEY_FILE)"
        " must be set together: expected both or neither, got only `tls_key_file`",
    ),
    (
        {"GRAVIXD_UPLOAD_RETRY_MAX_SECONDS": "0.1"},
        "Invalid value for `upload_retry_max_seconds` (from env GRAVIXD_UPLOAD_RETRY_MAX_SECONDS):"
        " Expected `float` >= upload_retry_initial_seconds (0.5), got `0.1`",
    ),
    (
        {"GRAVIXD_S3_SSE_KMS_KEY_ID": "k1", "GRAVIXD_S3_SSE": "AES256"},
        "`s3_sse_kms_key_id` (from env GRAVIXD_S3_SSE_KMS_KEY_ID) needs `s3_sse`"
        " (from env GRAVIXD_S3_SSE) = `aws:kms`, got `AES256`",
    ),
    (
        {"GRAVIXD_TCP_LISTEN": "127.0.0.1:9108"},
        "`tcp_listen` and `metrics_listen` both listen on `127.0.0.1:9108`",
    ),
]


@pytest.mark.parametrize(("environ", "message"), TOGETHER)
def test_rules_between_keys(environ: dict[str, str], message: str) -> None:
    assert load_error({}, environ) == message


@pytest.mark.parametrize(
    "environ",
    [
        {"GRAVIXD_TLS_CERT_FILE": "/c.pem", "GRAVIXD_TLS_KEY_FILE": "/k.pem"},
        {"GRAVIXD_S3_SSE": "aws:kms", "GRAVIXD_S3_SSE_KMS_KEY_ID": "k1"},
        {"GRAVIXD_HTTP_LISTEN": "127.0.0.1:0", "GRAVIXD_TCP_LISTEN": "127.0.0.1:0"},
        {"GRAVIXD_HTTP_LISTEN": "", "GRAVIXD_TCP_LISTEN": ""},
    ],
)
def test_rules_between_keys_accept(environ: dict[str, str]) -> None:
    load({}, environ)


# --- unknown keys ---------------------------------------------------------------------


def test_unknown_toml_key(toml: Any) -> None:
    path = toml("segment_max_byte = 1\n")
    assert load_error({"config": path}, {}) == (
        f"Unknown key `segment_max_byte` in file {path} (did you mean `segment_max_bytes`?)"
    )


def test_unknown_nested_toml_key(toml: Any) -> None:
    path = toml("[segment]\nmax_size = 1\n")
    assert load_error({"config": path}, {}).startswith(
        f"Unknown key `segment_max_size` in file {path}"
    )


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("GRAVIXD_MAX_BODY_BYTE", " (did you mean `GRAVIXD_MAX_BODY_BYTES`?)"),
        ("GRAVIXD_QQQQQQQQ_FILE", ""),
        ("GRAVIXD_CONFIGG", " (did you mean `GRAVIXD_CONFIG`?)"),
    ],
)
def test_unknown_env_variable(name: str, hint: str) -> None:
    assert load_error({}, {name: "1"}) == f"Unknown environment variable `{name}`{hint}"


def test_other_environment_is_ignored() -> None:
    load({}, {"HOME": "/root", "AWS_REGION": "eu-west-1", "XGRAVIXD_FOO": "1"})


def test_gravixd_native_zero_disables_native() -> None:
    loaded = load({}, {"GRAVIXD_NATIVE": "0"})
    assert loaded.config.native is False
    assert loaded.sources["native"] == "env GRAVIXD_NATIVE"


def test_config_file_problems(tmp_path: Path, toml: Any) -> None:
    missing = str(tmp_path / "missing.toml")
    assert load_error({}, {"GRAVIXD_CONFIG": missing}).startswith(
        f"Cannot read config file {missing}"
    )
    bad = toml("ack = \n")
    assert load_error({"config": bad}, {}).startswith(f"Invalid TOML in file {bad}: ")


# --- parse_listen ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "parsed"),
    [
        ("127.0.0.1:8088", ("127.0.0.1", 8088)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9108", ("::1", 9108)),
        ("[::]:1", ("::", 1)),
    ],
)
def test_parse_listen(addr: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(addr) == parsed


@pytest.mark.parametrize(
    "addr", ["", "8088", ":8088", "host:", "host:65536", "host:-1", "::1:80", "a b:1", "h:8o"]
)
def test_parse_listen_rejects(addr: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"got `{addr}`")):
        parse_listen(addr)


# --- render ---------------------------------------------------------------------------


@pytest.fixture
def loaded_with_secrets(toml: Any) -> LoadedConfig:
    path = toml("s3_access_key_id = 'AKIAEXAMPLE'\n[segment]\nformat = 'parquet'\n")
    environ = {"GRAVIXD_CONFIG": path, "GRAVIXD_S3_SECRET_ACCESS_KEY": "wJalrXUtnFEMI"}
    return load(parse_flags("--auth-tokens", "tok1,tok2", "--ack", "received"), environ)


def test_render_text_masks_secrets_and_names_sources(loaded_with_secrets: LoadedConfig) -> None:
    text = render(loaded_with_secrets)
    for secret in ("AKIAEXAMPLE", "wJalrXUtnFEMI", "tok1", "tok2"):
        assert secret not in text
    rows = {line.split()[0]: line for line in text.splitlines()}
    assert set(rows) == {"key", *Config.__struct_fields__}
    assert rows["s3_secret_access_key"].split() == [
        "s3_secret_access_key",
        "env",
        "GRAVIXD_S3_SECRET_ACCESS_KEY",
        '"***"',
    ]
    assert rows["auth_tokens"].split()[1:] == ["flag", "--auth-tokens", '"***"']
    assert rows["ack"].split()[1:] == ["flag", "--ack", '"received"']
    assert rows["segment_format"].split()[1:3] == ["file", loaded_with_secrets.config_file]
    assert rows["max_body_bytes"].split()[1:] == ["default", str(8 * MiB)]
    assert rows["s3_region"].split()[1:] == ["default", '""']  # unset secrets-ish stay visible


def test_render_json(loaded_with_secrets: LoadedConfig) -> None:
    document = json.loads(render(loaded_with_secrets, "json"))
    assert document["config"]["s3_secret_access_key"] == "***"
    assert document["config"]["s3_access_key_id"] == "***"
    assert document["config"]["auth_tokens"] == "***"
    assert document["config"]["segment_format"] == "parquet"
    assert document["sources"]["auth_tokens"] == "flag --auth-tokens"
    # Apart from the masked secrets, `.config` is itself a valid config.
    shown = {k: v for k, v in document["config"].items() if v != "***"}
    assert msgspec.convert(shown, Config).segment_format == "parquet"


def test_render_unset_secret_is_not_masked() -> None:
    document = json.loads(render(load({}, {}), "json"))
    assert document["config"]["auth_tokens"] == []
    assert document["config"]["s3_secret_access_key"] == ""


def test_render_unknown_format() -> None:
    with pytest.raises(ValueError, match="`text` or `json`"):
        render(load({}, {}), "yaml")


# --- docs -----------------------------------------------------------------------------


def test_docs_list_every_key_with_its_spellings() -> None:
    text = DOCS.read_text()
    for key in Config.__struct_fields__:
        assert f"`{key}`" in text, key


def test_docs_toml_examples_load(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    examples = [block for block in blocks if "segment_max_bytes" not in block]  # not the 3-way one
    assert len(examples) == 2
    tokens = tmp_path / "tokens"
    tokens.write_text("tok\n")
    for number, block in enumerate(examples):
        path = tmp_path / f"example{number}.toml"
        path.write_text(block.replace("/etc/gravixd/tokens", str(tokens)))
        load({"config": str(path)}, {})


def test_help_names_every_flag_and_env() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    for key in Config.__struct_fields__:
        if key != "tcp_listeners":
            assert "--" + key.replace("_", "-") in help_text
            assert "GRAVIXD_" + key.upper() in help_text


# --- authentication never off by accident ------------------------------------------------


def test_auth_modes(tmp_path: Path) -> None:
    empty = tmp_path / "tokens"
    empty.write_text("# nothing yet\n")
    assert "holds no bearer token" in load_error({"auth_tokens_file": str(empty)}, {})
    assert load({"auth_tokens_file": str(empty), "auth": "none"}, {}).config.auth == "none"
    assert "expected one or the other" in load_error({"auth": "none", "auth_tokens": "t"}, {})
    assert "`tokens`: expected at least one" in load_error({"auth": "tokens"}, {})
    assert load({"auth": "tokens", "auth_tokens": "t"}, {}).config.auth == "tokens"


@pytest.mark.parametrize(
    ("listen", "refused"),
    [
        ("127.0.0.1:5170", False),
        ("127.8.0.1:5170", False),
        ("[::1]:5170", False),
        ("localhost:5170", False),
        ("0.0.0.0:5170", True),
        ("[::]:5170", True),
        ("10.0.0.7:5170", True),
        ("ingest.internal:5170", True),
    ],
)
def test_an_open_tcp_listener_beside_tokens_needs_an_opt_in(listen: str, refused: bool) -> None:
    flags = {"tcp_listen": listen, "auth_tokens": "t"}
    if refused:
        message = load_error(flags, {})
        assert message.startswith("`tcp_listen` (from flag --tcp-listen)")
        assert "tcp_allow_unauthenticated" in message
        flags["tcp_allow_unauthenticated"] = "true"
    assert load(flags, {}).config.tcp_listen == listen
    assert load({"tcp_listen": listen}, {}).config.tcp_listen == listen  # no tokens, no rule


def test_a_pathologically_nested_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("tcp_listeners = " + "[" * 3000 + "]" * 3000 + "\n")
    message = load_error({"config": str(path)}, {})
    assert message.startswith(f"Invalid TOML in file {path}") and "nest" in message


# --- Iceberg keys ---------------------------------------------------------------------


def test_a_catalog_makes_segments_parquet_and_refuses_arrow() -> None:
    uri = {"GRAVIXD_ICEBERG_CATALOG_URI": "sqlite:////var/lib/gravixd/catalog.db"}
    assert load({}, uri).config.segment_format == "parquet"
    with pytest.raises(ConfigError) as caught:
        load(parse_flags("--segment-format", "arrow"), uri)
    message = str(caught.value)
    assert "`segment_format` (from flag --segment-format)" in message
    assert "`iceberg_catalog_uri` (from env GRAVIXD_ICEBERG_CATALOG_URI)" in message


def test_a_catalog_needs_a_store_with_files() -> None:
    with pytest.raises(ConfigError, match="`store_url`.*file:// or s3://"):
        load(
            parse_flags("--store-url", "memory://"),
            {"GRAVIXD_ICEBERG_CATALOG_URI": "sqlite:////tmp/c.db"},
        )


def test_the_catalog_uri_is_a_secret_read_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "uri"
    secret.write_text("postgresql://gravix:s3cret@db:5432/iceberg\n")
    loaded = load({}, {"GRAVIXD_ICEBERG_CATALOG_URI_FILE": str(secret)})
    assert loaded.config.iceberg_catalog_uri == "postgresql://gravix:s3cret@db:5432/iceberg"
    assert "s3cret" not in render(loaded)
