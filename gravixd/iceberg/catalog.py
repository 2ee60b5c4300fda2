"""Open the Iceberg catalog that `iceberg_catalog_uri` names.

`sqlite:////abs/path.db` and `postgresql://user:pass@host:port/db` are pyiceberg's SQL
catalog (the same `iceberg_tables` rows as Iceberg's JDBC catalog, keyed by the catalog
name, so Trino's `iceberg.catalog.type=jdbc` reads what gravixd commits); `http(s)://` is a
REST catalog. The FileIO gets the store's S3 endpoint, region, addressing and credentials.

`check_settings` is pure and runs at start (a malformed URI or a missing extra is one line,
exit 2). `open_catalog` connects: an unreachable catalog is the caller's to retry, it must
never stop ingest. This module never logs a URI (it may hold a password).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from ..errors import ConfigError

KINDS = {"sqlite": "sql", "postgresql": "sql", "postgresql+psycopg2": "sql"}


@dataclass(frozen=True)
class CatalogSettings:
    """What opening the catalog and its tables needs; built by `settings_from_config`."""

    uri: str
    name: str = "gravix"
    namespace: str = "gravix"
    token: str = ""
    password: str = ""
    warehouse: str = ""  # REST: the `warehouse` property
    # FileIO properties (pyiceberg's `s3.*` keys) for an s3:// store.
    io_properties: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print the URI: it may hold a password
        return f"CatalogSettings(name={self.name!r}, namespace={self.namespace!r})"


def check_settings(settings: CatalogSettings) -> str:
    """Check the URI's form and that pyiceberg is installed; returns the catalog kind.

    Raises:
        ConfigError: naming `iceberg_catalog_uri` (malformed URI, no database path, the
            `gravixd[iceberg]` extra missing).
    """
    parts = urlsplit(settings.uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        kind = "rest"
        if not parts.netloc:
            raise ConfigError(
                "Invalid value for `iceberg_catalog_uri`: expected http(s)://host[:port]/path"
                " of a REST catalog, got no host"
            )
    elif scheme in KINDS:
        kind = "sql"
        if scheme == "sqlite":
            # sqlite:////abs/path.db: an empty host, then the absolute path ("//abs/...").
            if parts.netloc or not parts.path.startswith("//") or parts.path == "//":
                raise ConfigError(
                    "Invalid value for `iceberg_catalog_uri`: expected"
                    " sqlite:////absolute/path.db (four slashes), got a relative or empty path"
                )
        elif not parts.hostname or not parts.path.strip("/"):
            raise ConfigError(
                "Invalid value for `iceberg_catalog_uri`: expected"
                " postgresql://user[:password]@host[:port]/database, got no host or database"
            )
    else:
        raise ConfigError(
            "Invalid value for `iceberg_catalog_uri`: expected sqlite://, postgresql:// or"
            f" http(s)://, got scheme `{scheme}`"
        )
    try:
        import pyiceberg  # noqa: F401
    except ImportError:
        raise ConfigError(
            "`iceberg_catalog_uri` is set but pyiceberg is not installed: install the extra"
            " (`pip install -e '.[iceberg]'` in gravixd's clone)"
        ) from None
    if kind == "sql":
        try:
            import sqlalchemy  # noqa: F401

            if scheme.startswith("postgresql"):
                import psycopg2  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                f"`iceberg_catalog_uri` needs {exc.name}, which is not installed: install the"
                " extra (`pip install -e '.[iceberg]'` in gravixd's clone)"
            ) from None
    return kind


def sqlalchemy_uri(settings: CatalogSettings) -> str:
    """The SQLAlchemy URL: postgresql goes through psycopg2; `iceberg_catalog_password`
    fills in a password the URI leaves out."""
    parts = urlsplit(settings.uri)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        return settings.uri  # urlunsplit would drop the empty host's slashes
    if scheme == "postgresql":
        scheme = "postgresql+psycopg2"
    netloc = parts.netloc
    if settings.password and scheme.startswith("postgresql") and parts.password is None:
        user = parts.username or ""
        host = netloc.rpartition("@")[2]
        netloc = f"{user}:{quote(settings.password, safe='')}@{host}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def catalog_properties(settings: CatalogSettings) -> dict[str, str]:
    """pyiceberg `load_catalog` properties for these settings."""
    kind = check_settings(settings)
    properties: dict[str, str] = dict(settings.io_properties)
    if kind == "rest":
        properties |= {"type": "rest", "uri": settings.uri}
        if settings.token:
            properties["token"] = settings.token
        if settings.warehouse:
            properties["warehouse"] = settings.warehouse
    else:
        properties |= {"type": "sql", "uri": sqlalchemy_uri(settings)}
    return properties


def open_catalog(settings: CatalogSettings) -> Any:
    """Connect to the catalog (blocking). Raises whatever the driver raises when the
    catalog is unreachable: the caller retries."""
    from pyiceberg.catalog import load_catalog

    return load_catalog(settings.name, **catalog_properties(settings))


def s3_io_properties(
    *,
    endpoint_url: str,
    region: str,
    path_style: bool,
    access_key_id: str,
    secret_access_key: str,
    session_token: str = "",
) -> dict[str, str]:
    """pyiceberg FileIO properties equal to what gravixd's S3 store uses; unset values
    fall back to the standard AWS variables, as every AWS tool does."""
    environ = os.environ
    values = {
        "s3.endpoint": endpoint_url
        or environ.get("AWS_ENDPOINT_URL_S3", "")
        or environ.get("AWS_ENDPOINT_URL", ""),
        "s3.region": region
        or environ.get("AWS_REGION", "")
        or environ.get("AWS_DEFAULT_REGION", ""),
        "s3.access-key-id": access_key_id,
        "s3.secret-access-key": secret_access_key,
        "s3.session-token": session_token,
    }
    properties = {k: v for k, v in values.items() if v}
    if path_style:  # SeaweedFS, MinIO: buckets in the path, not in the host name
        properties["s3.force-virtual-addressing"] = "false"
    return properties


def settings_from_config(config: Any, environ: Mapping[str, str] | None = None) -> CatalogSettings:
    """CatalogSettings from a gravixd `Config` (the `iceberg_*` and `s3_*` keys)."""
    io: dict[str, str] = {}
    if config.store_url.startswith("s3://"):
        from ..stores.s3 import resolve_settings

        s3 = resolve_settings(
            config.store_url,
            environ if environ is not None else os.environ,
            s3_endpoint_url=config.s3_endpoint_url,
            s3_region=config.s3_region,
            s3_path_style=config.s3_path_style,
            s3_access_key_id=config.s3_access_key_id,
            s3_secret_access_key=config.s3_secret_access_key,
        )
        io = s3_io_properties(
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            path_style=s3.path_style,
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
            session_token=s3.session_token,
        )
    return CatalogSettings(
        uri=config.iceberg_catalog_uri,
        name=config.iceberg_catalog_name,
        namespace=config.iceberg_namespace,
        token=config.iceberg_catalog_token,
        password=config.iceberg_catalog_password,
        warehouse=config.iceberg_catalog_warehouse,
        io_properties=io,
    )
