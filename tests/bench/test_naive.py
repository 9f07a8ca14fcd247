import io

from fastapi.testclient import TestClient
from PIL import Image

from bench.naive import create_app

from .conftest import EBHI_CLASSES


def test_naive_endpoint_classifies_a_real_png(tiny_store, ebhi_dir):
    bundle = tiny_store / "tiny_cbam" / "1"
    png = next((ebhi_dir / "polyp").glob("*.png")).read_bytes()
    with TestClient(create_app(bundle)) as client:
        ready = client.get("/readyz").json()
        assert ready["weights"] == "random init"
        response = client.post("/classify", files={"file": ("a.png", png, "image/png")})
    assert response.status_code == 200
    body = response.json()
    assert body["label"] in EBHI_CLASSES and 0.0 <= body["score"] <= 1.0


def test_naive_endpoint_resizes_any_size(tiny_store):
    buf = io.BytesIO()
    Image.new("RGB", (300, 120), (200, 100, 150)).save(buf, format="PNG")
    with TestClient(create_app(tiny_store / "tiny_cbam" / "1")) as client:
        response = client.post("/classify", files={"file": ("b.png", buf.getvalue(), "image/png")})
    assert response.status_code == 200
