"""Grad-CAM: the autograd reference, the exported head graph against it, and localisation scoring."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import models
from training.export import export_bundle
from training.gradcam import (
    gradcam_reference,
    localisation_scores,
    normalise_maps,
    score_localisation,
)

SIZE = 64


def _tiny(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create_model(name, num_classes=4, widths=(8, 8, 16, 16), **kw).eval()


def test_reference_matches_closed_form_for_pool_linear_head():
    # for head = fc(mean(A)), d y_c / d A_k[i,j] = W[c,k] / (h*w): an independent check of the autograd path
    model = _tiny("resnet18")
    x = torch.randn(3, 3, SIZE, SIZE)
    target = torch.tensor([0, 2, 3])
    with torch.no_grad():
        feats = model.features(x)
        h, w = feats.shape[-2:]
        alpha = model.fc.weight[target][:, :, None, None] / (h * w)
        cam = torch.relu((alpha * feats).sum(1, keepdim=True))
        cam = torch.nn.functional.interpolate(cam, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
        expected = normalise_maps(cam)
    got = gradcam_reference(model, x, target)
    assert got.shape == (3, SIZE, SIZE)
    assert torch.allclose(got, expected, atol=1e-5)


def test_normalise_maps_range_and_flat_maps():
    maps = torch.stack([torch.linspace(-1, 3, 16).reshape(4, 4), torch.full((4, 4), 2.0), torch.full((4, 4), -1.0)])
    out = normalise_maps(maps)
    assert out[0].min() == 0 and out[0].max() == 1
    assert torch.all(out[1] == 0) and torch.all(out[2] == 0)  # flat maps: zeros, not NaN
    assert torch.isfinite(out).all()


def test_onnx_gradcam_equals_autograd_on_lwa_head(tmp_path):
    # lwa_resnet's head is FC + LeakyReLU, FC + ReLU, dropout, classifier: no closed form
    model = _tiny("lwa_resnet18", head_dims=(16, 8))
    bundle = export_bundle(model, tmp_path, "lwa", classes=["a", "b", "c", "d"], input_size=(SIZE, SIZE))
    classify = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    cam = ort.InferenceSession(str(bundle / "gradcam.onnx"), providers=["CPUExecutionProvider"])
    torch.manual_seed(1)
    for batch in (1, 3):
        x = torch.randn(batch, 3, SIZE, SIZE)
        feats = classify.run(["features"], {"image": x.numpy()})[0]
        for target in (torch.zeros(batch, dtype=torch.long), torch.arange(batch) % 4):
            got = cam.run(None, {"features": feats, "target_class": target.numpy()})[0]
            ref = gradcam_reference(model, x, target).numpy()
            assert got.shape == (batch, SIZE, SIZE)
            assert np.abs(got - ref).max() < 1e-3
            # not a degenerate pass: each map spans [0, 1] (or is flat zero in both)
            assert np.allclose(got.max(axis=(1, 2)), ref.max(axis=(1, 2)), atol=1e-3)
    # the classes of a non-linear head give different maps, so the target really reaches the graph
    x = torch.randn(1, 3, SIZE, SIZE)
    feats = classify.run(["features"], {"image": x.numpy()})[0]
    maps = [cam.run(None, {"features": feats, "target_class": np.array([c])})[0] for c in range(4)]
    assert max(np.abs(maps[0] - m).max() for m in maps[1:]) > 1e-2


def test_localisation_scores_on_known_maps():
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 10, 10), bool)
    masks[:, 2:5, 2:5] = True  # 9% of the image
    inside = np.zeros((4, 10, 10), np.float32)
    inside[:, 3, 3] = 1.0
    inside += rng.random((4, 10, 10)).astype(np.float32) * 0.01
    s = localisation_scores(inside, masks)
    assert s["pointing_game"] == 1.0
    assert s["pointing_game_random"] == pytest.approx(0.09)
    assert s["top_coverage_random"] == pytest.approx(0.2)

    # the map equal to the mask: its top 20 pixels contain all 9 mask pixels
    s = localisation_scores(masks.astype(np.float32) + inside * 0.1, masks)
    assert s["top_coverage"] == 1.0
    # peak outside the mask: no hit
    outside = np.zeros((4, 10, 10), np.float32)
    outside[:, 8, 8] = 1.0
    assert localisation_scores(outside, masks)["pointing_game"] == 0.0
    # a flat map points nowhere: a miss with no coverage, though its argmax (pixel 0) is in the mask
    masks[:, 0, 0] = True
    s = localisation_scores(np.zeros((4, 10, 10), np.float32), masks)
    assert s["pointing_game"] == 0.0 and s["top_coverage"] == 0.0 and s["n_flat_maps"] == 4


def test_random_maps_score_near_the_computed_baseline():
    rng = np.random.default_rng(1)
    masks = rng.random((400, 16, 16)) < 0.3
    cams = rng.random((400, 16, 16)).astype(np.float32)
    s = localisation_scores(cams, masks)
    assert abs(s["pointing_game"] - s["pointing_game_random"]) < 0.07
    assert abs(s["top_coverage"] - s["top_coverage_random"]) < 0.02


def test_empty_masks_are_skipped_and_all_empty_is_an_error():
    cams = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    masks = np.zeros((3, 8, 8), bool)
    masks[0, :4] = True
    s = localisation_scores(cams, masks)
    assert s["n_images"] == 1 and s["n_empty_masks_skipped"] == 2
    with pytest.raises(ValueError, match="empty"):
        localisation_scores(cams, np.zeros((3, 8, 8), bool))
    with pytest.raises(ValueError, match="N, H, W"):
        localisation_scores(cams, masks[:, :4])


def test_score_localisation_bundle_agrees_with_model(tmp_path):
    model = _tiny("resnet18")
    bundle = export_bundle(model, tmp_path, "r18", classes=["a", "b", "c", "d"], input_size=(SIZE, SIZE))
    torch.manual_seed(2)
    images = torch.randn(5, 3, SIZE, SIZE)
    masks = torch.zeros(5, SIZE, SIZE, dtype=torch.bool)
    masks[:, 8:40, 16:48] = True
    targets = torch.tensor([0, 1, 2, 3, 0])
    from_model = score_localisation(model, images, masks, targets, batch_size=2)
    from_bundle = score_localisation(bundle, images, masks, targets, batch_size=2)
    assert from_model["pointing_game"] == from_bundle["pointing_game"]
    assert from_model["top_coverage"] == pytest.approx(from_bundle["top_coverage"], abs=0.02)
    assert from_model["n_images"] == 5
