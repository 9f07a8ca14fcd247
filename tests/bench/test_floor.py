"""The HTTP floor endpoints: they take a /classify-shaped upload, read all of it and answer the constant."""
import json

from fastapi.testclient import TestClient

from bench.floor import ANSWER, asgi_app, fastapi_app


def test_both_floors_take_the_upload_and_answer_the_constant(ebhi_dir):
    png = next((ebhi_dir / "polyp").glob("*.png")).read_bytes()
    for app in (fastapi_app(), asgi_app):
        with TestClient(app) as client:
            assert client.get("/readyz").status_code == 200
            response = client.post("/classify", files={"file": ("a.png", png, "image/png")})
        assert response.status_code == 200
        assert response.json() == json.loads(ANSWER)
