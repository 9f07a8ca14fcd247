"""errors.py: one JSON shape for every error; domain errors get their status here, and only here."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.errors import ServiceError
from service.main import create_app
from service.registry import ModelNotFound, WrongTask
from service.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("errors")
    app = create_app(Settings(model_store=tmp / "empty", state_dir=tmp / "state"))

    def raiser(exc):
        async def route():
            raise exc
        return route

    app.add_api_route("/t/not-found", raiser(ModelNotFound("model 'x' is not loaded", {"loaded": []})))
    app.add_api_route("/t/wrong-task", raiser(WrongTask("x/1 is an embedding bundle", code="not_a_classifier")))
    app.add_api_route("/t/service", raiser(ServiceError(418, "teapot", "short and stout", headers={"X-T": "1"})))
    app.add_api_route("/t/bug", raiser(RuntimeError("a bug")))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("path,status,code", [
    ("/t/not-found", 404, "model_not_found"), ("/t/wrong-task", 422, "not_a_classifier"),
    ("/t/service", 418, "teapot"), ("/t/bug", 500, "internal_error"), ("/no/route", 404, "not_found"),
])
def test_every_error_has_one_shape(client, path, status, code):
    r = client.get(path)
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"status", "code", "message", "detail"} and error["status"] == status
    assert error["code"] == code


def test_detail_headers_and_the_error_metric(client):
    r = client.get("/t/not-found")
    assert r.json()["error"]["detail"] == {"loaded": []}
    assert client.get("/t/service").headers["X-T"] == "1"
    assert "a bug" not in client.get("/t/bug").text  # a 500 never leaks the exception
    client.get("/t/wrong-task")  # counted here too, so that the test does not lean on the one above
    metrics = client.get("/metrics").text
    assert 'histoserve_errors_total{kind="model_not_found"}' in metrics
    assert 'histoserve_errors_total{kind="not_a_classifier"}' in metrics
