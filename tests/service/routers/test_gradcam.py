"""POST /gradcam: PNG overlay at the input's size, JSON map equal to the bundle graph's output, bad targets."""
from __future__ import annotations

import base64
import io

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.imaging import preprocess
from service.store import load_bundle
from tests.service.conftest import CLASSES, SIZE, png, random_rgb


@pytest.fixture()
def client(app_factory):
    with TestClient(app_factory()) as c:
        yield c


def test_png_overlay_has_the_input_size(client):
    arr = np.random.default_rng(0).integers(0, 256, size=(50, 80, 3), dtype=np.uint8)
    r = client.post("/gradcam", files={"file": ("a.png", png(arr), "image/png")}, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (80, 50) and img.mode == "RGB"
    assert not np.array_equal(np.asarray(img), arr)  # something was drawn over it


def test_json_map_equals_the_bundle_graph(client, bundles):
    arr = random_rgb(3)
    r = client.post("/gradcam", files={"file": ("a.png", png(arr), "image/png")}, data={"target": "polyp"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["target"] == "polyp" and body["label"] in CLASSES and body["map_size"] == [SIZE, SIZE]

    bundle = load_bundle(bundles["store"] / "tiny_cls" / "1")
    x = preprocess(Image.fromarray(arr), bundle.preprocessing)[None]
    model = ort.InferenceSession(str(bundle.model_file), providers=["CPUExecutionProvider"])
    probs, feats = model.run(["probabilities", "features"], {"image": x})
    cam = ort.InferenceSession(str(bundle.gradcam_file), providers=["CPUExecutionProvider"])
    (expected,) = cam.run(["gradcam"], {"features": feats, "target_class": np.asarray([CLASSES.index("polyp")])})
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"]))), dtype=np.int16)
    assert got.shape == (SIZE, SIZE)
    assert np.abs(got - np.rint(expected[0] * 255)).max() <= 1
    assert body["label"] == CLASSES[int(probs[0].argmax())]
    assert body["score"] == pytest.approx(float(probs[0].max()), abs=1e-5)
    # without a target, the predicted class is explained
    assert client.post("/gradcam", files={"file": ("a.png", png(arr), "image/png")}).json()["target"] == body["label"]


def test_bad_targets_and_files(client):
    good = png(random_rgb(1))
    r = client.post("/gradcam", files={"file": ("a.png", good, "image/png")}, data={"target": "unicorn"})
    assert r.status_code == 422 and r.json()["error"]["detail"] == {"valid_targets": CLASSES}
    for files, status in (({"file": ("a.png", b"text", "image/png")}, 415), ({"file": ("a.png", b"", "image/png")}, 422),
                          ({"files": ("a.png", good, "image/png")}, 422)):
        assert client.post("/gradcam", files=files).status_code == status
    r = client.post("/gradcam", files={"file": ("a.png", good, "image/png")}, data={"model": "nope"})
    assert r.status_code == 404


def test_bundle_without_gradcam_says_so(store_copy, tmp_path):
    import json

    from service.main import create_app
    from service.settings import Settings

    bundle = store_copy / "tiny_cls" / "1"
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "gradcam.onnx").unlink()
    del manifest["graphs"]["gradcam"], manifest["files"]["gradcam.onnx"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(create_app(Settings(model_store=store_copy, state_dir=tmp_path / "s"))) as c:
        assert c.get("/models/tiny_cls").json()["gradcam"] is False
        r = c.post("/gradcam", files={"file": ("a.png", png(random_rgb(1)), "image/png")})
        assert r.status_code == 422 and "no gradcam graph" in r.json()["error"]["message"]
