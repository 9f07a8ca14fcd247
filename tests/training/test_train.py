"""The loop end to end on tiny generated data: checkpoints, resume, evaluate, bad images."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import models
from training.config import load_config
from training.data import HistoDataset, scan_image_folder
from training.evaluate import evaluate_run
from training.train import train
from training.transforms import eval_transform

from .conftest import make_folder

TINY = ["model=\"resnet18\"", "model_args={\"widths\": [8, 8, 16, 16]}", "image_size=16", "batch_size=8",
        "epochs=2", "threads=1", "cache=false", "val_frac=0.25", "test_frac=0.25", "lr=0.01"]


@pytest.fixture
def colour_folder(tmp_path):
    # three classes that differ by colour: learnable in a few steps
    return make_folder(tmp_path / "ebhi_seg", {"red": 0, "green": 1, "blue": 2}, groups_per_class=8,
                       images_per_group=2, colours={"red": (200, 40, 40), "green": (40, 200, 40),
                                                    "blue": (40, 40, 200)})


def test_train_writes_a_self_describing_checkpoint_and_evaluates(colour_folder, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(None, TINY + [f"data=\"{colour_folder}\""])
    summary = train(cfg, run)
    assert summary["epochs_run"] == 2
    for name in ("config.json", "split.json", "data_report.json", "checkpoint.pt", "last.pt", "history.json"):
        assert (run / name).is_file(), name
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)  # plain dicts only
    assert ckpt["architecture"] == "resnet18" and ckpt["model_args"]["num_classes"] == 3
    assert ckpt["config"]["image_size"] == 16 and ckpt["classes"] == ["blue", "green", "red"]
    model = models.create_model(ckpt["architecture"], **ckpt["model_args"])
    model.load_state_dict(ckpt["model"])

    metrics = evaluate_run(run, baseline=True)
    for name in ("metrics.json", "curves.png", "confusion_matrix.png", "reliability.png"):
        assert (run / name).is_file(), name
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["test"]["n"] == metrics["test"]["n"] > 0
    assert 0 <= on_disk["test"]["accuracy"] <= 1 and on_disk["temperature"] > 0
    assert "majority_rate" in on_disk["summary"] and on_disk["baseline"]["test"]["n"] == metrics["test"]["n"]
    # the whole run's wall-clock, not only the time up to the checkpoint kept
    history = json.loads((run / "history.json").read_text())
    assert on_disk["training"]["seconds"] == history[-1]["elapsed_s"] >= on_disk["training"]["seconds_to_checkpoint"]


def test_resume_continues_from_last_epoch(colour_folder, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, TINY + [f"data=\"{colour_folder}\""]), run)
    split_before = (run / "split.json").read_text()
    summary = train(load_config(None, TINY + [f"data=\"{colour_folder}\"", "epochs=3"]), run, resume=True)
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3] and summary["epochs_run"] == 3
    assert json.loads((run / "split.json").read_text())["files"] == json.loads(split_before)["files"]


def test_resume_restores_the_weights(colour_folder, tmp_path):
    """With lr 0 the resumed epoch cannot move a parameter: the weights after it are epoch 2's only
    if resume loaded them (a fresh initialisation would differ)."""
    run = tmp_path / "run"
    train(load_config(None, TINY + [f"data=\"{colour_folder}\""]), run)
    before = torch.load(run / "last.pt", weights_only=True)["model"]
    train(load_config(None, TINY + [f"data=\"{colour_folder}\"", "epochs=3", "lr=0.0"]), run, resume=True)
    after = torch.load(run / "last.pt", weights_only=True)
    assert after["epoch"] == 2  # the third epoch ran
    params = [k for k in before if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert params and all(torch.equal(before[k], after["model"][k]) for k in params)


def test_dataset_thresholds_masks_and_flags_missing_ones(tiny_folder, tmp_path):
    mask_root = tmp_path / "masks"
    folder = scan_image_folder(tiny_folder)
    s0 = folder.samples[0]
    m = mask_root / s0.path.parent.name / s0.path.name
    m.parent.mkdir(parents=True)
    grey = np.zeros((16, 16), np.uint8)
    grey[:, :8] = 127  # just below the threshold
    grey[:, 8:] = 128
    Image.fromarray(grey).save(m)
    with pytest.warns(UserWarning, match="no mask"):
        folder = scan_image_folder(tiny_folder, mask_root=mask_root)
    ds = HistoDataset(folder.samples[:2], 16, eval_transform([0, 0, 0], [1, 1, 1]), with_masks=True)
    first, second = ds[0], ds[1]
    assert first["has_mask"] and not second["has_mask"]
    assert first["mask"][0, :, :8].sum() == 0 and first["mask"][0, :, 8:].min() == 1
    assert second["mask"].sum() == 0


def test_unreadable_image_is_counted_in_the_run_report(colour_folder, tmp_path):
    bad = colour_folder / "red" / "GT0999-1-400-000.png"
    bad.write_bytes(b"not a png")
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match="GT0999-1-400-000.png"):
        train(load_config(None, TINY + [f"data=\"{colour_folder}\"", "epochs=1", "baseline=false"]), run)
    metrics = evaluate_run(run, baseline=False)
    assert metrics["data"]["skipped_count"] == 1 and metrics["data"]["skipped"][0]["file"].endswith(bad.name)


def test_freeze_pretrained_trains_only_what_init_lacks(colour_folder, tmp_path):
    """A probe: every tensor the init provides (weights and BatchNorm statistics) leaves the run as it
    came in; the classifier the init could not provide (3 classes, not 1000) and the attention moved."""
    init = models.create_model("resnet18", num_classes=1000, widths=[8, 8, 16, 16]).state_dict()
    torch.save(init, tmp_path / "init.pth")
    run = tmp_path / "run"
    train(load_config(None, TINY + [f"data=\"{colour_folder}\"", "model=\"cbam_resnet18\"", "ema_decay=0",
                                    f"init=\"{tmp_path / 'init.pth'}\"", "freeze_pretrained=true"]), run)
    after = torch.load(run / "last.pt", weights_only=True)["model"]
    kept = [k for k in init if not k.startswith("fc.")]
    assert kept and all(torch.equal(init[k], after[k]) for k in kept)
    assert not torch.equal(after["fc.weight"][:, :4], torch.zeros_like(after["fc.weight"][:, :4]))
    attn = [k for k in after if ".attn." in k and k not in init]
    start = models.create_model("cbam_resnet18", num_classes=3, widths=[8, 8, 16, 16]).state_dict()
    assert attn and any(not torch.equal(start[k], after[k]) for k in attn)
    with pytest.raises(ValueError, match="needs init"):
        train(load_config(None, TINY + [f"data=\"{colour_folder}\"", "freeze_pretrained=true"]), tmp_path / "r2")


def test_linear_probe_is_epoch_zero_and_matches_scikit_learn(colour_folder, tmp_path):
    """The probe writes scikit-learn's regression (standardisation folded in) into the classifier:
    the checkpoint's logits equal the regression's decision function on the same pooled features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from training.loaders import eval_loader
    from training.probe import pooled_features
    from training.splits import load_split

    init = models.create_model("resnet18", num_classes=1000, widths=[8, 8, 16, 16]).state_dict()
    torch.save(init, tmp_path / "init.pth")
    run = tmp_path / "run"
    cfg = load_config(None, TINY + [f"data=\"{colour_folder}\"", "epochs=0", "ema_decay=0", "linear_probe=true",
                                    f"init=\"{tmp_path / 'init.pth'}\"", "amp=false"])
    summary = train(cfg, run)
    assert summary["epochs_run"] == 0
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == -1 and ckpt["history"][0]["epoch"] == 0 and ckpt["probe"]["C"] > 0
    assert ckpt["history"][0]["elapsed_s"] >= 0  # a probe-only run reports its wall-clock too
    model = models.create_model("resnet18", **ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    split = load_split(run / "split.json", root=colour_folder)
    x, y = pooled_features(model, eval_loader(cfg, split.train, None), torch.device("cpu"), cfg)
    scaler = StandardScaler().fit(x)
    ref = LogisticRegression(C=ckpt["probe"]["C"], max_iter=5000, class_weight="balanced", random_state=0)
    ref.fit(scaler.transform(x), y)
    logits = model.get_classifier()(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    # softmax is shift-invariant: compare logits relative to their mean
    ours = logits - logits.mean(1, keepdims=True)
    theirs = ref.decision_function(scaler.transform(x))
    theirs = theirs - theirs.mean(1, keepdims=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)
    assert (ours.argmax(1) == y).mean() > 0.9  # colour is linearly separable in pooled features
