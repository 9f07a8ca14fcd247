"""A tiny classification bundle to benchmark: CBAM-ResNet-18 at 64 px with narrow stages, random weights.

Random weights cost the same compute as trained ones, and the benchmark measures speed only.
Exporting takes tens of seconds, so one bundle serves the whole session.
"""
from __future__ import annotations

from pathlib import Path

import pytest

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
