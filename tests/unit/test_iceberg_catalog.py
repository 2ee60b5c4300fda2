"""Catalog settings, sans I/O: URI forms, the password key, the S3 file IO properties."""

from __future__ import annotations

import pytest

from gravixd.errors import ConfigError
from gravixd.iceberg.catalog import (
    CatalogSettings,
    catalog_properties,
    check_settings,
    s3_io_properties,
)


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("sqlite:////var/lib/gravixd/catalog.db", "sql"),
        ("postgresql://gravix@db:5432/iceberg", "sql"),
        ("postgresql+psycopg2://gravix:pw@db/iceberg", "sql"),
        ("https://polaris.example:8181/api/catalog", "rest"),
        ("http://127.0.0.1:8181", "rest"),
    ],
)
def test_catalog_kinds(uri: str, kind: str) -> None:
    assert check_settings(CatalogSettings(uri=uri)) == kind


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("sqlite:///relative.db", "four slashes"),
        ("sqlite://host/x.db", "four slashes"),
        ("postgresql://gravix@db", "no host or database"),
        ("http://", "no host"),
        ("mysql://db/x", "got scheme `mysql`"),
    ],
)
def test_malformed_uris_name_the_key(uri: str, says: str) -> None:
    with pytest.raises(ConfigError, match="iceberg_catalog_uri") as caught:
        check_settings(CatalogSettings(uri=uri))
    assert says in str(caught.value)


def test_the_password_key_fills_a_uri_without_one() -> None:
    settings = CatalogSettings(uri="postgresql://gravix@db:5432/iceberg", password="p@ss/word")
    properties = catalog_properties(settings)
    assert properties["uri"] == "postgresql+psycopg2://gravix:p%40ss%2Fword@db:5432/iceberg"
    assert properties["type"] == "sql"
    assert "p@ss" not in repr(settings)


def test_a_rest_catalog_gets_its_token() -> None:
    settings = CatalogSettings(uri="https://cat.example/api", token="t0k", warehouse="gravix")
    assert catalog_properties(settings) == {
        "type": "rest",
        "uri": "https://cat.example/api",
        "token": "t0k",
        "warehouse": "gravix",
    }


def test_s3_io_properties_follow_the_store_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    properties = s3_io_properties(
        endpoint_url="http://127.0.0.1:8333", region="", path_style=True,
        access_key_id="AK", secret_access_key="SK",
    )  # fmt: skip
    assert properties == {
        "s3.endpoint": "http://127.0.0.1:8333",
        "s3.region": "eu-west-3",
        "s3.access-key-id": "AK",
        "s3.secret-access-key": "SK",
        "s3.force-virtual-addressing": "false",
    }
