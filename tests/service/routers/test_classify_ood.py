"""POST /classify with a bundle whose manifest calibrates an out-of-distribution flag, and with one that does not.

The flagged bundle is a copy of the session's `tiny_cls/1` (same graph, same hashes) under another name,
with `out_of_distribution` added to its manifest: the scores are checked against eager PyTorch's logits.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bundle import ood
from service.slides.tissue import MIN_TISSUE_FRACTION
from tests.service.conftest import SIZE, make_app, png, random_rgb

NAME = "tiny_ood"


def _eager_energy(net, arrays) -> np.ndarray:
    import torch

    mean = np.asarray(net.pretrained_cfg["mean"], dtype=np.float32)
    std = np.asarray(net.pretrained_cfg["std"], dtype=np.float32)
    x = np.stack([((a.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1) for a in arrays])
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
    return -np.log(np.exp(logits.astype(np.float64)).sum(axis=1))


@pytest.fixture()
def arrays():
    # random textures and flat colours: the tiny random network scores them differently enough to split them
    flat = [np.full((SIZE, SIZE, 3), v, np.uint8) for v in (0, 128, 255)]
    return [random_rgb(s) for s in range(5)] + flat


@pytest.fixture()
def store(bundles, tmp_path, arrays):
    """The shared store plus `tiny_ood/1`: tiny_cls/1 with a threshold between the scores of `arrays`."""
    dst = tmp_path / "store"
    shutil.copytree(bundles["store"], dst)
    shutil.copytree(dst / "tiny_cls" / "1", dst / NAME / "1")
    manifest_file = dst / NAME / "1" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    scores = _eager_energy(bundles["cls"], arrays)
    threshold = float(np.median(scores))
    manifest.update(name=NAME, out_of_distribution={
        "score": "energy", "threshold": threshold, "flag_rate": 0.05, "calibrated_on": "val", "val_images": 20,
        "val_flag_rate": 0.05})
    manifest_file.write_text(json.dumps(manifest))
    return dst, scores, threshold


def _post(client, arrays, model):
    files = [("files", (f"{i}.png", png(a), "image/png")) for i, a in enumerate(arrays)]
    r = client.post("/classify", files=files, data={"model": model})
    assert r.status_code == 200, r.text
    return r.json()["results"]


def test_classify_flags_with_a_calibrated_bundle_and_not_without(store, arrays, tmp_path):
    path, scores, threshold = store
    with TestClient(make_app(path, tmp_path / "state", max_files=len(arrays), max_wait_ms=2.0)) as client:
        flagged = _post(client, arrays, NAME)
        plain = _post(client, arrays, "tiny_cls")
        schema = client.get("/openapi.json").json()["components"]["schemas"]["ImageResult"]["properties"]
    got = np.array([r["ood_score"] for r in flagged])
    np.testing.assert_allclose(got, scores, atol=1e-4)  # -logsumexp of the graph's logits, as eager PyTorch
    by_score = scores > threshold
    assert 0 < by_score.sum() < len(arrays)  # the threshold splits the images: both answers are exercised
    # flat colours are no tissue (flagged whatever their score), random colour textures are all tissue
    tissue = np.array([r["tissue_fraction"] for r in flagged])
    assert (tissue[5:] == 0).all() and (tissue[:5] > 0.5).all()
    expected = by_score | (tissue < MIN_TISSUE_FRACTION)
    assert [r["out_of_distribution"] for r in flagged] == expected.tolist() and not expected.all()
    assert all(isinstance(r["out_of_distribution"], bool) for r in flagged)
    # a bundle without the field answers as before: the same classes, no flag, no score
    assert all("out_of_distribution" not in r and "ood_score" not in r for r in plain)
    assert [r["label"] for r in plain] == [r["label"] for r in flagged]
    assert {"out_of_distribution", "ood_score", "tissue_fraction"} <= set(schema)


def test_flag_follows_the_service_score_function(store, arrays, tmp_path):
    """The service scores with bundle.ood: a threshold below every score flags everything."""
    path, scores, _ = store
    manifest_file = path / NAME / "1" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["out_of_distribution"]["threshold"] = float(ood.energy(np.zeros((1, 3)))[0]) - 1e6
    manifest_file.write_text(json.dumps(manifest))
    with TestClient(make_app(path, tmp_path / "state", max_files=len(arrays), max_wait_ms=2.0)) as client:
        results = _post(client, arrays, NAME)
    assert all(r["out_of_distribution"] for r in results)


def test_tta_flags_the_image_as_sent(store, arrays, tmp_path):
    """With tta=dihedral the class probabilities average 8 views, but the flag, score and tissue fraction are
    those of the image as sent: the view the threshold was calibrated on."""
    path, _, _ = store
    with TestClient(make_app(path, tmp_path / "state", max_files=len(arrays), max_wait_ms=2.0)) as client:
        sent = _post(client, arrays, NAME)
        files = [("files", (f"{i}.png", png(a), "image/png")) for i, a in enumerate(arrays)]
        r = client.post("/classify", files=files, data={"model": NAME, "tta": "dihedral"})
    assert r.status_code == 200, r.text
    averaged = r.json()["results"]
    for one, tta in zip(sent, averaged, strict=True):
        assert tta["out_of_distribution"] == one["out_of_distribution"]
        assert tta["ood_score"] == pytest.approx(one["ood_score"], abs=1e-5)
        assert tta["tissue_fraction"] == pytest.approx(one["tissue_fraction"])
    assert any(abs(t["score"] - o["score"]) > 1e-4 for t, o in zip(averaged, sent, strict=True))  # views differ
