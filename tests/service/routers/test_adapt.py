"""POST /adapt, classify with adapter=, list/get/delete, persistence across restarts, API key, limits."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.adapters import HEADS, distances, softmax_neg
from service.adapters.heads import select_head
from tests.service.conftest import make_app, png, random_rgb, reference_embeddings

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
        # the head is the best by leave-one-out on those embeddings, and the answer says which and why
        ref = select_head(emb, np.repeat([0, 1], 3), 2, distance="squared_euclidean", temperature=1.0)
        assert body["head"] == ref.head.kind == body["selection"]["chosen"]
        assert body["selection"]["method"] == "leave-one-out" and body["selection"]["why"]
        assert set(body["selection"]["accuracy"]) == set(HEADS)
        assert body["loo_accuracy"] == pytest.approx(ref.accuracy)
        assert body["out_of_support"]["threshold"] == pytest.approx(ref.threshold["threshold"], rel=1e-3, abs=1e-6)
        assert body["augmentation"] is None and len(body["bundle_sha256"]) == 64

        queries = [random_rgb(5), arrays[0], arrays[-1]]
        r = c.post("/classify", files=[("files", ("q.png", png(q), "image/png")) for q in queries],
                   data={"adapter": adapter_id, "top_k": "2"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["adapter"] == {"id": adapter_id, "name": "two kinds"} and out["model"] == "tiny_emb"
        probs = ref.head.probabilities(reference_embeddings(bundles["emb"], queries))
        for result, p in zip(out["results"], probs, strict=True):
            assert result["label"] == ["tumour", "stroma"][int(np.argmax(p))]
            assert result["score"] == pytest.approx(float(p.max()), abs=1e-3)
            assert sum(t["probability"] for t in result["top_k"]) == pytest.approx(1.0, abs=1e-5)
        # support images lie inside the support; the out-of-support flag sits beside the label
        assert [r["out_of_support"] for r in out["results"][1:]] == [False, False]
        assert isinstance(out["results"][0]["out_of_support"], bool)

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


def _dihedral(a: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations and flips of a square image, independently of PIL."""
    return [np.rot90(b, k) for b in (a, a.transpose(1, 0, 2)) for k in range(4)]


def test_one_shot_takes_cosine_and_dihedral_views_are_extra_shots(app_factory, bundles):
    arrays, labels = _support(n_per_class=2)
    with TestClient(app_factory()) as c:
        one = _post_adapt(c, arrays[::2], labels[::2]).json()
        assert one["head"] == "cosine" and one["loo_accuracy"] is None
        assert one["selection"]["method"] == "one shot per class" and "one shot" in one["selection"]["why"]
        assert "nearest other class" in one["out_of_support"]["calibration"]

        r = _post_adapt(c, arrays, labels, augment="dihedral", head="prototype")
        assert r.status_code == 201, r.text
        aug = r.json()
        assert aug["augmentation"] == "dihedral" and aug["shots"] == {"tumour": 2, "stroma": 2}
        assert aug["head"] == "prototype" and aug["selection"]["evaluated"] == 4 * 8  # images left out with their views
        views = [v for a in arrays for v in _dihedral(a)]
        emb = reference_embeddings(bundles["emb"], views)
        expected = np.stack([emb[:16].mean(0), emb[16:].mean(0)])
        np.testing.assert_allclose(c.app.state.adapters.get(aug["id"]).prototypes, expected, rtol=1e-4, atol=1e-4)
        assert _post_adapt(c, arrays, labels, augment="sideways").status_code == 422
        assert _post_adapt(c, arrays, labels, head="knn").status_code == 422


def test_export_and_import_between_deployments(app_factory, store_copy, tmp_path):
    import json
    import shutil

    from service.adapters.transfer import checksum

    arrays, labels = _support()
    query = [("files", ("q.png", png(arrays[0]), "image/png"))]
    with TestClient(app_factory(state_dir=tmp_path / "a")) as a:
        made = _post_adapt(a, arrays, labels, name="moving").json()
        r = a.get(f"/adapters/{made['id']}/export")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert f"adapter-{made['id']}.json" in r.headers["content-disposition"]
        exported = r.content
        before = a.post("/classify", files=query, data={"adapter": made["id"]}).json()["results"]
    doc = json.loads(exported)
    assert doc["bundle"] == {"name": "tiny_emb", "version": 1, "model_sha256": made["bundle_sha256"]}
    assert doc["checksum"] == checksum(doc) and "pickle" not in exported.decode()

    def post(c, blob, headers=None):
        return c.post("/adapters/import", files={"file": ("adapter.json", blob, "application/json")},
                      headers=headers or {})

    def resigned(**changes):
        d = {**json.loads(exported), **changes}
        d["checksum"] = checksum(d)
        return json.dumps(d).encode()

    with TestClient(app_factory(state_dir=tmp_path / "b", api_key=KEY)) as b:
        assert post(b, exported).status_code == 401
        key = {"X-API-Key": KEY}
        r = post(b, exported, key)
        assert r.status_code == 201, r.text
        assert r.json() == made
        after = b.post("/classify", files=query, data={"adapter": made["id"]}).json()["results"]
        assert after == before
        assert post(b, exported, key).status_code == 200  # the same file again changes nothing
        edited = exported.replace(b'"moving"', b'"edited"')
        # a consistent file from a deployment whose tiny_emb/1 is another network
        bad_sha = resigned(bundle={**doc["bundle"], "model_sha256": "0" * 64},
                           meta={**doc["meta"], "bundle_sha256": "0" * 64})
        cases = {
            "edited without a new checksum": (edited, 422, "invalid_adapter_file"),
            "not JSON": (b"\x89PNG not json", 422, "invalid_adapter_file"),
            "truncated": (exported[: len(exported) // 2], 422, "invalid_adapter_file"),
            "another bundle's hash": (bad_sha, 422, "bundle_mismatch"),
            "arrays of the wrong size": (resigned(arrays={**doc["arrays"], "prototypes": {
                **doc["arrays"]["prototypes"], "shape": [3, 7]}}), 422, "invalid_adapter_file"),
            "same id, other content": (resigned(meta={**doc["meta"], "name": "other"}), 409, "adapter_exists"),
        }
        for name, (blob, status, code) in cases.items():
            r = post(b, blob, key)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), (name, r.text)
        assert [x["id"] for x in b.get("/adapters").json()["adapters"]] == [made["id"]]

    shutil.rmtree(store_copy / "tiny_emb")  # a deployment without the embedding bundle
    with TestClient(app_factory(state_dir=tmp_path / "c", model_store=store_copy)) as c:
        r = post(c, exported)
        assert r.status_code == 404 and r.json()["error"]["code"] == "bundle_not_loaded"
        assert r.json()["error"]["detail"]["bundle"] == "tiny_emb/1" and "tiny_emb/1" in r.json()["error"]["message"]


def test_an_adapter_whose_bundle_is_gone_gets_a_4xx_naming_it(app_factory, store_copy, tmp_path):
    import shutil

    arrays, labels = _support()
    state = tmp_path / "state"
    with TestClient(app_factory(state_dir=state)) as c:
        adapter_id = _post_adapt(c, arrays, labels).json()["id"]
    shutil.rmtree(store_copy / "tiny_emb")
    with TestClient(app_factory(state_dir=state, model_store=store_copy)) as c:
        assert [a["id"] for a in c.get("/adapters").json()["adapters"]] == [adapter_id]  # still listed
        image = ("q.png", png(arrays[0]), "image/png")
        for r in (c.post("/classify", files=[("files", image)], data={"adapter": adapter_id}),
                  c.post("/gradcam", files={"file": image}, data={"adapter": adapter_id})):
            error = r.json()["error"]
            assert r.status_code == 404 and error["code"] == "bundle_not_loaded", r.text
            assert "tiny_emb/1" in error["message"] and error["detail"]["bundle"] == "tiny_emb/1"
        # it can still leave for a deployment that has its bundle: the record holds the bundle's hash
        assert c.get(f"/adapters/{adapter_id}/export").status_code == 200


def test_an_adapter_file_in_the_old_format_still_serves(app_factory, bundles, tmp_path):
    # byte for byte what the service wrote before heads were chosen: `prototypes` and `meta`, no header
    import io
    import json

    arrays, labels = _support()
    emb = reference_embeddings(bundles["emb"], arrays)
    protos = np.stack([emb[:3].mean(0), emb[3:].mean(0)]).astype(np.float32)
    adapter_id = "oldformat" + "x" * 13
    meta = {"id": adapter_id, "name": "old", "model": "tiny_emb", "version": 1, "classes": ["tumour", "stroma"],
            "shots": {"tumour": 3, "stroma": 3}, "distance": "squared_euclidean", "temperature": 1.0,
            "loo_accuracy": 1.0, "created_at": "2026-11-30T12:00:00Z"}
    buf = io.BytesIO()
    np.savez(buf, prototypes=protos, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    (tmp_path / "state" / "adapters").mkdir(parents=True)
    (tmp_path / "state" / "adapters" / f"{adapter_id}.npz").write_bytes(buf.getvalue())
    with TestClient(app_factory(state_dir=tmp_path / "state")) as c:
        shown = c.get(f"/adapters/{adapter_id}").json()
        assert shown["head"] == "prototype" and shown["out_of_support"] is None and shown["selection"] is None
        queries = [arrays[1], random_rgb(7)]
        out = c.post("/classify", files=[("files", ("q.png", png(q), "image/png")) for q in queries],
                     data={"adapter": adapter_id}).json()["results"]
        p = softmax_neg(distances(reference_embeddings(bundles["emb"], queries), protos, "squared_euclidean"), 1.0)
        assert [r["score"] for r in out] == pytest.approx(p.max(1).tolist(), abs=1e-4)
        assert [r["out_of_support"] for r in out] == [None, None]  # no threshold was ever calibrated for it
        assert c.get(f"/adapters/{adapter_id}/export").status_code == 200  # the loaded bundle vouches for it


def test_gradcam_of_an_adapter_matches_autograd(app_factory, bundles):
    pytest.importorskip("torch")
    import base64
    import io

    from PIL import Image

    arrays, labels = _support()
    net = bundles["emb"]
    with TestClient(app_factory()) as c:
        made = _post_adapt(c, arrays, labels, head="cosine").json()
        query = random_rgb(11)
        r = c.post("/gradcam", files={"file": ("q.png", png(query), "image/png")},
                   data={"adapter": made["id"], "target": "stroma"})
        assert r.status_code == 200, r.text
        body = r.json()
        stored = c.app.state.adapters.get(made["id"])
        assert body["adapter"]["id"] == made["id"] and body["target"] == "stroma"
        assert body["explained"]["embedding_slice"] == [0, body["explained"]["embedding_dim"]]
        assert isinstance(body["out_of_support"], bool)
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"]))), dtype=np.float32) / 255
        assert r.status_code == 200 and got.shape == (32, 32)
        bad = c.post("/gradcam", files={"file": ("q.png", png(query), "image/png")},
                     data={"adapter": made["id"], "target": "polyp"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_target"
        png_overlay = c.post("/gradcam", files={"file": ("q.png", png(query), "image/png")},
                             data={"adapter": made["id"]}, headers={"Accept": "image/png"})
        assert png_overlay.status_code == 200 and png_overlay.headers["content-type"] == "image/png"

    proto = stored.head_arrays["prototypes"][1].astype(np.float32)
    np.testing.assert_allclose(got, _autograd_cosine_cam(net, query, proto, (32, 32)), atol=1.5 / 255)


def _autograd_cosine_cam(net, query: np.ndarray, proto: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference: Grad-CAM by autograd through the eager network, the cosine head written out in torch."""
    import torch

    mean = np.asarray(net.pretrained_cfg["mean"], dtype=np.float32)
    std = np.asarray(net.pretrained_cfg["std"], dtype=np.float32)
    x = torch.from_numpy(((query.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None].copy())
    features = net.features(x).detach().requires_grad_(True)
    e = features.mean(dim=(2, 3))[0]
    score = 10.0 * (e / e.norm()) @ torch.from_numpy(proto)
    (grad,) = torch.autograd.grad(score, features)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * features).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=size, mode="bilinear", align_corners=False)[0, 0]
    return ((cam - cam.min()) / (cam.max() - cam.min())).detach().numpy()


@pytest.mark.slow
def test_gradcam_of_an_adapter_on_a_taught_attention_embedding_matches_autograd(tmp_path):
    """An embedding with a taught pooling attention holds the last map twice, weighted and plain (two parts); the
    bundle's pool_weights let the service differentiate through the weighted block: its map equals autograd's."""
    torch = pytest.importorskip("torch")
    import base64
    import io

    from PIL import Image

    from models import create_model
    from models.efficientnet_lite import imagenet_state_dict
    from models.layers import weighted_avg
    from training.export import export_bundle

    torch.manual_seed(0)
    net = create_model("efficientnet_lite0", embed_stages=(4,), pool_attn_stages=(3, 4), pool_attn_power=2.0,
                       pool_attn_keep_mean=True).eval()
    net.load_state_dict(imagenet_state_dict("lite0"), strict=False)
    with torch.no_grad():
        net.pool_attn.conv2.weight.normal_(0, 3.0)  # weights far from uniform, as a taught attention's are
    export_bundle(net, tmp_path / "store", "taught_emb", classes=["a", "b"], task="embedding", input_size=(64, 64))
    arrays, labels = _support()
    query = random_rgb(11, size=64)
    with TestClient(make_app(tmp_path / "store", tmp_path / "state", max_wait_ms=2.0)) as c:
        made = _post_adapt(c, arrays, labels, head="cosine").json()
        # every part separates flat colours perfectly: the tie goes to the first part, the attention's
        assert made["embedding_part"] == "taught_attention" and made["embedding_slice"] == [0, 112 + 1280]
        r = c.post("/gradcam", files={"file": ("q.png", png(query), "image/png")},
                   data={"adapter": made["id"], "target": "stroma"})
        assert r.status_code == 200, r.text
        body = r.json()
        proto = c.app.state.adapters.get(made["id"]).head_arrays["prototypes"][1].astype(np.float32)
    half = 112 + 1280
    assert body["explained"]["embedding_slices"] == [[112, half]] and body["explained"]["embedding_part"] == (
        "taught_attention")
    assert body["explained"]["pooling"] == "L2-normalised weighted mean"
    got = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"]))), dtype=np.float32) / 255

    # reference: autograd through the eager network; both blocks of the last map as functions of it
    mean = np.asarray(net.pretrained_cfg["mean"], dtype=np.float32)
    std = np.asarray(net.pretrained_cfg["std"], dtype=np.float32)
    x = torch.from_numpy(((query.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        fixed, weights = net.embed(x)[0], net.pool_weights(x)
    features = net.features(x).detach().requires_grad_(True)
    unit = torch.nn.functional.normalize
    e = torch.cat([fixed[:112], unit(weighted_avg(features, weights), dim=1)[0]])  # the part the adapter reads
    score = 10.0 * (e / e.norm()) @ torch.from_numpy(proto)
    (grad,) = torch.autograd.grad(score, features)
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * features).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
    cam = ((cam - cam.min()) / (cam.max() - cam.min())).detach().numpy()
    np.testing.assert_allclose(got, cam, atol=1.5 / 255)
