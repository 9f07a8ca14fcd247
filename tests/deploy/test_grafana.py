"""The provisioned Grafana dashboard: parses, every panel queries only the service's metrics
through the provisioned data source, and every query is valid PromQL (checked by promtool)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO_ROOT
from tests.deploy.promql import CATALOGUE, metric_names, series_names

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "histoserve.json"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "histoserve.yml"
# Grafana's interval variables, replaced by a fixed range so promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def provisioned_datasource_uid() -> str:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return source["uid"]


def _panels(panels: list[dict]) -> list[dict]:
    # Rows may nest their collapsed panels.
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))
    return out


def dashboard_problems(path: Path, datasource_uid: str) -> list[str]:
    """Everything wrong with a dashboard file; empty when it is fine."""
    try:
        dashboard = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{path.name} does not parse: {exc}"]
    panels = _panels(dashboard.get("panels") or [])
    if not panels:
        return [f"{path.name} has no panels"]
    allowed = series_names()
    problems = []
    for panel in panels:
        if panel.get("type") == "row":
            continue
        title = panel.get("title") or f"panel {panel.get('id')}"
        panel_uid = (panel.get("datasource") or {}).get("uid")
        if panel_uid is not None and panel_uid != datasource_uid:
            problems.append(f"{title!r} uses data source {panel_uid!r}, not the provisioned {datasource_uid!r}")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{title!r} has no query")
        for target in targets:
            expr = (target.get("expr") or "").strip()
            if not expr:
                problems.append(f"{title!r} target {target.get('refId')} has no PromQL expr")
                continue
            names = metric_names(expr)
            if not any(n.startswith("histoserve_") for n in names):
                problems.append(f"{title!r} queries no histoserve_ metric: {expr}")
            for name in sorted(names - allowed):
                problems.append(f"{title!r} queries {name!r}, which the service does not export")
            uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
            if uid != datasource_uid:
                problems.append(f"{title!r} query {target.get('refId')} uses data source {uid!r}, "
                                f"not the provisioned {datasource_uid!r}")
    return problems


def dashboard_exprs(path: Path) -> list[str]:
    dashboard = json.loads(path.read_text())
    return [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]


def test_dashboard_is_clean():
    assert dashboard_problems(DASHBOARD, provisioned_datasource_uid()) == []


def test_dashboard_shows_every_metric_the_service_exports():
    # Requests by status, latency percentiles, batch sizes, queue depth, adapters, provider in use...
    used = set().union(*(metric_names(e) for e in dashboard_exprs(DASHBOARD)))
    missing = [name for name in CATALOGUE if not (series_names({name: CATALOGUE[name]}) & used)]
    assert missing == []


def _edit(text: str, old: str, new: str) -> str:
    assert old in text, f"fixture drift: {old!r} no longer in the dashboard"
    return text.replace(old, new, 1)


def _set_target_uid(dashboard: dict, uid: str) -> dict:
    dashboard["panels"][-1]["targets"][0]["datasource"]["uid"] = uid
    return dashboard


BROKEN = {
    "truncated JSON": lambda t: t[: len(t) // 2],
    "unknown metric": lambda t: _edit(t, "histoserve_queue_depth", "histoserve_queue_dept"),
    "foreign metric": lambda t: _edit(t, "sum(histoserve_adapters)", "sum(node_load1)"),
    "histogram without its _bucket series": lambda t: _edit(t, "histoserve_batch_size_bucket", "histoserve_batch_size"),
    "empty expr": lambda t: _edit(t, '"expr": "histoserve_build_info"', '"expr": ""'),
    "wrong panel data source": lambda t: _edit(t, '"uid": "histoserve-prometheus"', '"uid": "other"'),
    "wrong query data source": lambda t: json.dumps(_set_target_uid(json.loads(t), "other")),
    "no panels": lambda t: json.dumps({**json.loads(t), "panels": []}),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_dashboard_check_fails_on_broken_copy(tmp_path, breakage):
    broken = tmp_path / "histoserve.json"
    broken.write_text(BROKEN[breakage](DASHBOARD.read_text()))
    assert dashboard_problems(broken, provisioned_datasource_uid()) != []


def _promql_rules_file(exprs: list[str], path: Path) -> Path:
    # promtool has no "check expression"; as recording rules the queries go through its real parser.
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


def _promtool_check_rules(promtool: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True, timeout=60)


def test_dashboard_queries_are_valid_promql(promtool_bin, tmp_path):
    result = _promtool_check_rules(promtool_bin, _promql_rules_file(dashboard_exprs(DASHBOARD), tmp_path / "q.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promql_check_fails_on_broken_query(promtool_bin, tmp_path):
    exprs = dashboard_exprs(DASHBOARD)
    exprs[0] = exprs[0].replace("rate(", "rate((", 1)  # unbalanced parenthesis
    result = _promtool_check_rules(promtool_bin, _promql_rules_file(exprs, tmp_path / "q.yml"))
    assert result.returncode != 0


def test_provisioning_matches_compose_mounts():
    # The provider reads the folder compose mounts the dashboards into; the data source
    # points at the compose service name of Prometheus.
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    grafana_targets = {v["target"]: v["source"] for v in compose["services"]["grafana"]["volumes"]}
    assert grafana_targets[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert grafana_targets["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
