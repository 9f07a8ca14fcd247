"""`python -m training export | verify | localise` on a run trained here on tiny generated data."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from training.cli import main
from training.config import load_config
from training.evaluate import evaluate_run
from training.train import train

from .conftest import make_folder

TINY = ["model=\"resnet20\"", "model_args={\"widths\": [4, 8, 8]}", "image_size=16", "batch_size=8",
        "epochs=1", "threads=1", "cache=false", "val_frac=0.25", "test_frac=0.25", "lr=0.01", "baseline=false",
        "name=\"tiny_cli\"", "recipe=\"tiny CLI test recipe\""]


@pytest.fixture(scope="module")
def run_and_masks(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    data = make_folder(root / "ebhi_seg", {"red": 0, "green": 1, "blue": 2}, groups_per_class=8, images_per_group=2,
                       colours={"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)})
    masks = root / "ebhi_seg_masks"
    for i, png in enumerate(sorted(data.rglob("*.png"))):
        mask = np.zeros((16, 16), np.uint8)
        if i % 5:  # every fifth image has an empty mask: it must be skipped, not scored
            mask[:, : 4 + i % 8] = 255
        out = masks / png.relative_to(data)
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(out)
    run = root / "run"
    train(load_config(None, TINY + [f"data=\"{data}\""]), run)
    evaluate_run(run, baseline=False)
    return run, masks


def test_export_verify_localise(run_and_masks, tmp_path, capsys):
    run, masks = run_and_masks
    store = tmp_path / "store"
    assert main(["export", "--run", str(run), "--store", str(store), "--masks", str(masks)]) == 0
    bundle = store / "tiny_cli" / "1"
    m = json.loads((bundle / "manifest.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert m["name"] == "tiny_cli" and m["architecture"] == "resnet20" and m["classes"] == metrics["classes"]
    assert m["temperature"] == pytest.approx(metrics["temperature"])
    assert m["metrics"]["test"]["accuracy"] == metrics["test"]["accuracy"]
    assert m["metrics"]["majority_rate"] == metrics["majority_rate"]
    assert m["split"]["file"] == "split.json" and m["split"]["description"] == metrics["split"]["description"]
    assert "split.json" in m["files"] and (bundle / "split.json").read_text() == (run / "split.json").read_text()
    assert m["recipe"] == "tiny CLI test recipe" and m["training"]["image_size"] == 16
    assert m["model_args"]["widths"] == [4, 8, 8]
    assert re.fullmatch(r"[0-9a-f]{64}", m["dataset_fingerprint"])
    ood = m["out_of_distribution"]  # calibrated by default, on val, at 5 %
    assert ood["score"] == "energy" and ood["flag_rate"] == 0.05 and ood["calibrated_on"] == "val"
    assert ood["val_images"] == metrics["split"]["counts"]["val"] and ood["val_flag_rate"] <= 0.05
    loc = m["metrics"]["gradcam_localisation"]
    n_test = metrics["split"]["counts"]["test"]
    assert loc["n_images"] + loc["n_empty_masks_skipped"] == n_test and loc["n_empty_masks_skipped"] > 0
    assert 0 <= loc["pointing_game"] <= 1 and 0 < loc["pointing_game_random"] < 1
    assert loc["top_coverage_random"] == pytest.approx(round(0.2 * 256) / 256)

    capsys.readouterr()
    assert main(["verify", str(bundle), "--run", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["parity"]["probabilities_max_abs_diff"] <= 1e-4

    # the same scores again from the bundle alone (ONNX Runtime), as `localise` computes them
    out = tmp_path / "loc.json"
    # a bundle's split names its dataset; the images are found under --data (here: not the data dir)
    assert main(["localise", "--bundle", str(bundle), "--split", str(bundle / "split.json"), "--masks", str(masks),
                 "--data", str(masks.parent / "ebhi_seg"), "--out", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["n_images"] == loc["n_images"] and again["pointing_game"] == pytest.approx(loc["pointing_game"])

    (bundle / "model.onnx").write_bytes((bundle / "model.onnx").read_bytes() + b"\0")
    capsys.readouterr()
    assert main(["verify", str(bundle)]) == 1
    assert "sha256 mismatch for 'model.onnx'" in capsys.readouterr().out


def test_export_needs_evaluated_run(run_and_masks, tmp_path):
    run, _ = run_and_masks
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("checkpoint.pt", "split.json", "config.json"):
        (bare / name).write_bytes((run / name).read_bytes())
    with pytest.raises(SystemExit, match="metrics.json"):
        main(["export", "--run", str(bare), "--store", str(tmp_path / "s")])


def test_export_calibrates_the_ood_flag_on_val_and_exports_without_data(run_and_masks, tmp_path, capsys):
    import math

    import onnxruntime as ort
    import torch

    from bundle import ood
    from training.data import HistoDataset
    from training.splits import load_split
    from training.transforms import eval_transform

    run, _ = run_and_masks
    store = tmp_path / "store"
    assert main(["export", "--run", str(run), "--store", str(store), "--ood-flag-rate", "0.25"]) == 0
    bundle = store / "tiny_cli" / "1"
    section = json.loads((bundle / "manifest.json").read_text())["out_of_distribution"]
    # the threshold, applied to what model.onnx outputs for the val images, flags the stated fraction
    split = load_split(run / "split.json", root=run.parent / "ebhi_seg")  # the tiny data beside the run
    pre = json.loads((bundle / "manifest.json").read_text())["preprocessing"]
    ds = HistoDataset(split.val, 16, eval_transform(pre["mean"], pre["std"]))
    images = torch.stack([ds[i]["image"] for i in range(len(ds))]).numpy()
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"image": images})[0]
    flagged = int(ood.flags(ood.energy(logits), section["threshold"]).sum())
    assert section["val_images"] == len(ds) and flagged == math.floor(0.25 * len(ds)) > 0
    assert section["val_flag_rate"] == pytest.approx(flagged / len(ds))

    # the run's images are not under --data: the bundle is exported without what needs them, and says so
    empty = tmp_path / "nowhere"
    empty.mkdir()
    capsys.readouterr()
    assert main(["export", "--run", str(run), "--store", str(store), "--data", str(empty)]) == 0
    out = capsys.readouterr().out
    assert "exported without the dataset fingerprint and the out-of-distribution flag" in out
    m = json.loads((store / "tiny_cli" / "2" / "manifest.json").read_text())
    assert "out_of_distribution" not in m and "dataset_fingerprint" not in m
    assert m["split"]["description"] == json.loads((run / "split.json").read_text())["description"]
    with pytest.raises(SystemExit, match="--masks scores Grad-CAM on the test images"):
        main(["export", "--run", str(run), "--store", str(store), "--data", str(empty), "--masks", str(empty)])
