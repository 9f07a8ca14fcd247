"""bench.tta: the averaging copy computes the source's outputs averaged over its views, and says how it was made."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bench import tta
from bench.derived import graph_outputs
from service.registry import max_batch_images
from service.store import load_bundle


@pytest.fixture
def source(labelled_bundle, tmp_path):
    """The labelled bundle with an out-of-distribution threshold and test metrics, as training writes them."""
    data, bundle = labelled_bundle
    copy = tmp_path / "src" / "tiny_oos" / "1"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["out_of_distribution"] = {"score": "energy", "threshold": 0.0, "flag_rate": 0.5,
                                       "val_images": 6, "val_flag_rate": 0.5}
    manifest["metrics"] = {"test": {"balanced_accuracy": 0.25}}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return data, load_bundle(copy)


def test_the_copy_averages_the_views_and_keeps_the_image_s_own_features(source, tmp_path):
    pytest.importorskip("onnx")
    data, src = source
    assert tta.main([str(src.path), "--store", str(tmp_path / "store"), "--version", "2", "--data-dir", str(data),
                     "--views", "identity,hflip,rot180"]) == 0
    copy = load_bundle(tmp_path / "store" / "tiny_oos" / "2")  # the contract and the graphs' I/O check out
    x = np.random.default_rng(1).normal(size=(5, 3, 32, 32)).astype(np.float32)
    got, alone = graph_outputs(copy.model_file, x), graph_outputs(src.model_file, x)
    views = [alone, graph_outputs(src.model_file, x[..., ::-1].copy()),
             graph_outputs(src.model_file, x[..., ::-1, ::-1].copy())]
    for name in ("probabilities", "logits", "embedding"):
        np.testing.assert_allclose(got[name], np.mean([v[name] for v in views], axis=0), atol=1e-5)
    assert not np.allclose(got["probabilities"], alone["probabilities"], atol=1e-4)  # the flips do change them
    np.testing.assert_array_equal(got["features"], alone["features"])
    assert copy.graphs["classify"]["outputs"] == src.graphs["classify"]["outputs"]
    # the service's batcher counts forward passes: three views per image, so 8 passes are 2 images
    assert (max_batch_images(copy, 8), max_batch_images(copy, 2), max_batch_images(src, 8)) == (2, 1, 8)

    manifest = copy.manifest
    block = manifest["graphs"]["classify"]["test_time_augmentation"]
    assert block["views"] == ["identity", "hflip", "rot180"] and block["source"] == "tiny_oos/1"
    assert block["chosen_on"] is None  # fixed by --views, not chosen
    assert set(block["selection"]) == {"identity", "identity+hflip", "identity+vflip", "identity+rot180"}
    assert block["measured"]["outputs_max_abs"] <= tta.TOLERANCE["outputs_max_abs"]
    assert manifest["metrics"]["test"]["n"] == 6 and manifest["metrics"]["val"]["n"] == 6
    assert manifest["metrics"]["test_single_view"] == {"balanced_accuracy": 0.25}
    assert manifest["out_of_distribution"]["val_images"] == 6  # calibrated again, on the copy's logits
    assert (copy.path / "gradcam.onnx").read_bytes() == (src.path / "gradcam.onnx").read_bytes()


def test_without_views_the_validation_split_chooses_one_flip(source, tmp_path):
    pytest.importorskip("onnx")
    data, src = source
    copy = tta.tta_bundle(src, tmp_path / "store", data)
    block = copy.manifest["graphs"]["classify"]["test_time_augmentation"]
    pairs = {k: v for k, v in block["selection"].items() if k != "identity"}
    assert block["views"] == max(pairs, key=pairs.get).split("+") and block["chosen_on"].startswith("val (6 images")


def test_the_choice_is_the_best_flip_on_a_constructed_case():
    y = np.array([0, 1])
    right, wrong = np.array([[0.9, 0.1], [0.1, 0.9]]), np.array([[0.1, 0.9], [0.9, 0.1]])
    per_view = {"identity": {"probabilities": np.full((2, 2), 0.5)}, "hflip": {"probabilities": wrong},
                "vflip": {"probabilities": right}, "rot180": {"probabilities": wrong}}
    views, scores = tta.choose_views(per_view, y)
    assert views == ["identity", "vflip"] and scores["identity+vflip"] == 1.0


def test_bad_views_and_bundles_without_a_split_are_refused(source, tiny_store, tmp_path, capsys):
    data, src = source
    out = tmp_path / "out"
    for views in ("hflip,identity", "identity,identity", "identity,rot90"):
        assert tta.main([str(src.path), "--store", str(out), "--views", views]) == 2
    assert "--views must start with identity" in capsys.readouterr().err
    assert tta.main([str(tiny_store / "tiny_cbam" / "1"), "--store", str(out), "--data-dir", str(data)]) == 1
    assert "needs a classification bundle with a split.json" in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("model.onnx"))
