"""GET /models, /models/{name}, /healthz, /readyz, /metrics; refused bundles; the empty store."""
from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.service.conftest import CLASSES, HOST_PROVIDERS, SIZE, png, random_rgb


def test_models_list_and_detail(app_factory):
    with TestClient(app_factory()) as c:
        body = c.get("/models").json()
        assert {(m["name"], m["version"], m["task"]) for m in body["models"]} == {
            ("tiny_cls", 1, "classification"), ("tiny_emb", 1, "embedding")}
        detail = c.get("/models/tiny_cls").json()
        assert detail["classes"] == CLASSES
        assert detail["input_size"] == [SIZE, SIZE]
        assert detail["metrics"] == {"test": {"accuracy": 0.5}}
        assert detail["provider"] == HOST_PROVIDERS[0]
        assert detail["versions"] == [1] and detail["gradcam"] is True
        assert c.get("/models/tiny_cls/1").json()["name"] == "tiny_cls"
        for path in ("/models/nope", "/models/tiny_cls/2", "/models/tiny_cls/x"):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", path


def test_health_ready_and_metrics(app_factory):
    app = app_factory()
    assert app.state.ready is False  # nothing loads before the lifespan runs
    with TestClient(app) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert sorted(ready.json()["models"]) == ["tiny_cls/1", "tiny_emb/1"]
        c.post("/classify", files=[("files", ("a.png", png(random_rgb(1)), "image/png"))])
        c.get("/models/tiny_cls")
        c.get("/no/such/path/12345")
        c.get("/models/whatever-name-77")
        text = c.get("/metrics").text
    assert 'histoserve_http_requests_total{method="POST",route="/classify",status="200"} 1.0' in text
    assert 'histoserve_http_requests_total{method="GET",route="/models/{name}",status="404"} 1.0' in text
    assert 'histoserve_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert "12345" not in text and "whatever-name-77" not in text  # raw paths never become labels
    assert 'histoserve_images_classified_total{model="tiny_cls",version="1"} 1.0' in text
    assert f'histoserve_model_info{{model="tiny_cls",provider="{HOST_PROVIDERS[0]}",version="1"}} 1.0' in text
    assert 'histoserve_queue_capacity{model="tiny_cls",version="1"} 64.0' in text
    providers = re.escape(",".join(sorted(HOST_PROVIDERS)))
    assert re.search(rf'histoserve_build_info\{{providers="{providers}",version="[^"]+"\}} 1.0', text)
    assert 'histoserve_errors_total{kind="model_not_found"} 1.0' in text
    assert "histoserve_adapters 0.0" in text
    for name in ("histoserve_http_request_duration_seconds_bucket", "histoserve_inference_duration_seconds_bucket",
                 "histoserve_batch_size_bucket", "histoserve_queue_depth"):
        assert name in text


def test_refused_bundles_are_logged_and_the_rest_serve(store_copy, tmp_path, caplog):
    manifest = store_copy / "tiny_emb" / "1" / "manifest.json"
    (store_copy / "tiny_emb" / "1" / "model.onnx").write_bytes(b"tampered")
    (store_copy / "broken" / "01").mkdir(parents=True)
    m = json.loads(manifest.read_text())
    assert m["name"] == "tiny_emb"
    app = create_app(Settings(model_store=store_copy, state_dir=tmp_path / "s"))
    with caplog.at_level("ERROR", logger="histoserve"), TestClient(app) as c:
        body = c.get("/models").json()
        assert [m["name"] for m in body["models"]] == ["tiny_cls"]
        assert any("sha256 mismatch for 'model.onnx'" in why for why in body["refused"].values())
        assert any(path.endswith("broken/01") for path in body["refused"])  # refused, with its reason
        assert c.get("/readyz").status_code == 200
    assert any("sha256 mismatch" in r.getMessage() for r in caplog.records)


def test_empty_store_is_not_ready_and_says_why_classify_fails(tmp_path):
    app = create_app(Settings(model_store=tmp_path / "empty", state_dir=tmp_path / "s"))
    with TestClient(app) as c:
        ready = c.get("/readyz")  # a replica that can serve nothing must not get traffic
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert "no bundle loaded" in ready.json()["unready"][0]
        assert c.get("/models").json()["models"] == []
        r = c.post("/classify", files=[("files", ("a.png", png(random_rgb(1)), "image/png"))])
        assert r.status_code == 404 and "no classification bundle" in r.json()["error"]["message"]


def test_default_model_setting_is_used(app_factory, bundles, tmp_path):
    with TestClient(app_factory(default_model="tiny_cls/1")) as c:
        assert c.post("/classify", files=[("files", ("a.png", png(random_rgb(1)), "image/png"))]).json()["model"] == "tiny_cls"
    with TestClient(app_factory(default_model="missing")) as c:
        r = c.post("/classify", files=[("files", ("a.png", png(random_rgb(1)), "image/png"))])
        assert r.status_code == 404 and "missing" in r.json()["error"]["message"]


def test_require_cuda_refuses_to_start_on_a_cpu_build(app_factory):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA; the refusal only shows on a CPU build")
    with pytest.raises(RuntimeError, match="require_cuda"), TestClient(app_factory(require_cuda=True)):
        pass


def test_request_id_is_echoed_or_generated(app_factory):
    with TestClient(app_factory()) as c:
        assert c.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
        generated = c.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"}).headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_unexpected_error_is_json_and_service_keeps_serving(app_factory):
    with TestClient(app_factory()) as c:
        registry = c.app.state.registry

        def boom(ref):
            raise ZeroDivisionError("a bug")

        real, registry.classifier = registry.classifier, boom
        r = c.post("/classify", files=[("files", ("a.png", png(random_rgb(1)), "image/png"))])
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        assert r.headers["x-request-id"] in r.json()["error"]["message"]
        registry.classifier = real
        assert c.post("/classify", files=[("files", ("a.png", png(random_rgb(1)), "image/png"))]).status_code == 200


def test_building_the_app_opens_nothing(tmp_path):
    # Models load in the lifespan only: a store that does not exist is not even looked at here.
    app = create_app(Settings(model_store=tmp_path / "does-not-exist", state_dir=tmp_path / "s"))
    assert getattr(app.state, "registry", None) is None and not (tmp_path / "s").exists()
    with TestClient(app) as c:
        assert c.get("/models").json()["models"] == []
    assert (tmp_path / "s" / "adapters").is_dir()


def test_models_names_the_defaults_requests_get(app_factory):
    with TestClient(app_factory()) as client:
        body = client.get("/models").json()
    refs = {f"{m['name']}/{m['version']}": m["task"] for m in body["models"]}
    assert refs[body["defaults"]["classification"]] == "classification"
    assert refs[body["defaults"]["embedding"]] == "embedding"


def test_a_draining_replica_closes_each_connection_after_its_answer(app_factory):
    with TestClient(app_factory()) as c:
        assert c.get("/healthz").headers.get("connection") is None  # keep-alive as usual
        c.app.state.draining = True
        r = c.get("/models")
        assert r.status_code == 200 and r.headers["connection"] == "close"
