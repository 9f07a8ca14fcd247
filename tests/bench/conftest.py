"""Tiny classification bundles with random weights, one of each kind per session (exporting takes seconds).

`tiny_store`: CBAM-ResNet-18 at 64 px with narrow stages, to benchmark (random weights cost the same compute
as trained ones, and the benchmark measures speed only). `labelled_bundle`: a 32 px ResNet-20 whose split.json
names a tiny fake data folder, for the tools that score a bundle on its own split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EBHI_CLASSES = ["adenocarcinoma", "high_grade_in", "low_grade_in", "normal", "polyp", "serrated_adenoma"]


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    import torch

    import models
    from training.export import export_bundle

    torch.manual_seed(0)  # the same random network on every run
    store = tmp_path_factory.mktemp("bench_store")
    model = models.create_model("cbam_resnet18", num_classes=len(EBHI_CLASSES), widths=(8, 16, 32, 64))
    export_bundle(model, store, "tiny_cbam", classes=EBHI_CLASSES, input_size=(64, 64))
    return store


SPLIT_CLASSES = ["adenocarcinoma", "normal", "polyp"]
SPLIT_SIZE = 32


@pytest.fixture(scope="session")
def labelled_bundle(tmp_path_factory):
    """A data dir with `ebhi_seg` (3 classes x 4 images) and `breakhis_200x` (2 classes x 3 images), and a
    tiny classification bundle whose split.json names ebhi_seg: 2 images per class in val, 2 in test."""
    import torch

    import models
    from training.export import export_bundle

    root = tmp_path_factory.mktemp("oos")
    rng = np.random.default_rng(0)
    files = []
    for c, cls in enumerate(SPLIT_CLASSES):
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
                                 "classes": SPLIT_CLASSES, "files": files}))
    torch.manual_seed(0)
    model = models.create_model("resnet20", num_classes=len(SPLIT_CLASSES), widths=(4, 8, 8)).eval()
    bundle = export_bundle(model, root / "store", "tiny_oos", classes=SPLIT_CLASSES, input_size=(SPLIT_SIZE, SPLIT_SIZE),
                           files=[split])
    return root / "data", Path(bundle)
