"""The query side of the Helm chart (the trino and cube subcharts) reads what gravixd writes:
the same bucket and Secrets, the same Iceberg catalog settings and upkeep SQL as the compose
stack (one upkeep file, which compose mounts from chart/), the same Cube model; its vendored
model copies cannot drift from deploy/. Rendered by Helm's own library;
lint, kubernetes-validate and Pod Security for these values are in test_deploy_helm_chart.py
(value set "query")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from deploy_helpers import ROOT
from test_deploy_helm_chart import NON_DEFAULT

CHART = ROOT / "chart"
QUERY = NON_DEFAULT["query"]


@pytest.fixture
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:  # fresh: a render may drop disabled subcharts
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for path, text in chart.render(values, name="gravix", namespace="observability").items():
        if not path.endswith(".txt"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    template = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return list(template["template"]["spec"]["containers"])


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def with_values(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(json.dumps(QUERY))
    for path, value in changes.items():
        node = values
        *parents, leaf = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


@pytest.mark.parametrize(
    ("copy", "source"),
    [
        *[
            (f"charts/cube/model/{p.name}", f"deploy/cube/model/{p.name}")
            for p in sorted((ROOT / "deploy/cube/model").glob("*.yml"))
        ],
    ],
)
def test_vendored_copies_are_identical_to_deploy(copy: str, source: str) -> None:
    # Helm reads only files inside the chart, so the chart carries copies.
    assert (CHART / copy).read_bytes() == (ROOT / source).read_bytes(), f"cp {source} chart/{copy}"


def test_no_model_file_is_left_out_of_the_chart() -> None:
    assert {p.name for p in (CHART / "charts/cube/model").glob("*.yml")} == {
        p.name for p in (ROOT / "deploy/cube/model").glob("*.yml")
    }


def test_both_subcharts_render_their_workloads(chart: helm.Chart) -> None:
    docs = render(chart, QUERY)
    coordinator = named(docs, "Deployment", "gravix-trino-coordinator")
    workers = named(docs, "Deployment", "gravix-trino-worker")
    assert (coordinator["spec"]["replicas"], workers["spec"]["replicas"]) == (1, 2)
    named(docs, "Service", "gravix-trino")
    named(docs, "CronJob", "gravix-trino-upkeep")
    named(docs, "Deployment", "gravix-cube-api")
    named(docs, "Deployment", "gravix-cube-refresh-worker")
    named(docs, "Deployment", "gravix-cube-store")
    named(docs, "Service", "gravix-cube")
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in containers(doc):
                assert c.get("livenessProbe") and c.get("readinessProbe"), doc["metadata"]["name"]
                assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]


def test_workers_and_no_workers(chart: helm.Chart) -> None:
    docs = render(chart, with_values(trino__worker={"replicas": 0}))
    assert not [d for d in docs if d["metadata"]["name"] == "gravix-trino-worker"]
    config = named(docs, "ConfigMap", "gravix-trino")["data"]["coordinator.properties"]
    assert "node-scheduler.include-coordinator=true" in config


def test_the_catalog_is_the_compose_catalog_over_the_same_bucket_and_secrets(
    chart: helm.Chart,
) -> None:
    docs = render(chart, QUERY)
    rendered = properties(
        named(docs, "ConfigMap", "gravix-trino-catalog")["data"]["iceberg.properties"]
    )
    compose = properties((ROOT / "deploy/trino/catalog/iceberg.properties").read_text())
    same = {
        "connector.name",
        "iceberg.catalog.type",
        "iceberg.jdbc-catalog.driver-class",
        "iceberg.jdbc-catalog.catalog-name",
        "iceberg.jdbc-catalog.schema-version",
        "iceberg.jdbc-catalog.connection-user",
        "fs.native-s3.enabled",
        "s3.path-style-access",
    }
    assert {k: rendered[k] for k in same} == {k: compose[k] for k in same}
    assert set(compose) <= set(rendered)
    assert rendered["iceberg.jdbc-catalog.catalog-name"] == "gravix"  # iceberg_catalog_name
    jdbc = QUERY["trino"]["icebergCatalog"]["jdbcUrl"]
    assert rendered["iceberg.jdbc-catalog.connection-url"] == jdbc
    assert rendered["iceberg.jdbc-catalog.connection-password"] == "${ENV:ICEBERG_CATALOG_PASSWORD}"
    assert rendered["iceberg.jdbc-catalog.default-warehouse-dir"] == "s3://gravix/warehouse"
    assert rendered["s3.endpoint"] == QUERY["config"]["s3_endpoint_url"]
    assert rendered["s3.aws-access-key"] == "${ENV:AWS_ACCESS_KEY_ID}"
    assert rendered["s3.aws-secret-key"] == "${ENV:AWS_SECRET_ACCESS_KEY}"

    (daemon,) = containers(named(docs, "StatefulSet", "gravix-gravixd"))
    for name in ("gravix-trino-coordinator", "gravix-trino-worker"):
        (trino,) = containers(named(docs, "Deployment", name))
        env = env_of(trino)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key] == env_of(daemon)[key], (name, key)  # same Secret, key
        password = env["ICEBERG_CATALOG_PASSWORD"]["secretKeyRef"]
        assert password == {"name": "gravix-iceberg", "key": "ICEBERG_CATALOG_PASSWORD"}
    # gravixd (daemon and rollup CronJob) reads its catalog URI from the same Secret, a file.
    daemon_env = env_of(daemon)
    assert daemon_env["GRAVIXD_ICEBERG_CATALOG_URI_FILE"] == (
        "/etc/gravixd-iceberg/ICEBERG_CATALOG_URI"
    )
    (rollup,) = containers(named(docs, "CronJob", "gravix-gravixd-rollup"))
    assert (
        env_of(rollup)["GRAVIXD_ICEBERG_CATALOG_URI_FILE"]
        == (daemon_env["GRAVIXD_ICEBERG_CATALOG_URI_FILE"])
    )
    volumes = named(docs, "StatefulSet", "gravix-gravixd")["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "iceberg",
        "secret": {"secretName": "gravix-iceberg", "defaultMode": 0o440},
    } in (volumes)


def test_the_upkeep_is_the_one_file_compose_runs(chart: helm.Chart) -> None:
    docs = render(chart, with_values(trino__upkeep={"retention": "14d"}))
    sql = named(docs, "ConfigMap", "gravix-trino-sql")["data"]["upkeep.sql"]
    source = (CHART / "charts/trino/files/upkeep.sql").read_text()
    assert sql.strip() == source.replace("RETENTION", "14d").strip()
    for table in ("iceberg.gravix.facts", "iceberg.gravix.events"):
        for procedure in ("optimize", "expire_snapshots", "remove_orphan_files"):
            assert f"ALTER TABLE {table} EXECUTE {procedure}" in sql
    (upkeep,) = containers(named(docs, "CronJob", "gravix-trino-upkeep"))
    command = " ".join(upkeep["command"])
    assert "--server http://gravix-trino:8080" in command
    assert "--file /sql/upkeep.sql" in command


def test_cube_queries_that_trino_with_the_shared_model(chart: helm.Chart) -> None:
    docs = render(chart, QUERY)
    model = named(docs, "ConfigMap", "gravix-cube-model")["data"]
    assert model == {
        p.name: p.read_text() for p in sorted((ROOT / "deploy/cube/model").glob("*.yml"))
    }
    compose_env = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["cube"][
        "environment"
    ]
    for name, worker in (("gravix-cube-api", False), ("gravix-cube-refresh-worker", True)):
        (cube,) = containers(named(docs, "Deployment", name))
        env = env_of(cube)
        assert env["CUBEJS_DB_TYPE"] == "trino"
        assert env["CUBEJS_DB_HOST"] == "gravix-trino"  # the Service above
        assert env["CUBEJS_DB_PORT"] == "8080"
        for key in ("CUBEJS_DB_PRESTO_CATALOG", "CUBEJS_DB_SCHEMA"):
            assert env[key] == compose_env[key]  # iceberg / gravix: the tables' catalog, schema
        assert env["CUBEJS_CUBESTORE_HOST"] == "gravix-cube-store"
        assert env["CUBEJS_API_SECRET"]["secretKeyRef"]["name"] == "gravix-cube"
        assert env["CUBEJS_DEV_MODE"] == "false"
        assert ("CUBEJS_REFRESH_WORKER" in env) is worker
        mounts = {m["mountPath"]: m["name"] for m in cube["volumeMounts"]}
        assert mounts["/cube/conf/model"] == "model"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            with_values(trino__store={**QUERY["trino"]["store"], "url": "s3://other/x"}),
            "trino.store.url",
        ),
        (
            with_values(trino__store={**QUERY["trino"]["store"], "existingSecret": "other"}),
            "trino.store.existingSecret",
        ),
        (with_values(config__segment_format="arrow"), "segment_format"),
        (with_values(iceberg={}), "iceberg.existingSecret"),
        (
            with_values(trino__icebergCatalog={"existingSecret": "gravix-iceberg"}),
            "trino.icebergCatalog.jdbcUrl",
        ),
        (with_values(trino__enabled=False), "cube.enabled: expected trino.enabled"),
        (with_values(cube__apiSecret={}), "cube.apiSecret"),
    ],
    ids=[
        "other bucket",
        "other secret",
        "arrow segments",
        "no catalog",
        "no JDBC URL",
        "cube without trino",
        "no api secret",
    ],
)
def test_a_query_side_that_would_read_the_wrong_thing_fails_to_render(
    chart: helm.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises((helm.HelmRenderError, helm.HelmValuesError), match=message):
        chart.render(values, name="gravix", namespace="observability")


def test_the_query_side_is_off_by_default(chart: helm.Chart) -> None:
    names = {d["metadata"]["name"] for d in render(chart, {})}
    assert not {n for n in names if "trino" in n or "cube" in n}
    assert Path(CHART / "Chart.yaml").read_text().count("condition:") == 2


# --- the compose stack's query side -----------------------------------------------------------


def test_compose_runs_the_catalog_cube_on_the_model_and_scheduled_upkeep() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    gravixd = services["gravixd"]["environment"]
    # gravixd commits to the catalog Trino reads: same PostgreSQL, database and user.
    uri = gravixd["GRAVIXD_ICEBERG_CATALOG_URI"]
    catalog = properties((ROOT / "deploy/trino/catalog/iceberg.properties").read_text())
    assert uri.startswith("postgresql://gravix:") and uri.endswith("@catalog:5432/gravix")
    assert catalog["iceberg.jdbc-catalog.connection-url"] == "jdbc:postgresql://catalog:5432/gravix"
    password = services["catalog"]["environment"]["POSTGRES_PASSWORD"]
    assert f":{password}@" in uri
    assert catalog["iceberg.jdbc-catalog.connection-password"] == password
    # Daemons upload, one committer (`gravixd rollup` on a loop) commits and compacts.
    committer = services["rollup"]
    assert gravixd["GRAVIXD_ICEBERG_COMMIT"] == "rollup"
    for key, value in gravixd.items():
        if key.startswith(("GRAVIXD_STORE", "GRAVIXD_S3_", "GRAVIXD_ICEBERG_", "AWS_")):
            assert committer["environment"][key] == value, key
    assert "gravixd rollup" in committer["entrypoint"][-1]
    assert "sleep 60" in committer["entrypoint"][-1]
    assert services["catalog"]["healthcheck"]
    assert services["gravixd"]["depends_on"]["catalog"]["condition"] == "service_healthy"
    for name in ("cube", "cube-refresh-worker"):
        cube = services[name]
        assert "./deploy/cube/model:/cube/conf/model:ro" in cube["volumes"]
        assert cube["environment"]["CUBEJS_DB_TYPE"] == "trino"
        assert cube["environment"]["CUBEJS_DB_HOST"] == "trino"
        assert cube["environment"]["CUBEJS_CUBESTORE_HOST"] in services
        assert cube["image"].split(":")[1].startswith("v")  # pinned, not latest
    assert services["cube-refresh-worker"]["environment"]["CUBEJS_REFRESH_WORKER"] == "true"
    upkeep = services["trino-upkeep"]
    assert "./chart/charts/trino/files/upkeep.sql:/etc/trino/upkeep.sql:ro" in upkeep["volumes"]
    script = upkeep["entrypoint"][-1]
    assert "s/RETENTION/7d/" in script and "--file /tmp/upkeep.sql" in script
    assert "sleep 3600" in script
    mounted = {v.split(":")[1] for v in services["trino"]["volumes"]}
    assert mounted == {"/etc/trino/catalog/iceberg.properties"}


def test_notes_say_how_to_reach_trino_and_cube(chart: helm.Chart) -> None:
    notes = chart.render(QUERY, name="gravix", namespace="obs")["gravixd/templates/NOTES.txt"]
    assert "port-forward svc/gravix-trino 8080" in notes
    assert "iceberg.gravix.facts" in notes
    assert "port-forward svc/gravix-cube 4000" in notes
