"""Shared helpers for the deployment artifact tests (compose, chart, dashboard, systemd).

Imported as a plain module: pytest puts this folder on sys.path (tests have no packages)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "chart" / "dashboards" / "gravix-internals.json"

# Prometheus' own per-target series.
PROMETHEUS_SERIES = frozenset({"up"})
_REGISTER_GAUGES = re.compile(r"register_gauges\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"")


def scrape_time_gauges() -> set[str]:
    """Gauges the runtime registers with Metrics.register_gauges (read at scrape time),
    found in its source so that a renamed gauge breaks the dashboard test."""
    names: set[str] = set()
    for path in (ROOT / "gravixd").rglob("*.py"):
        names.update(_REGISTER_GAUGES.findall(path.read_text()))
    return names


def require_tool(name: str) -> str:
    """The tool's path; a missing one fails (CI installs it via scripts/install-tools or
    the `test` extra), it is never a silent skip."""
    path = shutil.which(name)
    assert path, f"{name} not found: run scripts/install-tools and pip install -e '.[test]'"
    return path


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query of every panel."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def concrete_promql(expr: str, rate_window: str = "1m") -> str:
    """Grafana's variables replaced as Grafana would, so Prometheus can run it."""
    return (
        expr.replace("$__rate_interval", rate_window)
        .replace("$__interval", rate_window)
        .replace("$instance", ".+")
        .replace("$job", "gravixd")  # the job name of deploy/prometheus/prometheus.yml
    )


_METRIC_IN_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")


def metric_names_in(expr: str) -> set[str]:
    """Metric names of a dashboard expression: every one is written with a `{...}` selector
    (the $instance filter), which the dashboard test enforces."""
    return set(_METRIC_IN_SELECTOR.findall(expr))


def exported_sample_names() -> set[str]:
    """Every sample name gravixd's Metrics can export, labelled or not, as Prometheus sees
    them (prometheus_client adds _total, _bucket/_sum/_count, _info)."""
    from gravixd.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "info": ("_info",),
        }.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names | scrape_time_gauges()
