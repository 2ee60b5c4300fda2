"""docker-compose.yml, the Prometheus scrape config and the Dockerfile, each checked by the
tool that consumes it (no Docker engine on these machines: the image itself is not built)."""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon import free_port
from deploy_helpers import ROOT, require_tool

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_validates_against_the_compose_spec() -> None:
    tool = require_tool("check-jsonschema")
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _bind_sources(service: dict[str, Any]) -> Iterator[str]:
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source = volume.split(":")[0]
            if source.startswith((".", "/", "~")):
                yield source
        elif volume.get("type") == "bind":
            yield volume["source"]


def test_every_mounted_file_exists() -> None:
    checked = 0
    for name, service in _compose()["services"].items():
        for source in _bind_sources(service):
            assert (ROOT / source).exists(), f"service {name!r} mounts {source}, which is missing"
            checked += 1
        build = service.get("build")
        if build:
            context = ROOT / build.get("context", ".")
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
    assert checked >= 4  # prometheus.yml, grafana provisioning, dashboards, trino catalog


def test_gravixd_service_is_reachable_and_read_only() -> None:
    gravixd = _compose()["services"]["gravixd"]
    assert gravixd["read_only"] is True
    env = gravixd["environment"]
    for key in ("GRAVIXD_HTTP_LISTEN", "GRAVIXD_TCP_LISTEN", "GRAVIXD_METRICS_LISTEN"):
        assert env[key].startswith("0.0.0.0:"), key  # reachable from other containers
    assert env["GRAVIXD_STORE_URL"].startswith("s3://gravix/")
    # Host ports stay on loopback: the local credentials must not face a network.
    for service in _compose()["services"].values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def test_prometheus_scrapes_gravixd_side_port() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = jobs["gravixd"]["static_configs"][0]["targets"]
    port = _compose()["services"]["gravixd"]["environment"]["GRAVIXD_METRICS_LISTEN"]
    assert targets == [f"gravixd:{port.rpartition(':')[2]}"]


@pytest.mark.prometheus
def test_promtool_checks_the_compose_scrape_config() -> None:
    promtool = require_tool("promtool")
    done = subprocess.run(
        [promtool, "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_trino_catalog_points_at_the_compose_bucket_and_catalog() -> None:
    props = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy/trino/catalog/iceberg.properties").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert props["connector.name"] == "iceberg"
    assert props["iceberg.catalog.type"] == "jdbc"
    assert props["s3.endpoint"] == "http://minio:9000"
    minio_env = _compose()["services"]["minio"]["environment"]
    assert props["s3.aws-access-key"] == minio_env["MINIO_ROOT_USER"]
    assert props["s3.aws-secret-key"] == minio_env["MINIO_ROOT_PASSWORD"]
    store_url = _compose()["services"]["gravixd"]["environment"]["GRAVIXD_STORE_URL"]
    bucket = store_url.split("/")[2]
    assert props["iceberg.jdbc-catalog.default-warehouse-dir"].startswith(f"s3://{bucket}/")


# --- Dockerfile ---------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint")
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_image_runs_as_numeric_non_root_user() -> None:
    users = [rest for keyword, rest in _instructions() if keyword == "USER"]
    assert users[-1] == "10001:10001"


def test_image_entrypoint_is_gravixd_serve() -> None:
    instructions = dict(_instructions())  # the last of each keyword wins, as in Docker
    assert instructions["ENTRYPOINT"] == '["gravixd"]'
    assert instructions["CMD"] == '["serve"]'


class _Livez(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.send_response(200 if self.path == "/livez" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _healthcheck(env: dict[str, str]) -> int:
    """Run the image's HEALTHCHECK script as Docker would, with only `env`."""
    instruction = dict(_instructions())["HEALTHCHECK"]
    argv = json.loads(instruction[instruction.index("CMD") + 3 :].strip())
    assert argv == ["python", "/usr/local/lib/gravixd/healthcheck.py"]
    script = ROOT / "deploy/container/healthcheck.py"
    assert f"COPY deploy/container/healthcheck.py {argv[1]}" in DOCKERFILE.read_text()
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, timeout=30, check=False
    )
    return done.returncode


def test_healthcheck_asks_livez_on_the_configured_port(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Livez)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    config = tmp_path / "gravixd.toml"
    config.write_text(f'metrics_listen = "0.0.0.0:{port}"\n')
    try:
        assert _healthcheck({"GRAVIXD_CONFIG": str(config)}) == 0  # as in the image
        assert _healthcheck({"GRAVIXD_METRICS_LISTEN": f"127.0.0.1:{port}"}) == 0  # env wins
    finally:
        server.shutdown()
        server.server_close()
    assert _healthcheck({"GRAVIXD_METRICS_LISTEN": f"0.0.0.0:{free_port()}"}) == 1


def test_image_default_config_is_valid_for_gravixd() -> None:
    from gravixd.config import load

    path = ROOT / "deploy/container/gravixd.toml"
    assert "COPY deploy/container/gravixd.toml /etc/gravixd/gravixd.toml" in DOCKERFILE.read_text()
    assert "GRAVIXD_CONFIG=/etc/gravixd/gravixd.toml" in DOCKERFILE.read_text()
    loaded = load({}, {"GRAVIXD_CONFIG": str(path)}).config
    assert loaded.http_listen == "0.0.0.0:8088"
    assert loaded.metrics_listen == "0.0.0.0:9108"
    assert loaded.spool_dir.startswith("/var/lib/gravixd/")  # the image's VOLUME


def test_compose_environment_is_valid_for_gravixd() -> None:
    from gravixd.config import load

    env = {k: str(v) for k, v in _compose()["services"]["gravixd"]["environment"].items()}
    loaded = load({}, {**env, "GRAVIXD_CONFIG": str(ROOT / "deploy/container/gravixd.toml")})
    assert loaded.config.store_url == "s3://gravix/events"
    assert loaded.sources["store_url"] == "env GRAVIXD_STORE_URL"  # env beats the image file


def test_dockerignore_keeps_what_the_wheel_build_needs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in ("pyproject.toml", "README.md", "setup.py", "gravixd", "native", "proto"):
        assert needed not in ignored
    assert {".git", "tests"} <= ignored


def test_compose_tcp_listeners_are_configured_and_published() -> None:
    """Compose configures gravixd by environment, which cannot say [[tcp_listeners]]: the
    mounted config file adds docs/shippers.md's events listener, and every TCP listener
    gravixd will open is published on the host (compose could set no listener at all)."""
    from gravixd.config import load

    service = _compose()["services"]["gravixd"]
    mounts = dict(
        m.split(":")[:2] for m in service["volumes"] if isinstance(m, str) and m.startswith("./")
    )
    by_target = {target: source for source, target in mounts.items()}
    config_file = ROOT / by_target["/etc/gravixd/gravixd.toml"]
    env = {k: str(v) for k, v in service["environment"].items()}
    loaded = load({}, {**env, "GRAVIXD_CONFIG": str(config_file)}).config
    listeners = {(t.listen, t.stream, t.framing) for t in loaded.tcp_listeners}
    assert ("0.0.0.0:5171", "events", "ndjson") in listeners
    published = {str(p).split(":")[-1] for p in service["ports"]}
    for listen in [loaded.tcp_listen, *(t.listen for t in loaded.tcp_listeners)]:
        assert listen.rsplit(":", 1)[1] in published, f"{listen} is not published"
