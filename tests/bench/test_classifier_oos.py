"""bench.classifier_oos on a tiny random bundle and a tiny fake data folder (EBHI-Seg and BreakHis layouts)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import classifier_oos

CLASSES = ["adenocarcinoma", "normal", "polyp"]
SIZE = 32


@pytest.fixture(scope="module")
def data_and_bundle(tmp_path_factory):
    """A data dir with `ebhi_seg` (3 classes x 4 images) and `breakhis_200x` (2 classes x 3 images), and a
    tiny classification bundle whose split.json names ebhi_seg: 2 images per class in val, 2 in test."""
    import torch

    import models
    from training.export import export_bundle

    root = tmp_path_factory.mktemp("oos")
    rng = np.random.default_rng(0)
    files = []
    for c, cls in enumerate(CLASSES):
        for i in range(4):
            rel = f"{cls}/GT{c}{i}-1-400-00{i}.png"
            path = root / "data" / "ebhi_seg" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
            files.append({"path": rel, "class": cls, "group": f"GT{c}{i}", "split": "val" if i < 2 else "test"})
    for cls in ("adenosis", "fibroadenoma"):
        for i in range(3):
            path = root / "data" / "breakhis_200x" / cls / f"A_{i}_200X_00{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
    split = root / "split.json"
    split.write_text(json.dumps({"format_version": 2, "description": "tiny", "seed": 0, "dataset": "ebhi_seg",
                                 "classes": CLASSES, "files": files}))
    torch.manual_seed(0)
    model = models.create_model("resnet20", num_classes=len(CLASSES), widths=(4, 8, 8)).eval()
    bundle = export_bundle(model, root / "store", "tiny_oos", classes=CLASSES, input_size=(SIZE, SIZE),
                           files=[split])
    return root / "data", Path(bundle)


def test_without_a_manifest_threshold_it_calibrates_on_val(data_and_bundle, tmp_path):
    data, bundle = data_and_bundle
    argv = [str(bundle), "--data", str(data), "--synthetic", "3", "--flag-rate", "0.5",
            "--results-dir", str(tmp_path)]
    assert classifier_oos.main(argv) == 0
    result = json.loads((tmp_path / "classifier-oos-tiny_oos-1.json").read_text())
    assert result["command"] == "python -m bench.classifier_oos " + " ".join(argv)
    assert result["dataset"] == "ebhi_seg" and result["other_dataset"] == "breakhis_200x"
    assert result["images"] == {"own": 6, "other": 6, "glass": 3, "blank": 3, "blur": 6}
    assert result["threshold_from"].startswith("calibrated here on the val split")
    assert result["val_flag_rate"] == 0.5 and result["stated_flag_rate"] == 0.5  # 3 of the 6 val images
    assert all(0.0 <= v <= 1.0 for v in result["flagged"].values())
    assert all(0.0 <= v <= 1.0 for v in result["auroc_vs_own"].values())


@pytest.mark.parametrize("threshold,rate", [(-1e9, 1.0), (1e9, 0.0)])
def test_the_manifest_threshold_is_the_one_applied(data_and_bundle, tmp_path, threshold, rate):
    data, bundle = data_and_bundle
    copy = tmp_path / "store" / "tiny_oos" / "1"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["out_of_distribution"] = {"score": "energy", "threshold": threshold, "flag_rate": 0.05,
                                       "val_images": 6, "val_flag_rate": 0.0}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert classifier_oos.main([str(copy), "--data", str(data), "--synthetic", "2",
                                "--results-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "classifier-oos-tiny_oos-1.json").read_text())
    assert result["threshold_from"] == "manifest" and result["threshold"] == threshold
    assert set(result["flagged_by_score"].values()) == {rate}
    assert result["flagged"]["glass"] == result["flagged"]["blank"] == 1.0  # not tissue, whatever the score

