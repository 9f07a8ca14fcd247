"""Prometheus configuration and alert rules, checked by promtool itself: the config and
rules parse, the alert unit tests pass, each alert names only metrics the service exports,
and each check fails on a deliberately broken copy."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO_ROOT
from tests.deploy.promql import metric_names, series_names

PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTS_REQUIRED = {"HistoserveDown", "HistoserveHigh5xxRatio", "HistoserveHighP95Latency", "HistoserveQueueNearFull"}


def promtool(binary: Path, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture
def prom_copy(tmp_path) -> Path:
    """A writable copy of deploy/prometheus to break."""
    return Path(shutil.copytree(PROMETHEUS_DIR, tmp_path / "prometheus"))


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"fixture drift: {old!r} no longer in {path.name}"
    path.write_text(text.replace(old, new, 1))


def test_config_is_valid(promtool_bin):
    result = promtool(promtool_bin, "check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_are_valid(promtool_bin):
    result = promtool(promtool_bin, "check", "rules", PROMETHEUS_DIR / "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass(promtool_bin):
    # Each alert fires on a series built to fire it, and stays quiet on its neighbours.
    result = promtool(promtool_bin, "test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("breakage", ["bad duration", "unknown field", "missing rule file"])
def test_config_check_fails_on_broken_copy(promtool_bin, prom_copy, breakage):
    config = prom_copy / "prometheus.yml"
    if breakage == "bad duration":
        _replace(config, "scrape_interval: 15s", "scrape_interval: 15 parsecs")
    elif breakage == "unknown field":
        _replace(config, "static_configs:", "static_config:")
    else:
        (prom_copy / "alerts.yml").unlink()
    assert promtool(promtool_bin, "check", "config", config).returncode != 0


@pytest.mark.parametrize("breakage", ["bad PromQL", "bad template", "duplicate for"])
def test_rules_check_fails_on_broken_copy(promtool_bin, prom_copy, breakage):
    rules = prom_copy / "alerts.yml"
    if breakage == "bad PromQL":
        _replace(rules, "> 0.8", "> > 0.8")
    elif breakage == "bad template":
        _replace(rules, "{{ $labels.instance }} is down", "{{ $labels.instance is down")
    else:
        _replace(rules, "for: 1m", "for: 1m\n        for: 2m")
    assert promtool(promtool_bin, "check", "rules", rules).returncode != 0


def test_alert_unit_tests_fail_when_a_threshold_moves(promtool_bin, prom_copy):
    # The rule tests pin behaviour, not just syntax: a 5xx threshold of 50% no longer fires at 10%.
    _replace(prom_copy / "alerts.yml", "> 0.05", "> 0.5")
    assert promtool(promtool_bin, "check", "rules", prom_copy / "alerts.yml").returncode == 0
    assert promtool(promtool_bin, "test", "rules", "alerts_test.yml", cwd=prom_copy).returncode != 0


def _alerts() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alerts_cover_the_issue_and_name_only_exported_metrics():
    alerts = _alerts()
    assert {a["alert"] for a in alerts} >= ALERTS_REQUIRED
    allowed = series_names() | {"up"}  # `up` is Prometheus' own scrape-health series
    for alert in alerts:
        names = metric_names(alert["expr"])
        assert names, alert["alert"]
        assert names <= allowed, (alert["alert"], names - allowed)
        assert alert["labels"]["severity"] in {"critical", "warning"}


def test_config_scrapes_the_compose_service():
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "histoserve"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert "histoserve" in compose["services"]
    assert targets == ["histoserve:8000"]  # service name and the port the image listens on
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert config["rule_files"] == ["alerts.yml"]
