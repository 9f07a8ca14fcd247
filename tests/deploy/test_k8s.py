"""deploy/k8s: every overlay rendered offline by the machine's own `kubectl kustomize` and validated
against the Kubernetes schemas that kubernetes-validate ships, then read back to check what it promises
(probes on the real routes, the GPU, the read-only model store, Redis with AOF, the autoscaler).
Each check is shown to fail on a deliberately broken copy.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY

K8S = DEPLOY / "k8s"
OVERLAYS = ["cpu", "gpu", "servicemonitor", "queue-hpa"]
K8S_VERSION = "1.37.0"  # the newest schemas kubernetes-validate 1.37 ships
NO_SCHEMA = {"ServiceMonitor"}  # a CRD: checked by hand below


@pytest.fixture(scope="session")
def kubectl() -> Path:
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl not found: the machines' own kubectl (kustomize v5 built in) renders the overlays")
    return Path(found)


@pytest.fixture(scope="session")
def kv():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate (dev extra) is not installed: `pip install -e .[dev]`")
    return kubernetes_validate


def render(kubectl: Path, directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(kubectl), "kustomize", str(directory)], capture_output=True, text=True, timeout=60)


@functools.cache
def _rendered_text(kubectl: Path, overlay: str) -> str:
    result = render(kubectl, K8S / "overlays" / overlay)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(kubectl: Path, overlay: str) -> list[dict]:
    """The repository's overlay, rendered once per session; parsed afresh for each caller."""
    return [d for d in yaml.safe_load_all(_rendered_text(kubectl, overlay)) if d]


def schema_errors(kv, docs: list[dict]) -> list[str]:
    """Strict validation (unknown fields are errors) of every document that has a schema."""
    errors = []
    for doc in docs:
        if doc.get("kind") in NO_SCHEMA:
            continue
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except Exception as e:  # ValidationError, SchemaNotFoundError: both mean the manifest is wrong
            errors.append(f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}: {type(e).__name__}: {e}")
    return errors


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def server(docs: list[dict]) -> dict:
    return one(docs, "Deployment", "histoserve")["spec"]["template"]["spec"]["containers"][0]


def config(docs: list[dict]) -> dict:
    # The generated ConfigMap's name carries a hash; the Deployment names it.
    (ref,) = [e["configMapRef"]["name"] for e in server(docs)["envFrom"]]
    return one(docs, "ConfigMap", ref)["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(kubectl, kv, overlay):
    docs = rendered(kubectl, overlay)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "StatefulSet", "ConfigMap"} <= {d["kind"] for d in docs}
    assert schema_errors(kv, docs) == []


def servicemonitor_problems(docs: list[dict]) -> list[str]:
    """The ServiceMonitor has no schema here: check that it selects the service and names a real port."""
    problems = []
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service", "histoserve")
    if monitor.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"apiVersion {monitor.get('apiVersion')}")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    labels = service["metadata"].get("labels", {})
    if any(labels.get(k) != v for k, v in wanted.items()):
        problems.append(f"selector {wanted} does not match the service labels {labels}")
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        if endpoint.get("port") not in ports:
            problems.append(f"endpoint port {endpoint.get('port')!r} is not a service port {sorted(ports)}")
        if endpoint.get("path") != "/metrics":
            problems.append(f"endpoint path {endpoint.get('path')!r}")
    return problems


def test_servicemonitor_scrapes_the_service(kubectl):
    assert servicemonitor_problems(rendered(kubectl, "servicemonitor")) == []


# (file under deploy/k8s, text, replacement, how it must fail)
BROKEN = {
    "misspelt field": ("base/deployment.yaml", "readinessProbe:", "readinesProbe:", "schema"),
    "wrong type": ("base/deployment.yaml", "replicas: 2", "replicas: two", "schema"),
    "missing resource": ("base/kustomization.yaml", "  - hpa.yaml\n", "  - hpa.yml\n", "render"),
    "patch misses": ("overlays/gpu/kustomization.yaml", "containers/0/resources", "containers/1/resources", "render"),
    "port as text": ("base/deployment.yaml", "containerPort: 8000", 'containerPort: "8000"', "schema"),
    "hpa target": ("base/hpa.yaml", "averageUtilization: 70", "averageUtilization: high", "schema"),
    "monitor port": ("overlays/servicemonitor/servicemonitor.yaml", "port: http", "port: web", "monitor"),
}


@pytest.mark.parametrize("breakage", [None, *sorted(BROKEN)])
def test_checks_fail_on_broken_copy(kubectl, kv, tmp_path, breakage):
    # None is the control: the unbroken copy passes in the same place, so a failure is the breakage's.
    root = tmp_path / "k8s"
    shutil.copytree(K8S, root)
    expected = None
    if breakage is not None:
        rel, old, new, expected = BROKEN[breakage]
        text = (root / rel).read_text()
        assert old in text, f"fixture drift: {old!r} not in {rel}"
        (root / rel).write_text(text.replace(old, new, 1))
    # A breakage is rendered through the one overlay it reaches (all of them reach the base).
    overlays = OVERLAYS if breakage is None else [next(o for o in OVERLAYS if f"overlays/{o}/" in rel) if
                                                   rel.startswith("overlays/") else "cpu"]
    failures = set()
    for overlay in overlays:
        result = render(kubectl, root / "overlays" / overlay)
        if result.returncode != 0:
            failures.add("render")
            continue
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        if schema_errors(kv, docs):
            failures.add("schema")
        if overlay == "servicemonitor" and servicemonitor_problems(docs):
            failures.add("monitor")
    assert failures == ({expected} if expected else set()), breakage


def test_probes_use_the_service_routes(kubectl):
    from service.main import create_app

    routes = set(create_app().openapi()["paths"])
    container = server(rendered(kubectl, "cpu"))
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz", "/metrics"} <= routes
    (port,) = container["ports"]
    assert port["containerPort"] == 8000 and port["name"] == "http"


def test_config_keys_are_real_settings(kubectl):
    from service.settings import Settings

    for overlay in OVERLAYS:
        data = config(rendered(kubectl, overlay))
        assert {k.removeprefix("HISTOSERVE_").lower() for k in data} <= set(Settings.model_fields), overlay
        # Every value parses: a replica would refuse to start otherwise.
        Settings(**{k.removeprefix("HISTOSERVE_").lower(): v for k, v in data.items()})


def test_gpu_overlay_asks_for_a_gpu_and_cpu_does_not(kubectl):
    gpu = rendered(kubectl, "gpu")
    resources = server(gpu)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1 and resources["requests"]["nvidia.com/gpu"] == 1
    assert config(gpu)["HISTOSERVE_REQUIRE_CUDA"] == "true"
    assert server(gpu)["image"] == "histoserve:gpu"
    cpu = rendered(kubectl, "cpu")
    assert "nvidia.com/gpu" not in str(server(cpu)["resources"])
    assert config(cpu)["HISTOSERVE_REQUIRE_CUDA"] == "false"
    assert server(cpu)["image"] == "histoserve:cpu"


def test_model_store_is_read_only_and_state_is_redis(kubectl):
    docs = rendered(kubectl, "cpu")
    pod = one(docs, "Deployment", "histoserve")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in server(docs)["volumeMounts"]}
    assert mounts["model-store"]["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == "model-store"]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    claim = one(docs, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    # The state URL points at the Redis service, and Redis keeps every acknowledged write.
    url = config(docs)["HISTOSERVE_STATE_URL"]
    redis_service = one(docs, "Service", "histoserve-redis")
    assert url == f"redis://{redis_service['metadata']['name']}:{redis_service['spec']['ports'][0]['port']}/0"
    conf = one(docs, "ConfigMap", "histoserve-redis-config")["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in conf and "appendfsync always" in conf
    # The drain fits inside the grace period Kubernetes gives before SIGKILL.
    data = config(docs)
    drain = float(data["HISTOSERVE_SHUTDOWN_DELAY_S"]) + float(data["HISTOSERVE_SHUTDOWN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > drain
    annotations = one(docs, "Deployment", "histoserve")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8000"


def test_autoscaler_on_cpu_in_base_and_queue_fill_in_its_overlay(kubectl):
    (cpu_metric,) = one(rendered(kubectl, "cpu"), "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert cpu_metric["type"] == "Resource" and cpu_metric["resource"]["name"] == "cpu"
    hpa = one(rendered(kubectl, "queue-hpa"), "HorizontalPodAutoscaler")
    (queue_metric,) = hpa["spec"]["metrics"]
    assert queue_metric["type"] == "Pods" and queue_metric["pods"]["metric"]["name"] == "histoserve_queue_fill_ratio"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "histoserve"
    # The README documents the Prometheus adapter rule that serves that metric.
    assert "histoserve_queue_fill_ratio" in (K8S / "README.md").read_text()
