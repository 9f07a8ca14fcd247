"""POST /adapt, classify with adapter=, list/get/delete, persistence across restarts, API key, limits."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.adapters import distances, softmax_neg
from tests.service.conftest import png, random_rgb, reference_embeddings

KEY = "k" * 20 + "-secret"


def _support(n_per_class: int = 3, classes=("tumour", "stroma"), seed: int = 0):
    """Images of two visibly different kinds, so prototypes separate them."""
    rng = np.random.default_rng(seed)
    arrays, labels = [], []
    for k, label in enumerate(classes):
        for _ in range(n_per_class):
            base = np.full((32, 32, 3), 40 + 170 * k, dtype=np.int16)
            arrays.append(np.clip(base + rng.integers(-20, 20, size=base.shape), 0, 255).astype(np.uint8))
            labels.append(label)
    return arrays, labels


def _post_adapt(c, arrays, labels, headers=None, **data):
    files = [("files", (f"{i}.png", png(a), "image/png")) for i, a in enumerate(arrays)]
    return c.post("/adapt", files=files, data={"labels": labels, **data}, headers=headers or {})


def test_adapt_classify_list_get_delete(app_factory, bundles):
    arrays, labels = _support()
    with TestClient(app_factory()) as c:
        r = _post_adapt(c, arrays, labels, name="two kinds")
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["classes"] == ["tumour", "stroma"] and body["shots"] == {"tumour": 3, "stroma": 3}
        assert body["model"] == "tiny_emb" and body["version"] == 1 and body["name"] == "two kinds"
        assert 0.0 <= body["loo_accuracy"] <= 1.0
        adapter_id = body["id"]
        assert len(adapter_id) >= 16 and adapter_id != "two kinds"

        # the prototypes are the mean eager-PyTorch embeddings of each class
        stored = c.app.state.adapters.get(adapter_id)
        emb = reference_embeddings(bundles["emb"], arrays)
        expected = np.stack([emb[:3].mean(0), emb[3:].mean(0)])
        np.testing.assert_allclose(stored.prototypes, expected, rtol=1e-4, atol=1e-4)

        queries = [random_rgb(5), arrays[0], arrays[-1]]
        r = c.post("/classify", files=[("files", ("q.png", png(q), "image/png")) for q in queries],
                   data={"adapter": adapter_id, "top_k": "2"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["adapter"] == {"id": adapter_id, "name": "two kinds"} and out["model"] == "tiny_emb"
        probs = softmax_neg(distances(reference_embeddings(bundles["emb"], queries), expected, "squared_euclidean"), 1.0)
        for result, p in zip(out["results"], probs, strict=True):
            assert result["label"] == ["tumour", "stroma"][int(np.argmax(p))]
            assert result["score"] == pytest.approx(float(p.max()), abs=1e-3)
            assert sum(t["probability"] for t in result["top_k"]) == pytest.approx(1.0, abs=1e-5)

        assert [a["id"] for a in c.get("/adapters").json()["adapters"]] == [adapter_id]
        assert c.get(f"/adapters/{adapter_id}").json()["classes"] == ["tumour", "stroma"]
        assert "histoserve_adapters 1.0" in c.get("/metrics").text
        assert c.delete(f"/adapters/{adapter_id}").json() == {"id": adapter_id, "deleted": True}
        for r in (c.get(f"/adapters/{adapter_id}"), c.delete(f"/adapters/{adapter_id}"),
                  c.post("/classify", files=[("files", ("q.png", png(queries[0]), "image/png"))],
                         data={"adapter": adapter_id})):
            assert r.status_code == 404 and r.json()["error"]["code"] == "adapter_not_found"
        assert c.get("/adapters").json()["adapters"] == []


def test_adapters_survive_a_restart_and_a_killed_writer(app_factory, tmp_path):
    arrays, labels = _support()
    state = tmp_path / "state"
    with TestClient(app_factory(state_dir=state)) as c:
        first = _post_adapt(c, arrays, labels).json()
        q = c.post("/classify", files=[("files", ("q.png", png(arrays[1]), "image/png"))],
                   data={"adapter": first["id"]}).json()["results"][0]
    # A writer killed before its rename leaves a partial temporary file; a damaged file is skipped too.
    adapters_dir = state / "adapters"
    good = (adapters_dir / f"{first['id']}.npz").read_bytes()
    (adapters_dir / f".tmp-{'z' * 22}-abc.npz").write_bytes(good[: len(good) // 3])
    (adapters_dir / f"{'y' * 22}.npz").write_bytes(good[: len(good) // 2])
    with TestClient(app_factory(state_dir=state)) as c:
        listed = c.get("/adapters").json()["adapters"]
        assert [a["id"] for a in listed] == [first["id"]]
        again = c.post("/classify", files=[("files", ("q.png", png(arrays[1]), "image/png"))],
                       data={"adapter": first["id"]}).json()["results"][0]
        assert again == q
    assert not any(p.name.startswith(".tmp-") for p in adapters_dir.iterdir())


def test_api_key_guards_adapt_and_delete(app_factory):
    arrays, labels = _support()
    with TestClient(app_factory(api_key=KEY)) as c:
        for headers in ({}, {"X-API-Key": "wrong-key-wrong-key"}):
            r = _post_adapt(c, arrays, labels, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        made = _post_adapt(c, arrays, labels, headers={"X-API-Key": KEY})
        assert made.status_code == 201
        adapter_id = made.json()["id"]
        assert c.get("/adapters").status_code == 200  # reads stay open
        assert c.delete(f"/adapters/{adapter_id}").status_code == 401
        assert c.delete(f"/adapters/{adapter_id}", headers={"X-API-Key": KEY}).status_code == 200


def test_bad_support_sets_get_422(app_factory):
    arrays, labels = _support(n_per_class=3)
    with TestClient(app_factory(adapter_max_classes=3, adapter_max_shots=3)) as c:
        cases = {
            "one class": (_post_adapt(c, arrays[:3], labels[:3]), 422),
            "mismatched labels": (_post_adapt(c, arrays, labels[:-1]), 422),
            "zero shots": (c.post("/adapt", data={"labels": ["a", "b"]},
                                  files=[("other", ("x", b"x", "text/plain"))]), 422),
            "too many shots": (_post_adapt(c, arrays + [arrays[0]], labels + ["tumour"]), 422),
            "too many classes": (_post_adapt(c, arrays[:4], ["a", "b", "c", "d"]), 422),
            "label characters": (_post_adapt(c, arrays, ["../x"] * 3 + ["b"] * 3), 422),
            "label length": (_post_adapt(c, arrays, ["a" * 65] * 3 + ["b"] * 3), 422),
            "unknown model": (_post_adapt(c, arrays, labels, model="nope"), 404),
            "bad image": (c.post("/adapt", data={"labels": ["a", "b"]},
                                 files=[("files", ("a.png", b"not an image", "image/png"))] * 2), 415),
            "json body": (c.post("/adapt", json={"labels": ["a"]}), 415),
        }
        for name, (r, status) in cases.items():
            assert r.status_code == status, (name, r.text)
            assert r.json()["error"]["message"], name
        assert c.get("/adapters").json()["adapters"] == []
        # comma-separated labels in one field are accepted
        assert _post_adapt(c, arrays, ",".join(labels)).status_code == 201
