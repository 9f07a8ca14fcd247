"""The plain FastAPI + ONNX Runtime endpoint: the service's own session and decoding, one run per request."""
import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from bench.plain import create_app
from service.imaging import decode_image, preprocess
from service.runtime import ModelRuntime
from service.settings import Settings
from service.store import load_bundle

from .conftest import EBHI_CLASSES


def test_plain_endpoint_answers_what_the_session_computes(tiny_store, ebhi_dir):
    bundle_dir = tiny_store / "tiny_cbam" / "1"
    png = next((ebhi_dir / "polyp").glob("*.png")).read_bytes()
    with TestClient(create_app(bundle_dir, Settings(model_store=tiny_store))) as client:
        assert client.get("/readyz").json()["provider"] == "CPUExecutionProvider"
        response = client.post("/classify", files={"file": ("a.png", png, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    bundle = load_bundle(bundle_dir)
    runtime = ModelRuntime(bundle, Settings(model_store=tiny_store))
    probs = runtime.run(preprocess(decode_image(png, max_pixels=10**8), bundle.preprocessing)[None])["probabilities"][0]
    assert body["label"] == EBHI_CLASSES[int(np.argmax(probs))]
    assert abs(body["score"] - float(probs.max())) < 1e-6


def test_plain_endpoint_resizes_any_size(tiny_store):
    buf = io.BytesIO()
    Image.new("RGB", (300, 120), (200, 100, 150)).save(buf, format="PNG")
    with TestClient(create_app(tiny_store / "tiny_cbam" / "1", Settings(model_store=tiny_store))) as client:
        response = client.post("/classify", files={"file": ("b.png", buf.getvalue(), "image/png")})
    assert response.status_code == 200 and response.json()["label"] in EBHI_CLASSES
