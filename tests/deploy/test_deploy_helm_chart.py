"""The Helm chart through Helm's own library (helm-python-sdk: lint, schema, render), its
manifests through the Kubernetes API schemas (kubernetes-validate, strict), and its
gravixd.toml through gravixd's own config loader."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from deploy_helpers import DASHBOARD, ROOT

from gravixd import config as gravixd_config

CHART = ROOT / "chart"
# The chart's kubeVersion floor, and the newest Kubernetes the validator knows.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
SECRET_CONFIG_KEYS = {
    "s3_access_key_id", "s3_secret_access_key", "auth_tokens",
    # From the iceberg.* Secret (GRAVIXD_ICEBERG_CATALOG_URI), never the ConfigMap.
    "iceberg_catalog_uri", "iceberg_catalog_password", "iceberg_catalog_token",
}  # fmt: skip

NON_DEFAULT: dict[str, dict[str, Any]] = {
    "production": {
        "replicaCount": 3,
        "image": {"tag": "0.1.0-rc1", "pullPolicy": "Always"},
        "config": {
            "store_url": "s3://gravix-events/prod",
            "s3_region": "eu-west-1",
            "segment_format": "parquet",
            "segment_max_bytes": 134217728,
            "max_body_bytes": "16MiB",
            "segment_max_age_seconds": 30.5,
            "upload_concurrency": 4,
            "drain_timeout_seconds": 45,
            # Tokens (auth.existingSecret) beside raw TCP, which has none: a trusted network.
            "tcp_allow_unauthenticated": True,
            "tcp_listeners": [
                {"listen": "0.0.0.0:5171", "stream": "events", "framing": "protobuf"}
            ],
        },
        "s3": {"existingSecret": "gravix-s3"},
        "auth": {"existingSecret": "gravix-tokens"},
        "spool": {"type": "persistentVolumeClaim", "size": "50Gi", "storageClassName": "fast"},
        "terminationGracePeriodSeconds": 60,
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1},
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kps"}},
        "dashboard": {"enabled": True},
        "rollup": {"enabled": True},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "gravixd"}},
            }
        ],
    },
    # The query side: Trino (coordinator + 2 workers) and Cube over the same bucket/Secret.
    "query": {
        "config": {
            "store_url": "s3://gravix/events",
            "s3_endpoint_url": "http://minio.minio.svc:9000",
            "s3_path_style": True,
            "segment_format": "parquet",
        },
        "s3": {"existingSecret": "gravix-s3"},
        "iceberg": {"existingSecret": "gravix-iceberg"},
        "rollup": {"enabled": True},
        "trino": {
            "enabled": True,
            "store": {
                "url": "s3://gravix/events",
                "endpoint": "http://minio.minio.svc:9000",
                "pathStyle": True,
                "existingSecret": "gravix-s3",
            },
            "icebergCatalog": {
                "jdbcUrl": "jdbc:postgresql://catalog.gravix.svc:5432/gravix",
                "existingSecret": "gravix-iceberg",
            },
            "worker": {"replicas": 2},
        },
        "cube": {"enabled": True, "apiSecret": {"existingSecret": "gravix-cube"}},
    },
    "minio-trial-emptydir": {
        "config": {
            "store_url": "s3://gravix/events",
            "s3_endpoint_url": "http://minio.minio.svc:9000",
            "s3_path_style": True,
            "tcp_listen": "",
        },
        "s3": {"create": True, "accessKeyId": "gravix-local", "secretAccessKey": "local-only"},
        "spool": {"type": "emptyDir"},
        "podDisruptionBudget": {"enabled": False},
        "serviceAccount": {"create": False},
    },
}

BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "replicas not a number": ({"replicaCount": "two"}, "/replicaCount"),
    "unknown pull policy": ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "misspelt config key": ({"config": {"spool_dri": "/var/lib/gravixd/x"}}, "spool_dri"),
    "secret in the ConfigMap": ({"config": {"s3_secret_access_key": "x"}}, "s3_secret_access_key"),
    "bad segment format": ({"config": {"segment_format": "csv"}}, "/config/segment_format"),
    "listen without a port": ({"config": {"http_listen": "0.0.0.0"}}, "/config/http_listen"),
    "spool off the volume": ({"config": {"spool_dir": "/data/spool"}}, "/config/spool_dir"),
    "negative drain": ({"config": {"drain_timeout_seconds": -1}}, "drain_timeout_seconds"),
    "unknown spool type": ({"spool": {"type": "hostPath"}}, "/spool/type"),
    "privilege escalation": (
        {"securityContext": {"allowPrivilegeEscalation": True}},
        "allowPrivilegeEscalation",
    ),
    "writable root fs": ({"securityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRoot"),
    "root user": ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
    "created secret without keys": ({"s3": {"create": True}}, "/s3/accessKeyId"),
    "rollup over a file store": ({"rollup": {"enabled": True}}, "/config/store_url"),
    "both PDB bounds": (
        {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
        "podDisruptionBudget",
    ),
    "unknown top-level value": ({"replicas": 2}, "replicas"),
}


def _query_with(**subcharts: dict[str, Any]) -> dict[str, Any]:
    """The "query" value set with some subchart values changed (a disabled subchart's values
    are not checked, so bad ones are tried on an otherwise valid, enabled query side)."""
    values = json.loads(json.dumps(NON_DEFAULT["query"]))
    for name, changes in subcharts.items():
        values[name].update(changes)
    return values


BAD_VALUES.update(
    {
        "trino workers not a number": (
            _query_with(trino={"worker": {"replicas": "two"}}),
            "replicas",
        ),
        "trino root user": (
            _query_with(trino={"podSecurityContext": {"runAsNonRoot": False}}),
            "runAsNonRoot",
        ),
        "trino catalog type overridden": (
            _query_with(trino={"catalogProperties": {"iceberg.catalog.type": "hive_metastore"}}),
            "invalid propertyName 'iceberg.catalog.type'",
        ),
        "cube writable root fs": (
            _query_with(cube={"securityContext": {"readOnlyRootFilesystem": False}}),
            "readOnlyRoot",
        ),
        "cube unknown value": (_query_with(cube={"replica": 2}), "replica"),
    }
)


@pytest.fixture
def chart() -> Iterator[helm.Chart]:
    # Loaded for each test: rendering with a subchart disabled drops it from the loaded
    # chart (Helm processes dependencies in place), so a shared handle would render later
    # value sets without Trino and Cube.
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def _documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in rendered.items():
        if path.endswith(".txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def _render(chart: helm.Chart, values: dict[str, Any] | None) -> list[dict[str, Any]]:
    return _documents(chart.render(values, name="gravix", namespace="observability"))


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("StatefulSet", "Deployment"):
            yield doc["kind"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc["kind"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


VALUE_SETS = {"defaults": None, **NON_DEFAULT}


# --- lint and schema ------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict_is_clean(name: str) -> None:
    report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace="observability")
    assert report["errors"] == [], report
    assert [m for m in report["messages"] if m["severity"] >= 2] == [], report


@pytest.mark.parametrize("case", BAD_VALUES)
def test_values_schema_rejects(chart: helm.Chart, case: str) -> None:
    values, named = BAD_VALUES[case]
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name="gravix", namespace="observability")
    assert named in str(caught.value)


def test_schema_config_keys_are_gravixd_config_keys() -> None:
    """A key gravixd gains or drops must show up here, or the chart would reject or pass
    it wrongly."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = set(schema["properties"]["config"]["properties"])
    assert allowed == set(gravixd_config._FIELDS) - SECRET_CONFIG_KEYS


# --- rendered manifests ---------------------------------------------------------------------


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_manifests_validate_strictly(chart: helm.Chart, name: str, kube_version: str) -> None:
    docs = _render(chart, VALUE_SETS[name])
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked against the operator's fields below
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {str(exc).splitlines()[0]}")
        checked += 1
    assert checked >= 5


def test_service_monitor_scrapes_the_side_port(chart: helm.Chart) -> None:
    docs = _render(chart, NON_DEFAULT["production"])
    (monitor,) = _by_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s",
                        "scrapeTimeout": "10s"}  # fmt: skip
    services = [s for s in _by_kind(docs, "Service") if s["spec"].get("clusterIP") != "None"]
    (service,) = services
    assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("name", VALUE_SETS)
def test_pods_meet_pod_security_restricted(chart: helm.Chart, name: str) -> None:
    """The rules of the Pod Security Standards' "restricted" profile."""
    for kind, spec in _pod_specs(_render(chart, VALUE_SETS[name])):
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", kind
        assert "hostNetwork" not in spec and "hostPID" not in spec and "hostIPC" not in spec
        for volume in spec.get("volumes", []):
            assert "hostPath" not in volume, kind
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, kind
            assert sc["capabilities"]["drop"] == ["ALL"], kind
            assert not sc["capabilities"].get("add"), kind
            assert sc["readOnlyRootFilesystem"] is True, kind
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, kind
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, kind
            assert "privileged" not in sc or sc["privileged"] is False


def _load_as_the_pod_does(docs: list[dict[str, Any]], tmp: Path) -> gravixd_config.Config:
    """The rendered gravixd.toml loaded with the container's GRAVIXD_* environment, the
    mounted files (config, auth tokens) written under tmp: what gravixd checks at start."""
    (config_map,) = [c for c in _by_kind(docs, "ConfigMap") if "gravixd.toml" in c["data"]]
    (statefulset,) = _by_kind(docs, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith("GRAVIXD_")}
    config_path = tmp / "gravixd.toml"
    config_path.write_text(config_map["data"]["gravixd.toml"])
    env["GRAVIXD_CONFIG"] = str(config_path)
    if "GRAVIXD_AUTH_TOKENS_FILE" in env:  # the Secret's key, one token a line
        tokens_path = tmp / "tokens"
        tokens_path.write_text("gravix-test-token-1\n")
        env["GRAVIXD_AUTH_TOKENS_FILE"] = str(tokens_path)
    if "GRAVIXD_ICEBERG_CATALOG_URI_FILE" in env:  # the iceberg Secret's key
        uri_path = tmp / "iceberg-uri"
        uri_path.write_text("postgresql://gravix:x@catalog.gravix.svc:5432/gravix\n")
        env["GRAVIXD_ICEBERG_CATALOG_URI_FILE"] = str(uri_path)
    return gravixd_config.load({}, env).config


@pytest.mark.parametrize("name", VALUE_SETS)
def test_config_map_is_a_valid_gravixd_config(chart: helm.Chart, name: str) -> None:
    docs = _render(chart, VALUE_SETS[name])
    with tempfile.TemporaryDirectory() as tmp:
        loaded = _load_as_the_pod_does(docs, Path(tmp))
    for key, value in ((VALUE_SETS[name] or {}).get("config") or {}).items():
        if key == "tcp_listeners":
            assert [listener.listen for listener in loaded.tcp_listeners] == [
                v["listen"] for v in value
            ]
        elif not isinstance(value, str) or not value.endswith("MiB"):
            assert getattr(loaded, key) == value, key


@pytest.mark.parametrize("name", VALUE_SETS)
def test_probes_ports_and_grace_period(chart: helm.Chart, name: str) -> None:
    docs = _render(chart, VALUE_SETS[name])
    (statefulset,) = _by_kind(docs, "StatefulSet")
    spec = statefulset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 9108
    config = {**json.loads(json.dumps(yaml.safe_load((CHART / "values.yaml").read_text())))}
    drain = ((VALUE_SETS[name] or {}).get("config") or {}).get(
        "drain_timeout_seconds", config["config"]["drain_timeout_seconds"]
    )
    assert spec["terminationGracePeriodSeconds"] > drain
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/gravixd", "/etc/gravixd", "/tmp"} <= mounts


def test_grace_period_below_the_drain_deadline_fails(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match="drain_timeout_seconds"):
        chart.render({"terminationGracePeriodSeconds": 10}, name="gravix")


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({}, "config.tcp_listen"),  # the default 0.0.0.0:5170
        ({"tcp_listen": "[::]:5170"}, "config.tcp_listen"),
        (
            {"tcp_listen": "", "tcp_listeners": [{"listen": "0.0.0.0:5171", "stream": "events"}]},
            "config.tcp_listeners[0].listen",
        ),
    ],
)
def test_tokens_beside_open_raw_tcp_fail_at_render(
    chart: helm.Chart, config: dict[str, Any], named: str
) -> None:
    """gravixd refuses bearer tokens beside a raw TCP port other hosts can reach (TCP has no
    auth): the chart says so at `helm install`, naming the values, not as a crash loop."""
    values = {"auth": {"existingSecret": "gravix-tokens"}, "config": config}
    with pytest.raises(helm.HelmRenderError) as caught:
        chart.render(values, name="gravix")
    message = str(caught.value)
    assert named in message and "tcp_allow_unauthenticated: true" in message
    assert "auth.existingSecret" in message


@pytest.mark.parametrize(
    "config",
    [
        {"tcp_listen": ""},
        {"tcp_listen": "127.0.0.1:5170"},
        {"tcp_allow_unauthenticated": True},
    ],
)
def test_tokens_with_closed_or_allowed_raw_tcp_start(
    chart: helm.Chart, config: dict[str, Any]
) -> None:
    docs = _render(chart, {"auth": {"existingSecret": "gravix-tokens"}, "config": config})
    with tempfile.TemporaryDirectory() as tmp:
        loaded = _load_as_the_pod_does(docs, Path(tmp))
    assert loaded.auth_tokens_file and loaded.tcp_listen == config.get("tcp_listen", "0.0.0.0:5170")


def test_s3_credentials_come_from_a_secret(chart: helm.Chart) -> None:
    for name, secret_name in (("production", "gravix-s3"), ("minio-trial-emptydir", None)):
        docs = _render(chart, NON_DEFAULT[name])
        (statefulset,) = _by_kind(docs, "StatefulSet")
        env = {
            e["name"]: e for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]
        }
        ref = env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
        if secret_name is None:  # created by the chart
            (secret,) = _by_kind(docs, "Secret")
            assert ref["name"] == secret["metadata"]["name"]
            assert secret["stringData"][ref["key"]] == "local-only"
        else:
            assert ref["name"] == secret_name and not _by_kind(docs, "Secret")
    default_env = _by_kind(_render(chart, None), "StatefulSet")[0]["spec"]["template"]["spec"]
    assert "AWS_SECRET_ACCESS_KEY" not in {e["name"] for e in default_env["containers"][0]["env"]}


def test_spool_is_a_claim_or_an_empty_dir(chart: helm.Chart) -> None:
    (pvc_set,) = _by_kind(_render(chart, NON_DEFAULT["production"]), "StatefulSet")
    (claim,) = pvc_set["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"
    (empty_set,) = _by_kind(_render(chart, NON_DEFAULT["minio-trial-emptydir"]), "StatefulSet")
    assert "volumeClaimTemplates" not in empty_set["spec"]
    volumes = {v["name"]: v for v in empty_set["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["spool"]


def test_dashboard_config_map_carries_the_canonical_file(chart: helm.Chart) -> None:
    docs = _render(chart, NON_DEFAULT["production"])
    (board,) = [
        c for c in _by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(board["data"]["gravix-internals.json"]) == json.loads(DASHBOARD.read_text())
    assert not [c for c in _by_kind(_render(chart, None), "ConfigMap") if "dashboard" in str(c)]


def test_rollup_cron_job_runs_gravixd_rollup(chart: helm.Chart) -> None:
    (cron,) = _by_kind(_render(chart, NON_DEFAULT["production"]), "CronJob")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "rollup"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_notes_warn_about_a_local_store(chart: helm.Chart) -> None:
    notes = chart.render(None, name="gravix", namespace="obs")["gravixd/templates/NOTES.txt"]
    assert "WARNING: config.store_url is file://" in notes
    notes = chart.render(NON_DEFAULT["production"], name="gravix")["gravixd/templates/NOTES.txt"]
    assert "WARNING" not in notes and "/v1/facts" in notes


@pytest.mark.parametrize(
    ("workers", "said"),
    [(None, None), (1, None), (3, "3 worker processes"), (0, "one worker process per CPU")],
)
def test_workers_reach_the_config_and_the_notes(
    chart: helm.Chart, workers: int | None, said: str | None
) -> None:
    values = None if workers is None else {"config": {"workers": workers}}
    config_maps = _by_kind(_render(chart, values), "ConfigMap")
    (toml,) = [m["data"]["gravixd.toml"] for m in config_maps if "gravixd.toml" in m["data"]]
    assert f"workers = {1 if workers is None else workers}" in toml
    rendered = chart.render(values, name="gravix", namespace="obs")
    notes = rendered["gravixd/templates/NOTES.txt"]
    if said is None:
        assert "worker process" not in notes
    else:
        assert said in notes and "resources.requests.cpu" in notes


# --- the documented sidecar pattern -----------------------------------------------------------


@pytest.mark.parametrize("kube_version", ("1.29.0", kubernetes_validate.latest_version()))
def test_sidecar_example_validates(kube_version: str) -> None:
    for doc in yaml.safe_load_all((ROOT / "deploy/kubernetes/sidecar.yaml").read_text()):
        kubernetes_validate.validate(doc, kube_version, strict=True)


def test_sidecar_example_settings_are_valid_for_gravixd() -> None:
    (deployment,) = yaml.safe_load_all((ROOT / "deploy/kubernetes/sidecar.yaml").read_text())
    (sidecar,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: outlives the app
    env = {e["name"]: e["value"] for e in sidecar["env"] if e["name"].startswith("GRAVIXD_")}
    loaded = gravixd_config.load({}, env).config
    assert loaded.http_listen.startswith("127.0.0.1:")


# --- the documented install commands ---------------------------------------------------------

_HELM_INSTALL = re.compile(r"helm install gravix \./chart((?:[ \t]+(?:\\\n)?[ \t]*--set [^\s`]+)*)")


def _set_values(flags: str) -> dict[str, Any]:
    """Helm's `--set a.b=c,d=e` as values: true/false and integers typed as Helm types them."""
    values: dict[str, Any] = {}
    for assignment in ",".join(re.findall(r"--set ([^\s`]+)", flags)).split(",") if flags else []:
        path, _, text = assignment.partition("=")
        value: Any = {"true": True, "false": False}.get(text, text)
        if re.fullmatch(r"-?[0-9]+", text):
            value = int(text)
        *parents, leaf = path.split(".")
        node = values
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


DOCUMENTED_INSTALLS = [
    pytest.param(_set_values(match[1]), id=f"{path.name}-{i}")
    for path in (ROOT / "README.md", ROOT / "docs" / "deployment.md")
    for i, match in enumerate(_HELM_INSTALL.finditer(path.read_text()))
]


@pytest.mark.parametrize("values", DOCUMENTED_INSTALLS)
def test_documented_helm_install_commands_render(chart: helm.Chart, values: dict[str, Any]) -> None:
    """Each `helm install gravix ./chart --set ...` of README.md and docs/deployment.md renders
    as written, and its gravixd.toml starts gravixd."""
    docs = _render(chart, values)
    with tempfile.TemporaryDirectory() as tmp:
        _load_as_the_pod_does(docs, Path(tmp))


def test_every_documented_install_command_is_checked() -> None:
    assert len(DOCUMENTED_INSTALLS) >= 3


def test_extra_tcp_listeners_get_container_and_service_ports(chart: helm.Chart) -> None:
    """docs/shippers.md's events listener, set in config.tcp_listeners, is reachable through
    the Service (it had no containerPort and no Service port); a loopback one, reachable
    only inside the pod, gets neither."""
    listeners = [
        {"listen": "0.0.0.0:5171", "stream": "events", "framing": "ndjson"},
        {"listen": "127.0.0.1:5172", "stream": "facts", "framing": "protobuf"},
        {"listen": "[::]:5173", "stream": "facts", "framing": "protobuf"},
    ]
    docs = _render(chart, {"config": {"tcp_listeners": listeners}})
    (statefulset,) = _by_kind(docs, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_ports == {
        "http": 8088,
        "tcp-ingest": 5170,
        "tcp-events-0": 5171,
        "tcp-facts-2": 5173,
        "metrics": 9108,
    }
    service = next(s for s in _by_kind(docs, "Service") if "clusterIP" not in s["spec"])
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert service_ports["tcp-events-0"] == (5171, "tcp-events-0")
    assert service_ports["tcp-facts-2"] == (5173, "tcp-facts-2")
    assert not any(port == 5172 for port, _ in service_ports.values())
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
