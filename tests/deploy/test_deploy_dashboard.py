"""The "Gravix Internals" dashboard: valid PromQL (checked by promtool) over metrics gravixd
really exports, and the one canonical file that compose and the chart both use."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_helpers import (
    DASHBOARD,
    PROMETHEUS_SERIES,
    ROOT,
    concrete_promql,
    dashboard,
    dashboard_targets,
    exported_sample_names,
    metric_names_in,
    require_tool,
)

# What issue 7 asks the dashboard to show, as the metric each topic needs.
REQUIRED_METRICS = {
    "request rate by endpoint and code": "ingestion_requests_total",
    "latency percentiles": "ingestion_latency_seconds_bucket",
    "events accepted": "ingestion_events_accepted_total",
    "events rejected": "ingestion_events_rejected_total",
    "fsync latency": "spool_fsync_duration_seconds_bucket",
    "spool bytes": "spool_bytes",
    "segments sealed": "spool_segments_sealed_total",
    "segments uploaded": "upload_segments_total",
    "upload errors": "upload_errors_total",
    "upload retries": "upload_retries_total",
    "rotation errors": "batch_rotation_errors_total",
    "readiness": "gravixd_ready",
}


def test_identity() -> None:
    board = dashboard()
    assert board["title"] == "Gravix Internals"
    assert board["uid"] == "gravix-internals"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_panel_queries_through_the_datasource_variable() -> None:
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_every_metric_exists_in_gravixd() -> None:
    known = exported_sample_names() | PROMETHEUS_SERIES
    for title, expr in dashboard_targets():
        names = metric_names_in(expr)
        assert names, f"{title!r}: expected a metric with an {{instance=~...}} selector in {expr}"
        unknown = names - known
        assert not unknown, f"{title!r}: {sorted(unknown)} are not exported by gravixd ({expr})"


@pytest.mark.parametrize(("topic", "metric"), sorted(REQUIRED_METRICS.items()))
def test_required_topic_is_on_the_dashboard(topic: str, metric: str) -> None:
    used = set().union(*(metric_names_in(expr) for _, expr in dashboard_targets()))
    assert metric in used, f"no panel shows {topic} ({metric})"


@pytest.mark.prometheus
def test_promtool_parses_every_expression(tmp_path: Path) -> None:
    """promtool check rules runs Prometheus' own PromQL parser over each expression."""
    promtool = require_tool("promtool")
    rules = [
        {"record": f"gravix:dashboard_expr_{i}", "expr": concrete_promql(expr)}
        for i, (_, expr) in enumerate(dashboard_targets())
    ]
    rule_file = tmp_path / "dashboard-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_compose_and_chart_use_the_same_file() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert any(m.split(":")[0] == "./chart/dashboards" for m in mounts if isinstance(m, str))
    assert DASHBOARD.parent == ROOT / "chart" / "dashboards"
    # The chart packages it with .Files.Get: no second copy may exist.
    copies = [p for p in ROOT.rglob("*.json") if p.name == DASHBOARD.name]
    assert copies == [DASHBOARD]


# Aggregations that add instances up (or pick the worst of them): several gravixd instances
# on one host (reuse_port) or a fleet are one service on this dashboard.
_ACROSS_INSTANCES = ("sum(", "sum by (", "min(", "max(", "max by (", "count(")


@pytest.mark.parametrize(("title", "expr"), dashboard_targets())
def test_every_query_aggregates_across_instances(title: str, expr: str) -> None:
    inner = expr.removeprefix("time() - ")
    if inner.startswith("histogram_quantile("):
        # Buckets summed over every instance before the quantile, never per-instance quantiles.
        inner = inner.split(", ", 1)[1]
        assert re.match(r"sum by \((\w+, )*le\) ", inner), (title, expr)
    assert inner.startswith(_ACROSS_INSTANCES), (title, expr)


def test_the_dashboard_shows_instances_and_connection_limits() -> None:
    exprs = {expr for _, expr in dashboard_targets()}
    assert any(e.startswith("sum(up{") for e in exprs)  # how many instances answer
    for metric in ("ingestion_connections_rejected_total", "ingestion_accept_errors_total"):
        assert any(metric in e for e in exprs), metric


def test_instances_up_counts_only_gravixd_scrape_jobs() -> None:
    """`up` exists for every target Prometheus scrapes (Prometheus itself, node exporters):
    each `up` query selects the jobs that scrape gravixd, which the `job` variable lists
    from a metric only gravixd exports. (Counting every job, 5 gravixd showed as 6.)"""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["job"]["query"]["query"] == "label_values(gravixd_build_info, job)"
    # "All" must mean the listed (gravixd) jobs, never a catch-all regex.
    assert "allValue" not in variables["job"], variables["job"]
    assert 'job=~"$job"' in variables["instance"]["query"]["query"]
    up_queries = [(t, e) for t, e in dashboard_targets() if "up{" in e]
    assert up_queries
    for title, expr in up_queries:
        assert re.search(r"\bup\{[^}]*job=~\"\$job\"", expr), (title, expr)


# Panels that count trouble: a healthy gravixd has no such series yet (labelled counters
# appear at their first increment), and "No data" there reads as "broken", not "none".
_TROUBLE = re.compile(r"error|reject|refus|shed|retr|quarantin", re.IGNORECASE)


@pytest.mark.parametrize(
    ("title", "expr"), [(t, e) for t, e in dashboard_targets() if _TROUBLE.search(t)]
)
def test_trouble_panels_show_zero_rather_than_no_data(title: str, expr: str) -> None:
    assert expr.endswith(" or vector(0)"), (title, expr)
