"""The typed, validated configuration of gravixd and where each value came from.

One frozen `Config` Struct is the schema: its field annotations carry the types, the ranges
(msgspec `Meta`), the help text and a few markers (secret, listen address, TOML only). The
flag and environment spellings of every key are derived from it, so adding a key is adding
one field. Precedence: flag > env `GRAVIXD_<KEY>` (or `GRAVIXD_<KEY>_FILE`) > TOML file
(`--config` / `GRAVIXD_CONFIG`) > default.

This module reads the config file, `_FILE` secrets and the auth tokens file, and nothing
else: it never opens sockets, never touches the spool or the store, and never logs a secret.
"""

import argparse
import difflib
import ipaddress
import re
import tomllib
import typing
from collections.abc import Collection, Mapping
from fractions import Fraction
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from msgspec import Meta

from .errors import ConfigError

__all__ = [
    "Config",
    "LoadedConfig",
    "TcpListener",
    "add_arguments",
    "load",
    "parse_listen",
    "read_auth_tokens",
    "render",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

ENV_PREFIX = "GRAVIXD_"
CONFIG_ENV = "GRAVIXD_CONFIG"
# `gravixd emit` reads its own GRAVIXD_EMIT_* variables (a client's, not the daemon's keys).
_EMIT_ENV_PREFIX = "GRAVIXD_EMIT_"
MASK = "***"

# Shapes shared by many keys. `extra` markers are read by `_field_specs` below.
Bytes = Annotated[int, Meta(ge=1)]
Count = Annotated[int, Meta(ge=1)]
Seconds = Annotated[float, Meta(gt=0)]
Listen = Annotated[str, Meta(extra={"listen": True})]  # host:port, "" disables
Secret = Annotated[str, Meta(extra={"secret": True})]
# RFC 6750 b64token: what an `Authorization: Bearer` header can carry at all.
Token = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._~+/-]+=*$")]


def _doc(text: str, **extra: Any) -> Meta:
    return Meta(description=text, extra=extra)


class TcpListener(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One extra raw TCP listener, from a `[[tcp_listeners]]` TOML table."""

    listen: Annotated[Listen, Meta(min_length=1)]
    stream: Literal["facts", "events"]
    framing: Literal["ndjson", "protobuf"] = "ndjson"
    # None: tcp_max_line_bytes for ndjson, tcp_max_frame_bytes for protobuf.
    max_frame_bytes: Bytes | None = None


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every configuration key with its default. Build it with `load`, not by hand."""

    # Listeners.
    http_listen: Annotated[Listen, _doc("HTTP ingest address, host:port (empty disables)")] = (
        "127.0.0.1:8088"
    )
    tcp_listen: Annotated[
        Listen, _doc("raw TCP ndjson listener for the facts stream (empty disables)")
    ] = "127.0.0.1:5170"
    metrics_listen: Annotated[
        Listen, Meta(min_length=1), _doc("side port: /metrics, /livez, /readyz")
    ] = "127.0.0.1:9108"
    tcp_listeners: Annotated[
        list[TcpListener], _doc("more TCP listeners ([[tcp_listeners]] tables)", toml_only=True)
    ] = []
    reuse_port: Annotated[
        bool, _doc("SO_REUSEPORT on the HTTP and TCP listeners: several instances, one address")
    ] = False

    # Durability and storage.
    spool_dir: Annotated[str, Meta(min_length=1), _doc("local write-ahead spool directory")] = (
        "./gravixd-data/spool"
    )
    store_url: Annotated[
        str,
        Meta(pattern=r"^(file|s3|memory)://"),
        _doc("object store URL: file://, s3://bucket/prefix or memory://"),
    ] = "file://./gravixd-data/store"
    ack: Annotated[
        Literal["durable", "received"], _doc("acknowledge after fsync, or after the append")
    ] = "durable"
    invalid_events: Annotated[
        Literal["reject", "skip"],
        _doc("an invalid event rejects its whole request (400), or is left out (202 with errors)"),
    ] = "reject"
    max_spool_bytes: Annotated[Bytes, _doc("above this spool size, shed load (503)")] = GiB

    # Segments.
    segment_max_bytes: Annotated[Bytes, _doc("rotate a segment at this size")] = 64 * MiB
    segment_max_events: Annotated[Count, _doc("rotate a segment at this many events")] = 1_000_000
    segment_max_age_seconds: Annotated[Seconds, _doc("rotate a segment at this age")] = 60.0
    # Parquet: what DuckDB, Trino, Spark and Iceberg tables read. It costs ~0.7-0.8 CPU s per
    # million events at seal, off the event loop (bench/results/segment_format.json, README);
    # "arrow" stores the sealed spool file as it is.
    segment_format: Annotated[
        Literal["arrow", "parquet"], _doc("object format of uploaded segments")
    ] = "parquet"
    # lz4 seals at ~3x zstd's speed (7.0M vs 2.35M rows/s here) for ~1.85x the bytes:
    # segments are short-lived on the hot core; `gravixd rollup` writes zstd Parquet.
    segment_compression: Annotated[
        Literal["zstd", "lz4", "none"], _doc("compression of uploaded segments")
    ] = "lz4"

    # HTTP limits. 16 KiB of headers: h11's own default, and what nginx and node allow.
    max_body_bytes: Annotated[Bytes, _doc("decompressed request body limit")] = 8 * MiB
    max_header_bytes: Annotated[Bytes, _doc("request head limit (431 above)")] = 16 * KiB
    max_connections: Annotated[Count, _doc("open connections, all listeners")] = 1024
    max_in_flight_requests: Annotated[Count, _doc("requests decoded but not yet acked")] = 256
    max_in_flight_bytes: Annotated[Bytes, _doc("bytes of requests not yet acked")] = 256 * MiB
    request_timeout_seconds: Annotated[Seconds, _doc("deadline to receive one request")] = 30.0
    idle_timeout_seconds: Annotated[Seconds, _doc("close idle keep-alive connections")] = 75.0
    drain_timeout_seconds: Annotated[Seconds, _doc("SIGTERM: time to finish and upload")] = 20.0

    # Auth and TLS.
    auth_tokens: Annotated[
        list[Token], _doc("bearer tokens, comma-separated in env/flag", secret=True)
    ] = []
    auth_tokens_file: Annotated[str, _doc("file of bearer tokens, one a line")] = ""
    # `auto` keeps a fresh install open, yet a token set never silently empties: a SIGHUP
    # that would leave none is rejected unless the new config says `none`.
    auth: Annotated[
        Literal["auto", "tokens", "none"],
        _doc("HTTP auth: auto (on when tokens are configured), tokens (required) or none"),
    ] = "auto"
    tcp_allow_unauthenticated: Annotated[
        bool,
        _doc("allow raw TCP listeners off loopback while tokens are configured (TCP has no auth)"),
    ] = False
    tls_cert_file: Annotated[str, _doc("PEM certificate chain for HTTPS")] = ""
    tls_key_file: Annotated[str, _doc("PEM private key for HTTPS")] = ""

    # S3 (used when store_url is s3://). Empty values defer to the AWS SDK's own chain.
    s3_endpoint_url: Annotated[str, _doc("S3 endpoint (MinIO, SeaweedFS, ...)")] = ""
    s3_region: Annotated[str, _doc("S3 region")] = ""
    s3_path_style: Annotated[bool, _doc("path-style bucket addressing")] = False
    s3_access_key_id: Annotated[Secret, _doc("S3 access key id")] = ""
    s3_secret_access_key: Annotated[Secret, _doc("S3 secret access key")] = ""
    s3_sse: Annotated[
        Literal["", "AES256", "aws:kms", "aws:kms:dsse"], _doc("server-side encryption")
    ] = ""
    s3_sse_kms_key_id: Annotated[str, _doc("KMS key for s3_sse = aws:kms")] = ""

    # Uploads.
    upload_concurrency: Annotated[Count, _doc("segments uploaded at once")] = 2
    upload_retry_initial_seconds: Annotated[Seconds, _doc("first retry backoff")] = 0.5
    upload_retry_max_seconds: Annotated[Seconds, _doc("longest retry backoff")] = 30.0

    # Raw TCP.
    tcp_max_line_bytes: Annotated[Bytes, _doc("longest ndjson line")] = MiB
    tcp_max_frame_bytes: Annotated[Bytes, _doc("largest protobuf frame")] = 4 * MiB

    # Rollup.
    rollup_interval_seconds: Annotated[
        float, Meta(ge=0), _doc("run rollup in serve this often (0 = off)")
    ] = 0.0
    rollup_target_file_bytes: Annotated[Bytes, _doc("target size of rollup files")] = 256 * MiB

    # Iceberg tables (docs/iceberg.md). The URI may carry a password: it is a secret
    # (masked by `gravixd config`, readable from GRAVIXD_ICEBERG_CATALOG_URI_FILE).
    iceberg_catalog_uri: Annotated[
        Secret,
        Meta(pattern=r"^$|^(sqlite|postgresql(\+psycopg2)?|https?)://"),
        _doc("Iceberg catalog: sqlite:////abs.db, postgresql://..., http(s):// REST; empty = none"),
    ] = ""
    iceberg_catalog_name: Annotated[
        str, Meta(min_length=1), _doc("catalog name (SQL catalogs key their rows by it)")
    ] = "gravix"
    iceberg_namespace: Annotated[
        str,
        Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"),
        _doc("namespace of the tables facts and events"),
    ] = "gravix"
    iceberg_commit: Annotated[
        Literal["daemon", "rollup"],
        _doc("daemon: each daemon commits what it uploads; rollup: `gravixd rollup` commits"),
    ] = "daemon"
    iceberg_commit_interval_seconds: Annotated[
        Seconds, _doc("commit what is new at most this often, in one snapshot")
    ] = 10.0
    iceberg_catalog_token: Annotated[Secret, _doc("bearer token for a REST catalog")] = ""
    iceberg_catalog_warehouse: Annotated[
        str, _doc("REST catalog: the warehouse to use (Polaris, Lakekeeper name one)")
    ] = ""
    iceberg_catalog_password: Annotated[
        Secret, _doc("password for a postgresql:// catalog (instead of one in the URI)")
    ] = ""
    # 7 days: 5 days is Iceberg's own default (history.expire.max-snapshot-age-ms); a week
    # covers a daemon down over a long weekend. At least 2 h: a segment within an hour of it
    # is not committed (hosts' clocks may disagree), see gravixd/iceberg/commit.py.
    iceberg_snapshot_retention_seconds: Annotated[
        float,
        Meta(ge=7200),
        _doc("rollup keeps snapshots (and the files they read) this long"),
    ] = 7 * 86400.0

    # Process.
    native: Annotated[bool, _doc("use the C decoder when built")] = True
    log_level: Annotated[Literal["debug", "info", "warning", "error"], _doc("log level")] = "info"
    log_format: Annotated[Literal["json", "text"], _doc("log line format")] = "json"


class LoadedConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A `Config` and, per key, where its value came from: `default`, `file PATH`,
    `env GRAVIXD_X`, `env GRAVIXD_X_FILE` or `flag --x`."""

    config: Config
    sources: dict[str, str]
    config_file: str = ""  # the TOML file read, "" if none


# --- the key table, derived from the Struct ------------------------------------------


class _FieldSpec(NamedTuple):
    name: str
    type: Any  # the full annotated type, for msgspec.convert
    default: Any
    description: str
    secret: bool
    toml_only: bool
    listen: bool  # a host:port address, checked by parse_listen
    is_list: bool
    is_bool: bool
    choices: tuple[str, ...]  # of a Literal key, else ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


def _field_specs() -> dict[str, _FieldSpec]:
    specs = {}
    for field in msgspec.structs.fields(Config):
        base, *metas = typing.get_args(field.type)
        extra: dict[str, Any] = {}
        description = ""
        for meta in metas:
            extra.update(meta.extra or {})
            description = meta.description or description
        specs[field.name] = _FieldSpec(
            name=field.name,
            type=field.type,
            default=(
                field.default_factory() if field.default is msgspec.NODEFAULT else field.default
            ),
            description=description,
            secret=bool(extra.get("secret")),
            toml_only=bool(extra.get("toml_only")),
            listen=bool(extra.get("listen")),
            is_list=typing.get_origin(base) is list,
            is_bool=base is bool,
            choices=typing.get_args(base) if typing.get_origin(base) is Literal else (),
        )
    return specs


_FIELDS = _field_specs()
_BY_ENV = {spec.env: spec for spec in _FIELDS.values()}


# --- value parsing -------------------------------------------------------------------

_LISTEN_ERROR = "Expected `host:port` with port 0..65535"


def parse_listen(addr: str) -> tuple[str, int]:
    """Split a listen address into host and port: `127.0.0.1:8088`, `[::1]:0`, `localhost:80`.

    Raises:
        ValueError: not host:port, an empty host, an unbracketed IPv6 host, or a bad port.
    """
    host, sep, port_text = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # "::1:80" is ambiguous; IPv6 hosts need brackets
        host = ""
    if not sep or not host or re.search(r"\s", host) or not re.fullmatch(r"[0-9]{1,5}", port_text):
        raise ValueError(f"{_LISTEN_ERROR}, got `{addr}`")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{_LISTEN_ERROR}, got `{addr}`")
    return host, port


# KB = 1000 and KiB = 1024, as IEC 80000-13 says; case-insensitive ("8mib").
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([kmgt]i?)?b)?\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_SIZE_UNITS |= {"ki": KiB, "mi": MiB, "gi": GiB, "ti": 1024 * GiB}


def _with_sizes(name: str, value: Any) -> Any:
    """Turns size strings ("8MiB", "64 MB") into ints in `*_bytes` keys, also nested ones;
    anything else is left for msgspec to accept or reject."""
    if isinstance(value, list):
        return [_with_sizes(name, item) for item in value]
    if isinstance(value, dict):
        return {key: _with_sizes(key, item) for key, item in value.items()}
    if name.endswith("_bytes") and isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match:
            size = Fraction(match[1]) * _SIZE_UNITS[(match[2] or "").lower()]
            if size.denominator == 1:
                return int(size)
    return value


def _format_size(size: int) -> str:
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


# --- error messages ------------------------------------------------------------------

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_GOT = re.compile(r", got `[^`]*`$")
_PATH_PART = re.compile(r"\[(\d+)\]|\.(\w+)")


def _walk(value: Any, tp: Any, path: str) -> tuple[Any, Any]:
    """The raw value and the declared type at a msgspec error path like `[0].stream`."""
    for index, key in _PATH_PART.findall(path):
        while typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        if index:
            value = value[int(index)] if isinstance(value, list) else None
            tp = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        else:
            value = value.get(key) if isinstance(value, dict) else None
            fields = {f.name: f.type for f in msgspec.structs.fields(tp)}
            tp = fields.get(key, Any)
    return value, tp


def _literal_choices(tp: Any) -> str:
    """`a` or `b` for a Literal type, "" for any other."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) is not Literal:
        return ""
    return " or ".join(f"`{choice}`" for choice in typing.get_args(tp))


def _show(value: Any, *, typed: bool, secret: bool) -> str:
    """A value as an error message shows it: strings from env/flags as typed, TOML values
    in TOML-ish JSON (so `"1"` and `1` differ), secrets never."""
    if secret:
        return MASK
    text = value if isinstance(value, str) and not typed else msgspec.json.encode(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def _bounds(tp: Any) -> str | None:
    """`int` >= 1 for a constrained number type, as msgspec words its range errors."""
    info = msgspec.inspect.type_info(tp)
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if not isinstance(info, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        return None
    name = "int" if isinstance(info, msgspec.inspect.IntType) else "float"
    limits = ((">=", info.ge), (">", info.gt), ("<=", info.le), ("<", info.lt))
    cast = int if name == "int" else float
    return " ".join([f"`{name}`", *(f"{op} {cast(n)!r}" for op, n in limits if n is not None)])


def _invalid(spec: _FieldSpec, source: str, value: Any, typed: bool, exc: Exception) -> ConfigError:
    message = str(exc)
    path = ""
    if match := _AT.search(message):
        path, message = match["path"], message[: match.start()]
    got, tp = _walk(value, spec.type, path)
    choices = _literal_choices(tp)
    if choices and (message.startswith("Invalid enum value") or _GOT.search(message)):
        message = f"Expected {choices}"
    elif _GOT.search(message) and not spec.secret:  # a wrong type: say what the range is too
        bounds = _bounds(tp)
        message = f"Expected {bounds}" if bounds else _GOT.sub("", message)
        leaf = path.rpartition(".")[2] if "." in path else spec.name
        if leaf.endswith("_bytes") and isinstance(got, str):
            message += " or a size such as `8MiB`"
    if message.startswith("Expected") and not _GOT.search(message):
        message += f", got `{_show(got, typed=typed, secret=spec.secret)}`"
    return ConfigError(f"Invalid value for `{spec.name}{path}` from {source}: {message}")


def _unknown(what: str, name: str, choices: list[str], where: str = "") -> ConfigError:
    # Compare without the common GRAVIXD_ prefix, which would make every name look close.
    bare = {choice.removeprefix(ENV_PREFIX): choice for choice in choices}
    close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), list(bare), n=1)
    hint = f" (did you mean `{bare[close[0]]}`?)" if close else ""
    return ConfigError(f"Unknown {what} `{name}`{where}{hint}")


# --- sources ---------------------------------------------------------------------------


class _Raw(NamedTuple):
    key: str
    value: Any
    source: str
    typed: bool  # a TOML value (strict types) rather than a string from env or a flag


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {what}: {exc}") from None


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`[segment] max_bytes = 1` becomes `segment_max_bytes = 1`; arrays stay as they are."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = prefix + key
        items = _flatten(value, name + "_") if isinstance(value, dict) else {name: value}
        for flat_name, flat_value in items.items():
            if flat_name in flat:
                raise ConfigError(f"Key `{flat_name}` is set twice")
            flat[flat_name] = flat_value
    return flat


def _file_values(path: str) -> list[_Raw]:
    source = f"file {path}"
    text = _read_text(path, f"config file {path}")
    try:
        flat = _flatten(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Invalid TOML in {source}: {exc}") from None
    except RecursionError:
        # tomllib parses nested arrays and tables recursively: a few hundred levels exhaust
        # the stack. No gravixd key nests more than two.
        raise ConfigError(
            f"Invalid TOML in {source}: Expected arrays and tables nested a few levels,"
            " got nesting too deep to parse"
        ) from None
    except ConfigError as exc:
        raise ConfigError(f"{exc} in {source}") from None
    for key in flat:
        if key not in _FIELDS:
            raise _unknown("key", key, list(_FIELDS), f" in {source}")
    return [_Raw(key, value, source, typed=True) for key, value in flat.items()]


def _env_values(environ: Mapping[str, str]) -> list[_Raw]:
    raws: dict[str, _Raw] = {}
    for name in sorted(environ):
        if (
            not name.startswith(ENV_PREFIX)
            or name == CONFIG_ENV
            or name.startswith(_EMIT_ENV_PREFIX)
        ):
            continue
        source = f"env {name}"
        # GRAVIXD_AUTH_TOKENS_FILE is the key auth_tokens_file, not a _FILE form of auth_tokens.
        if spec := _BY_ENV.get(name):
            value = environ[name]
        elif name.endswith("_FILE") and (spec := _BY_ENV.get(name.removesuffix("_FILE"))):
            path = environ[name]
            value = _read_text(path, f"`{spec.name}` from {source} ({path})").rstrip("\r\n")
        else:
            raise _unknown("environment variable", name, [*_BY_ENV, CONFIG_ENV])
        if spec.toml_only:
            raise ConfigError(f"`{spec.name}` can only be set in the config file, got {source}")
        if spec.name in raws:
            first = raws[spec.name].source.removeprefix("env ")
            raise ConfigError(f"Both {first} and {name} set `{spec.name}`; use one")
        raws[spec.name] = _Raw(spec.name, value, source, typed=False)
    return list(raws.values())


def _flag_values(flags: Mapping[str, Any]) -> list[_Raw]:
    return [
        _Raw(spec.name, flags[spec.name], f"flag {spec.flag}", typed=False)
        for spec in _FIELDS.values()
        if spec.name in flags and not spec.toml_only
    ]


def _convert(raw: _Raw) -> Any:
    spec = _FIELDS[raw.key]
    value = raw.value
    if spec.is_list and isinstance(value, str) and not raw.typed:
        value = [item.strip() for item in value.split(",") if item.strip()]
    try:
        value = _with_sizes(spec.name, value)
        typed = msgspec.convert(value, spec.type, strict=raw.typed)
    except msgspec.ValidationError as exc:
        raise _invalid(spec, raw.source, value, raw.typed, exc) from None
    except RecursionError:
        raise ConfigError(
            f"Invalid value for `{spec.name}` from {raw.source}: Expected a value nested"
            " a few levels, got nesting too deep to check"
        ) from None
    # Listen addresses: the one check msgspec cannot express.
    listens = [(spec.name, typed)] if spec.listen else []
    if spec.name == "tcp_listeners":
        listens = [(f"tcp_listeners[{i}].listen", item.listen) for i, item in enumerate(typed)]
    for name, addr in listens:
        if addr:
            try:
                parse_listen(addr)
            except ValueError as exc:
                raise ConfigError(f"Invalid value for `{name}` from {raw.source}: {exc}") from None
    return typed


def _check_together(config: Config, sources: Mapping[str, str]) -> None:
    """Rules between keys; each message names both keys and their sources."""

    def where(key: str) -> str:
        return f"`{key}` (from {sources[key]})"

    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        only = "tls_cert_file" if config.tls_cert_file else "tls_key_file"
        raise ConfigError(
            f"{where('tls_cert_file')} and {where('tls_key_file')} must be set together:"
            f" expected both or neither, got only `{only}`"
        )
    if config.upload_retry_max_seconds < config.upload_retry_initial_seconds:
        raise ConfigError(
            f"Invalid value for {where('upload_retry_max_seconds')}: Expected `float` >="
            f" upload_retry_initial_seconds ({config.upload_retry_initial_seconds}),"
            f" got `{config.upload_retry_max_seconds}`"
        )
    if config.s3_sse_kms_key_id and not config.s3_sse.startswith("aws:kms"):
        raise ConfigError(
            f"{where('s3_sse_kms_key_id')} needs {where('s3_sse')} = `aws:kms`,"
            f" got `{config.s3_sse}`"
        )
    if config.iceberg_catalog_uri:
        if config.segment_format == "arrow" and sources["segment_format"] != "default":
            raise ConfigError(
                f"{where('segment_format')} = `arrow` cannot go with"
                f" {where('iceberg_catalog_uri')}: Iceberg tables hold Parquet files;"
                " expected `parquet` (the default with a catalog) or no catalog"
            )
        if not config.store_url.startswith(("file://", "s3://")):
            raise ConfigError(
                f"{where('store_url')} must be file:// or s3:// with"
                f" {where('iceberg_catalog_uri')}: the tables' files live in the store,"
                f" got `{config.store_url}`"
            )
    listens = {
        "http_listen": config.http_listen,
        "tcp_listen": config.tcp_listen,
        "metrics_listen": config.metrics_listen,
    }
    listens |= {f"tcp_listeners[{i}]": t.listen for i, t in enumerate(config.tcp_listeners)}
    seen: dict[tuple[str, int], str] = {}
    for key, addr in listens.items():
        if not addr:
            continue
        host, port = parse_listen(addr)
        if port and (host, port) in seen:
            raise ConfigError(f"`{seen[host, port]}` and `{key}` both listen on `{addr}`")
        seen[host, port] = key


def load(flags: Mapping[str, Any], environ: Mapping[str, str]) -> LoadedConfig:
    """Build the effective configuration: flag > env > config file > default.

    Args:
        flags: `vars(namespace)` from a parser set up by `add_arguments`; only flags the
            user gave are present. Keys that are not config keys (e.g. `command`) are ignored.
        environ: usually `os.environ`; every `GRAVIXD_*` name must be a key (or its `_FILE`
            form, or `GRAVIXD_CONFIG`).

    Returns:
        The config and the source of each value. Calling it again with the same arguments
        is a reload (SIGHUP).

    Raises:
        ConfigError: an unknown key, a bad value or an unreadable file; the message names
            the key, the source, what was expected and what came.
    """
    config_file = str(flags.get("config") or environ.get(CONFIG_ENV) or "")
    values = {name: spec.default for name, spec in _FIELDS.items()}
    sources = dict.fromkeys(_FIELDS, "default")
    layers = [_file_values(config_file)] if config_file else []
    layers += [_env_values(environ), _flag_values(flags)]
    for layer in layers:
        for raw in layer:
            values[raw.key] = _convert(raw)
            sources[raw.key] = raw.source
    config = Config(**values)
    _check_together(config, sources)
    if config.iceberg_catalog_uri and sources["segment_format"] == "default":
        # Iceberg tables hold Parquet files: with a catalog, segments are Parquet.
        config = msgspec.structs.replace(config, segment_format="parquet")
        sources["segment_format"] = "default with iceberg_catalog_uri"
    _check_auth(config, sources, read_auth_tokens(config))  # fail at start, not at a request
    return LoadedConfig(config=config, sources=sources, config_file=config_file)


def is_loopback(host: str) -> bool:
    """Whether a listen host only takes connections from this machine. A name other than
    `localhost` counts as reachable from outside: what it resolves to can change."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_auth(config: Config, sources: Mapping[str, str], tokens: list[str]) -> None:
    """Authentication never turns off by accident: not by an empty tokens file, and not
    because raw TCP (which has no auth) listens beside an authenticated HTTP port."""

    def where(key: str) -> str:
        return f"`{key}` (from {sources[key]})"

    if config.auth == "none" and tokens:
        raise ConfigError(
            f"{where('auth')} is `none` but {len(tokens)} bearer token(s) are configured"
            " (`auth_tokens`, `auth_tokens_file`): expected one or the other"
        )
    if config.auth == "tokens" and not tokens:
        raise ConfigError(
            f"{where('auth')} is `tokens`: expected at least one bearer token in"
            " `auth_tokens` or `auth_tokens_file`, got none"
        )
    if config.auth == "auto" and config.auth_tokens_file and not tokens:
        raise ConfigError(
            f"{where('auth_tokens_file')} {config.auth_tokens_file} holds no bearer token:"
            ' expected at least one, or `auth = "none"` to run without authentication'
        )
    if not tokens or config.tcp_allow_unauthenticated:
        return
    listens = {"tcp_listen": config.tcp_listen}
    listens |= {f"tcp_listeners[{i}].listen": t.listen for i, t in enumerate(config.tcp_listeners)}
    for key, addr in listens.items():
        if addr and not is_loopback(parse_listen(addr)[0]):
            source = sources.get(key, sources["tcp_listeners"])
            raise ConfigError(
                f"`{key}` (from {source}) = `{addr}` is reachable from other hosts, but raw TCP"
                " has no authentication and bearer tokens are configured: expected a loopback"
                " address, or `tcp_allow_unauthenticated = true` to accept it knowingly"
            )


def read_auth_tokens(config: Config) -> list[str]:
    """All bearer tokens: `auth_tokens`, then `auth_tokens_file` (one a line; blank lines
    and `#` comments ignored). Empty means no auth. Duplicates are dropped.

    Raises:
        ConfigError: the file cannot be read or holds a line that is no bearer token.
    """
    tokens = list(config.auth_tokens)
    if path := config.auth_tokens_file:
        text = _read_text(path, f"`auth_tokens_file` {path}")
        for number, line in enumerate(text.splitlines(), 1):
            token = line.strip()
            if not token or token.startswith("#"):
                continue
            try:
                tokens.append(msgspec.convert(token, Token))
            except msgspec.ValidationError as exc:
                raise ConfigError(
                    f"Invalid value for `auth_tokens_file` line {number} in {path}: {exc}"
                ) from None
    return list(dict.fromkeys(tokens))


# --- presentation ----------------------------------------------------------------------


def _shown_value(spec: _FieldSpec, value: Any) -> Any:
    return MASK if spec.secret and value else msgspec.to_builtins(value)


def render(loaded: LoadedConfig, fmt: str = "text") -> str:
    """The effective configuration with each value's source, secrets masked as `***`.

    Args:
        fmt: `text` (an aligned table) or `json` (`{"config": {...}, "sources": {...}}`).
    """
    shown = {
        name: _shown_value(spec, getattr(loaded.config, name)) for name, spec in _FIELDS.items()
    }
    if fmt == "json":
        document = {"config": shown, "sources": loaded.sources}
        return msgspec.json.format(msgspec.json.encode(document)).decode() + "\n"
    if fmt != "text":
        raise ValueError(f"Expected format `text` or `json`, got `{fmt}`")
    # Values last: one long value (tcp_listeners) must not widen every row.
    rows = [("key", "source", "value")]
    rows += [(k, loaded.sources[k], msgspec.json.encode(v).decode()) for k, v in shown.items()]
    key_width = max(len(row[0]) for row in rows)
    source_width = max(len(row[1]) for row in rows)
    return "".join(
        f"{key:<{key_width}}  {source:<{source_width}}  {value}\n" for key, source, value in rows
    )


def add_arguments(parser: argparse.ArgumentParser, keys: Collection[str] | None = None) -> None:
    """Add `--config PATH` and one `--<key>` flag per key (not the TOML-only ones); with
    `keys`, only those keys' flags (a subcommand shows only the settings it uses).

    Every flag defaults to `argparse.SUPPRESS`, so `vars(namespace)` holds only the flags
    given; values stay strings and `load` validates them like env values. Booleans take
    `--x` / `--no-x`.
    """
    unknown = set(keys or ()) - set(_FIELDS)
    if unknown:
        raise ValueError(f"Expected configuration keys, got {sorted(unknown)}")
    group = parser.add_argument_group(
        "configuration", "flag > env GRAVIXD_<KEY> > --config file > default"
    )
    group.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"TOML config file (env {CONFIG_ENV})",
    )
    for spec in _FIELDS.values():
        if spec.toml_only or (keys is not None and spec.name not in keys):
            continue
        default = spec.default
        if spec.name.endswith("_bytes"):
            default = _format_size(default)
        elif spec.is_list:
            default = ",".join(default)
        shown = f"default {default!r}" if not spec.secret else "secret"
        help_text = f"{spec.description} ({shown}; env {spec.env})".replace("%", "%%")
        if spec.is_bool:
            group.add_argument(
                spec.flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            group.add_argument(
                spec.flag, metavar=_metavar(spec), default=argparse.SUPPRESS, help=help_text
            )


def _metavar(spec: _FieldSpec) -> str:
    if spec.choices:
        return "{" + ",".join(spec.choices) + "}"
    if isinstance(spec.default, int) and not spec.is_bool and not spec.name.endswith("_bytes"):
        return "N"
    for suffix, metavar in (
        ("_bytes", "BYTES"),
        ("_seconds", "SECONDS"),
        ("_listen", "HOST:PORT"),
        ("_file", "PATH"),
        ("_dir", "PATH"),
        ("_url", "URL"),
        ("_tokens", "TOKEN,..."),
    ):
        if spec.name.endswith(suffix):
            return metavar
    return "VALUE"
