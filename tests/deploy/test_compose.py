"""docker-compose.yml and the CPU override, validated by the real Compose v2 binary
(`docker compose config`, no engine needed) and read back to check what the stack promises."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO_ROOT

BASE = "docker-compose.yml"
CPU = "docker-compose.cpu.yml"


def compose(binary: Path, project_dir: Path, *args: str, files=(BASE,)) -> subprocess.CompletedProcess:
    # A clean environment: a COMPOSE_FILE or HISTOSERVE_* in the caller's shell must not change the result.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(project_dir)}
    cmd = [str(binary), "--project-directory", str(project_dir)]
    for f in files:
        cmd += ["-f", str(project_dir / f)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60, env=env, cwd=project_dir)


def resolved(binary: Path, *files: str, profile: str | None = None) -> dict:
    args = (["--profile", profile] if profile else []) + ["config", "--format", "json"]
    result = compose(binary, REPO_ROOT, *args, files=files)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("files", [(BASE,), (BASE, CPU)], ids=["gpu", "cpu-override"])
@pytest.mark.parametrize("profile", [None, "train"])
def test_compose_config_is_valid(compose_bin, files, profile):
    args = (["--profile", profile] if profile else []) + ["config", "-q"]
    result = compose(compose_bin, REPO_ROOT, *args, files=files)
    assert result.returncode == 0, result.stderr


BROKEN = {
    "misspelt key": ("    healthcheck:\n", "    healthchek:\n"),
    "capabilities not a list": ("capabilities: [gpu]", "capabilities: {gpu: true}"),
    "unknown anchor": ("deploy: *gpu\n    healthcheck", "deploy: *gpus\n    healthcheck"),
    "bad port": ('"${HISTOSERVE_PUBLISH_PORT:-8000}:8000"', '"${HISTOSERVE_PUBLISH_PORT:-8000}:80000"'),
    "bad YAML": ("services:\n", "services:\n\t"),
}


@pytest.mark.parametrize("breakage", [None, *sorted(BROKEN)])
def test_compose_config_fails_on_broken_copy(compose_bin, tmp_path, breakage):
    # None is the control: the unbroken copy passes in the same place, so a failure is the breakage's.
    text = (REPO_ROOT / BASE).read_text()
    if breakage is not None:
        old, new = BROKEN[breakage]
        assert old in text, f"fixture drift: {old!r}"
        text = text.replace(old, new, 1)
    (tmp_path / BASE).write_text(text)
    shutil.copy(REPO_ROOT / CPU, tmp_path / CPU)
    result = compose(compose_bin, tmp_path, "config", "-q")
    if breakage is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0, f"compose accepted a broken file ({breakage})"


def test_broken_cpu_override_fails(compose_bin, tmp_path):
    shutil.copy(REPO_ROOT / BASE, tmp_path / BASE)
    (tmp_path / CPU).write_text((REPO_ROOT / CPU).read_text().replace("deploy: !reset {}", "deploy: !reset\n  x", 1))
    assert compose(compose_bin, tmp_path, "config", "-q", files=(BASE, CPU)).returncode != 0


def _gpu_devices(service: dict) -> list[dict]:
    return ((service.get("deploy") or {}).get("resources") or {}).get("reservations", {}).get("devices") or []


def test_gpu_stack(compose_bin):
    services = resolved(compose_bin, BASE, profile="train")["services"]
    assert {"histoserve", "prometheus", "grafana", "train"} <= set(services)
    for name in ("histoserve", "train"):
        (device,) = _gpu_devices(services[name])
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    svc = services["histoserve"]
    assert svc["build"]["args"]["RUNTIME"] == "gpu" and svc["build"]["target"] == "serve"
    assert svc["environment"]["HISTOSERVE_REQUIRE_CUDA"] == "true"
    volumes = {v["target"]: v for v in svc["volumes"]}
    assert volumes["/srv/histoserve/model_store"]["read_only"] is True
    assert volumes["/srv/histoserve/state"]["type"] == "volume"
    assert svc["healthcheck"]["test"] == ["CMD", "python", "/opt/histoserve/healthcheck.py", "/healthz"]
    assert services["train"]["build"]["target"] == "train"
    # Prometheus reads deploy/prometheus, the directory promtool checks.
    prom_volumes = {v["target"]: v["source"] for v in services["prometheus"]["volumes"]}
    assert prom_volumes["/etc/prometheus"] == str(REPO_ROOT / "deploy" / "prometheus")


def test_train_profile_is_opt_in(compose_bin):
    assert "train" not in resolved(compose_bin, BASE)["services"]


def test_cpu_override_drops_the_gpu(compose_bin):
    services = resolved(compose_bin, BASE, CPU, profile="train")["services"]
    for name in ("histoserve", "train"):
        assert _gpu_devices(services[name]) == [], name
    svc = services["histoserve"]
    assert svc["build"]["args"]["RUNTIME"] == "cpu"
    assert svc["image"] == "histoserve:cpu"
    assert svc["environment"]["HISTOSERVE_REQUIRE_CUDA"] == "false"
    assert svc["environment"]["HISTOSERVE_PROVIDERS"] == "CPUExecutionProvider"


def test_compose_environment_uses_real_settings(compose_bin):
    from service.settings import Settings

    services = resolved(compose_bin, BASE, CPU)["services"]
    names = {k for s in services.values() for k in (s.get("environment") or {}) if k.startswith("HISTOSERVE_")}
    assert names
    assert {n.removeprefix("HISTOSERVE_").lower() for n in names} <= set(Settings.model_fields)
