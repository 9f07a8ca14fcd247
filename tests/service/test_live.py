"""The service as users run it: `python -m service` under uvicorn on a loopback port, real images,
/metrics scraped by hand and by a real Prometheus. Everything stays on 127.0.0.1 and stops itself.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT, SUBPROCESS_PYTHONPATH

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return r
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s")


@pytest.fixture(scope="module")
def live(bundles, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("live") / "service.log"
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH, "HISTOSERVE_PORT": str(port), "HISTOSERVE_HOST": "127.0.0.1",
           "HISTOSERVE_MODEL_STORE": str(bundles["store"]),
           "HISTOSERVE_STATE_DIR": str(tmp_path_factory.mktemp("live-state")), "HISTOSERVE_MAX_WAIT_MS": "5"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_for(f"http://127.0.0.1:{port}/readyz", proc)
            yield {"url": f"http://127.0.0.1:{port}", "port": port, "proc": proc, "log": log_path}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _real_images(ebhi_dir: Path, per_class: int = 2) -> list[Path]:
    paths = []
    for cls in sorted(p for p in ebhi_dir.iterdir() if p.is_dir()):
        paths += sorted(cls.glob("*.png"))[:per_class]
    assert paths, f"no PNG images under {ebhi_dir}"
    return paths


def _counter(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_live_service_classifies_real_images_and_counts_them(live, ebhi_dir):
    paths = _real_images(ebhi_dir)
    with httpx.Client(base_url=live["url"], timeout=30) as c:
        before = c.get("/metrics").text
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in paths[:4]]
        r = c.post("/classify", files=files, data={"top_k": "3"}, headers={"X-Request-ID": "live-test-1"})
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == "live-test-1"
        assert len(r.json()["results"]) == 4
        bad = c.post("/classify", files=[("files", ("x.png", b"plain text", "image/png"))])
        assert bad.status_code == 415
        after = c.get("/metrics").text
    key = 'histoserve_images_classified_total{model="tiny_cls",version="1"}'
    assert _counter(after, key) - _counter(before, key) == 4
    ok = 'histoserve_http_requests_total{method="POST",route="/classify",status="200"}'
    assert _counter(after, ok) - _counter(before, ok) == 1
    assert _counter(after, 'histoserve_http_requests_total{method="POST",route="/classify",status="415"}') >= 1
    time.sleep(0.2)
    lines = [json.loads(line) for line in live["log"].read_text().splitlines() if line.startswith("{")]
    access = [e for e in lines if e.get("logger") == "histoserve.access" and e.get("request_id") == "live-test-1"]
    assert access and access[0]["route"] == "/classify" and access[0]["status"] == 200


def test_live_service_stops_cleanly(bundles, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH, "HISTOSERVE_PORT": str(port),
           "HISTOSERVE_MODEL_STORE": str(bundles["store"]), "HISTOSERVE_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit too.
    assert proc.returncode in (0, -signal.SIGTERM), out.decode(errors="replace")[-2000:]
    assert b'"message": "stopped"' in out and b"Application shutdown complete" in out


def test_bad_setting_refuses_to_start(tmp_path):
    env = {**os.environ, "PYTHONPATH": SUBPROCESS_PYTHONPATH, "HISTOSERVE_MAX_BATCH_SIZE": "0",
           "HISTOSERVE_STATE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "service"], cwd=REPO_ROOT, env=env, capture_output=True, timeout=60)
    assert proc.returncode != 0 and b"max_batch_size" in proc.stderr


def test_real_prometheus_scrapes_the_service(live, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus binary is not installed (apt-get install prometheus; .ci/run does)")
    httpx.get(f"{live['url']}/healthz")
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: histoserve\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{live['port']}']\n")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{prom_port}"
        wait_for(f"{base}/-/ready", proc)
        query = 'histoserve_http_requests_total{route="/healthz",method="GET",status="200"}'
        deadline, result = time.monotonic() + 45, []
        while time.monotonic() < deadline and not result:
            r = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5)
            assert r.status_code == 200 and r.json()["status"] == "success"
            result = r.json()["data"]["result"]
            time.sleep(0.5)
        assert result, "Prometheus never returned the request counter"
        assert float(result[0]["value"][1]) >= 1
        assert result[0]["metric"]["job"] == "histoserve"
        up = httpx.get(f"{base}/api/v1/query", params={"query": "up{job='histoserve'}"}).json()
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
