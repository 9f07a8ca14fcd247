"""The registry: build by name, clear errors, and a config that rebuilds the model."""
from __future__ import annotations

import pytest
import torch

import models


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="resnet18"):
        models.create_model("resnet_does_not_exist")


def test_expected_models_are_registered():
    names = set(models.list_models())
    for n in ["resnet18", "resnet34", "resnet50", "resnext50_32x4d", "cbam_resnet18", "cbam_resnet50"]:
        assert n in names


def test_pretrained_cfg_rebuilds_the_model():
    model = models.create_model("cbam_resnet18", num_classes=4, widths=(8, 16, 32, 64), spatial_attention=False)
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == "cbam_resnet18" and cfg["num_classes"] == 4
    assert cfg["input_size"] == (3, 224, 224) and len(cfg["mean"]) == 3 and len(cfg["std"]) == 3
    rebuilt = models.create_model(cfg["architecture"], **cfg["model_args"])
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(rebuilt.eval()(x), model.eval()(x))


def test_none_options_fall_back_to_defaults():
    model = models.create_model("resnet18", num_classes=3, widths=None)
    assert model.layer1[0].conv1.out_channels == 64
    assert "widths" not in model.pretrained_cfg["model_args"]
