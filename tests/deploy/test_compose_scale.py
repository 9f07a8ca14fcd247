"""docker-compose.scale.yml (replicas behind nginx, adapters in Redis, Prometheus on every replica),
validated by the real Compose v2 binary and read back; its Prometheus config checked by promtool and
against the single-service one. Each check is shown to fail on a broken copy.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO_ROOT
from tests.deploy.test_compose import BASE, CPU, compose, resolved

SCALE = "docker-compose.scale.yml"
STACKS = {"gpu": (BASE, SCALE), "cpu": (BASE, CPU, SCALE)}


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_scale_stack_is_valid(compose_bin, stack):
    result = compose(compose_bin, REPO_ROOT, "config", "-q", files=STACKS[stack])
    assert result.returncode == 0, result.stderr


BROKEN = {
    "misspelt key": ("    stop_grace_period: 30s\n", "    stop_grace_periode: 30s\n"),
    "bad condition": ("condition: service_healthy\n\n  redis:", "condition: service_ready\n\n  redis:"),
    "replicas not a number": ("replicas: ${HISTOSERVE_REPLICAS:-2}", "replicas: two"),
    "bad port": ('"${HISTOSERVE_PUBLISH_PORT:-8000}:8080"', '"${HISTOSERVE_PUBLISH_PORT:-8000}:80800"'),
}


@pytest.mark.parametrize("breakage", [None, *sorted(BROKEN)])
def test_scale_config_fails_on_broken_copy(compose_bin, tmp_path, breakage):
    text = (REPO_ROOT / SCALE).read_text()
    if breakage is not None:
        old, new = BROKEN[breakage]
        assert old in text, f"fixture drift: {old!r}"
        text = text.replace(old, new, 1)
    for name in (BASE, CPU):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    (tmp_path / SCALE).write_text(text)
    result = compose(compose_bin, tmp_path, "config", "-q", files=(BASE, CPU, SCALE))
    if breakage is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0, f"compose accepted a broken file ({breakage})"


def test_replicas_share_redis_behind_nginx(compose_bin):
    services = resolved(compose_bin, *STACKS["cpu"])["services"]
    assert {"histoserve", "redis", "nginx", "prometheus"} <= set(services)
    svc = services["histoserve"]
    assert svc["deploy"]["replicas"] == 2
    assert not svc.get("ports"), "replicas must not each publish the host port; nginx does"
    env = svc["environment"]
    assert env["HISTOSERVE_STATE_URL"] == "redis://redis:6379/0"
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    # Healthy means ready, and nginx waits for it.
    assert svc["healthcheck"]["test"][-1] == "/readyz"
    assert services["nginx"]["depends_on"]["histoserve"]["condition"] == "service_healthy"
    # The drain fits in the grace period before Docker's SIGKILL.
    grace = int(re.fullmatch(r"(\d+)s", svc["stop_grace_period"]).group(1))
    assert grace > float(env["HISTOSERVE_SHUTDOWN_DELAY_S"]) + float(env["HISTOSERVE_SHUTDOWN_TIMEOUT_S"])
    # Redis keeps every acknowledged write: AOF, fsync per write.
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "always"
    assert {v["target"] for v in services["redis"]["volumes"]} == {"/data"}


def test_environment_uses_real_settings(compose_bin):
    from service.settings import Settings

    for files in STACKS.values():
        env = resolved(compose_bin, *files)["services"]["histoserve"]["environment"]
        names = {k.removeprefix("HISTOSERVE_").lower() for k in env if k.startswith("HISTOSERVE_")}
        assert names <= set(Settings.model_fields)
        # Every value parses (empty ones mean "unset", as env_ignore_empty reads them).
        Settings(**{k.removeprefix("HISTOSERVE_").lower(): v for k, v in env.items() if k.startswith("HISTOSERVE_") and v})


def test_nginx_gets_the_tested_config(compose_bin):
    nginx = resolved(compose_bin, *STACKS["gpu"])["services"]["nginx"]
    (volume,) = nginx["volumes"]
    assert volume["source"] == str(DEPLOY / "nginx" / "nginx.conf") and volume["target"] == "/etc/nginx/nginx.conf"
    (port,) = nginx["ports"]
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert re.search(rf"^\s*listen {port['target']};", conf, re.M)
    # The upstream is the compose service, on the port the replicas listen on.
    assert re.search(r"^\s*server histoserve:8000 ", conf, re.M)


def test_prometheus_discovers_every_replica(compose_bin):
    services = resolved(compose_bin, *STACKS["gpu"])["services"]
    command = services["prometheus"]["command"]
    (flag,) = [c for c in command if c.startswith("--config.file=")]
    mounted = {v["target"]: v["source"] for v in services["prometheus"]["volumes"]}["/etc/prometheus"]
    path = mounted + "/" + flag.removeprefix("--config.file=/etc/prometheus/")
    scale = yaml.safe_load(open(path))
    single = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in scale["scrape_configs"]}
    # DNS discovery of the compose service: one target per replica, under the job the alerts use.
    (dns,) = jobs["histoserve"]["dns_sd_configs"]
    assert dns["names"] == ["histoserve"] and dns["type"] == "A" and dns["port"] == 8000
    assert "static_configs" not in jobs["histoserve"]
    # Everything else is the single-service config.
    for config in (scale, single):
        for job in config["scrape_configs"]:
            if job["job_name"] == "histoserve":
                job.pop("dns_sd_configs", None)
                job.pop("static_configs", None)
    assert scale == single


def test_promtool_accepts_the_scale_config(promtool_bin, tmp_path):
    shutil.copytree(DEPLOY / "prometheus", tmp_path / "prometheus")
    good = subprocess.run([promtool_bin, "check", "config", str(tmp_path / "prometheus" / "prometheus-scale.yml")],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    broken = tmp_path / "prometheus" / "prometheus-scale.yml"
    broken.write_text(broken.read_text().replace("type: A", "type: AAAAA", 1))
    bad = subprocess.run([promtool_bin, "check", "config", str(broken)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
