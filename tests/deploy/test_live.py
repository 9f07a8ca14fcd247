"""The deployment against the real service: the image's health probe, the image's CUDA
default against a host without CUDA, and a real Prometheus running deploy/prometheus on
loopback that scrapes a live `python -m service` and answers queries about it.

Every wait is bounded, and every process started here is stopped in a finally block.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, REPO_ROOT

pytestmark = pytest.mark.slow

STARTUP_S = 60.0
SMALL_BUNDLE = REPO_ROOT / "model_store" / "breakhis_cbam_resnet20" / "1"
HEALTHCHECK = DEPLOY / "healthcheck.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback only)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(what: str, check, proc: subprocess.Popen, timeout: float = STARTUP_S, interval: float = 0.25):
    """Poll `check()` until it returns something truthy; fail if `proc` dies or time runs out."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}")
        try:
            result = check()
            if result:
                return result
        except OSError as exc:  # not listening yet
            last = exc
        time.sleep(interval)
    pytest.fail(f"{what}: not done after {timeout:.0f} s (last error: {last})")


def stop(proc: subprocess.Popen, grace: float = 15.0) -> int:
    """SIGTERM, as Docker sends it; kill only if the grace period runs out."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


def service_env(tmp: Path, port: int, **extra: str) -> dict[str, str]:
    # The caller's HISTOSERVE_* must not leak in. A replica is ready when it can serve a model, so the
    # store holds the smallest committed bundle (48 px: it loads and warms up in a moment).
    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTOSERVE_")}
    (tmp / "store").mkdir(exist_ok=True)
    if not (tmp / "store" / SMALL_BUNDLE.parent.name).exists():
        shutil.copytree(SMALL_BUNDLE, tmp / "store" / SMALL_BUNDLE.parent.name / SMALL_BUNDLE.name)
    (tmp / "state").mkdir(exist_ok=True)
    env.update(HISTOSERVE_HOST="127.0.0.1", HISTOSERVE_PORT=str(port), HISTOSERVE_MODEL_STORE=str(tmp / "store"),
               HISTOSERVE_STATE_DIR=str(tmp / "state"), HISTOSERVE_LOG_LEVEL="INFO", **extra)
    return env


def start_service(tmp: Path, port: int, **extra: str) -> subprocess.Popen:
    # Output goes to a file, not a pipe: a pipe nobody reads fills up and blocks the service.
    log = open(tmp / "service.log", "w")  # noqa: SIM115 (closed by the caller through proc.log)
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO_ROOT, env=service_env(tmp, port, **extra),
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def stop_service(proc: subprocess.Popen) -> str:
    """Stop the service and assert it shut down cleanly; returns its output."""
    code = stop(proc)
    proc.log.close()
    output = Path(proc.log.name).read_text()
    # uvicorn re-raises the SIGTERM it handled, so a graceful stop exits -15 after shutting down.
    assert code in (0, -signal.SIGTERM) and "Application shutdown complete" in output, \
        f"service did not stop cleanly ({code}):\n{output[-3000:]}"
    return output


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """A live service on a free loopback port; yields its port."""
    tmp = tmp_path_factory.mktemp("service")
    port = free_port()
    proc = start_service(tmp, port, HISTOSERVE_PROVIDERS="CPUExecutionProvider")
    try:
        wait_for("service /readyz", lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, proc)
        yield port
    finally:
        stop_service(proc)


def run_healthcheck(port: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HISTOSERVE_PORT": str(port)}
    return subprocess.run([sys.executable, HEALTHCHECK, *args], env=env, capture_output=True, text=True, timeout=30)


def test_healthcheck_passes_on_live_service(service):
    assert run_healthcheck(service).returncode == 0
    assert run_healthcheck(service, "/readyz").returncode == 0


def test_healthcheck_fails_on_error_status_and_closed_port(service):
    unknown = run_healthcheck(service, "/no-such-route")
    assert unknown.returncode == 1 and "404" in unknown.stderr
    closed = run_healthcheck(free_port())
    assert closed.returncode == 1 and "unreachable" in closed.stderr


def _stage_env(stage: str) -> dict[str, str]:
    """The HISTOSERVE_* defaults a Dockerfile stage sets (ENV lines with continuations)."""
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    block = re.search(rf"(?ms)^FROM \S+ AS {stage}\n(.*?)(?=^FROM |\Z)", text).group(1)
    return dict(re.findall(r"(HISTOSERVE_[A-Z_]+)=(\S+)", block))


def test_cuda_image_defaults_refuse_to_start_without_cuda(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host's onnxruntime offers CUDA; the refusal is for hosts without it")
    env = _stage_env("base-gpu")
    assert env["HISTOSERVE_REQUIRE_CUDA"] == "true"
    proc = start_service(tmp_path, free_port(), **env)
    try:
        code = proc.wait(timeout=STARTUP_S)
    finally:
        stop(proc)
        proc.log.close()
    assert code != 0
    assert "require_cuda is set" in Path(proc.log.name).read_text()


def test_cpu_image_defaults_start_without_cuda(tmp_path):
    env = _stage_env("base-cpu")
    port = free_port()
    proc = start_service(tmp_path, port, **env)
    try:
        wait_for("CPU-image service /readyz", lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, proc)
    finally:
        stop_service(proc)


def loopback_prometheus_config(tmp: Path, service_port: int, prometheus_port: int) -> Path:
    """deploy/prometheus with targets on loopback and one-second intervals, in `tmp`."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    rewritten = {"histoserve": f"127.0.0.1:{service_port}", "prometheus": f"127.0.0.1:{prometheus_port}"}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [rewritten[job["job_name"]]]
    for rules in config["rule_files"]:
        shutil.copy(DEPLOY / "prometheus" / rules, tmp / rules)
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def prom_query(port: int, query: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, body = http_get(url)
    payload = json.loads(body)
    assert status == 200 and payload["status"] == "success", payload
    return payload["data"]["result"]


def test_prometheus_scrapes_the_service(service, prometheus_bin, tmp_path):
    prom_port = free_port()
    config = loopback_prometheus_config(tmp_path, service, prom_port)
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115 (closed in finally)
    proc = subprocess.Popen(
        [prometheus_bin, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for("prometheus /-/ready", lambda: http_get(f"http://127.0.0.1:{prom_port}/-/ready")[0] == 200, proc)
        # The service is up as Prometheus sees it...
        up = wait_for("histoserve scraped", lambda: [r for r in prom_query(prom_port, 'up{job="histoserve"}')
                                                      if r["value"][1] == "1"], proc, timeout=30)
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{service}"
        # ...and its own metrics arrive with their labels.
        (build,) = wait_for("histoserve_build_info", lambda: prom_query(prom_port, "histoserve_build_info"), proc,
                            timeout=30)
        # the CPU provider the one bundle really got (an empty store would say "none")
        assert build["metric"]["job"] == "histoserve" and build["metric"]["providers"] == "CPUExecutionProvider"
        assert build["metric"]["version"]
        health = wait_for("healthz requests", lambda: prom_query(
            prom_port, 'histoserve_http_requests_total{route="/healthz", status="200"}'), proc, timeout=30)
        assert float(health[0]["value"][1]) >= 1
        # The alert rules loaded and evaluate without error against real data.
        status, body = http_get(f"http://127.0.0.1:{prom_port}/api/v1/rules")
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        assert {r["name"] for r in rules} >= {"HistoserveDown", "HistoserveQueueNearFull"}
        wait_for("rules evaluated", lambda: all(r.get("health") == "ok" for r in _rules(prom_port)), proc, timeout=30)
        # HistoserveDown may go pending on the first evaluation, before the first scrape (absent(up));
        # with the service scraped it must settle to inactive, long before its `for: 1m` could fire it.
        wait_for("HistoserveDown inactive", lambda: [r for r in _rules(prom_port)
                                                     if r["name"] == "HistoserveDown" and r["state"] == "inactive"],
                 proc, timeout=30)
    finally:
        code = stop(proc)
        log.close()
    output = (tmp_path / "prometheus.log").read_text()
    assert code == 0, f"prometheus did not stop cleanly ({code}):\n{output[-3000:]}"


def _rules(port: int) -> list[dict]:
    _, body = http_get(f"http://127.0.0.1:{port}/api/v1/rules")
    return [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
