"""Initial weights: a torchvision-format state dict from a file or a URL, loaded non-strictly."""
from __future__ import annotations

import pytest
import torch

import models
from training.weights import load_init_weights


def test_init_loads_torchvision_names_non_strict(tmp_path, capsys):
    plain = models.create_model("resnet18", num_classes=1000, widths=[8, 8, 16, 16])
    torch.save(plain.state_dict(), tmp_path / "tv.pth")
    target = models.create_model("cbam_resnet18", num_classes=3, widths=[8, 8, 16, 16])
    report = load_init_weights(target, tmp_path / "tv.pth")
    assert any(".attn." in k for k in report["missing"])  # attention is new
    assert "fc.weight" in report["shape_mismatch"]  # 1000 classes vs 3: left at init
    assert torch.equal(target.conv1.weight, plain.conv1.weight)
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="no key matches"):
        load_init_weights(target, tmp_path / "bad.pth")


def test_init_from_a_url_goes_through_torch_hub_download_to_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    plain = models.create_model("resnet18", num_classes=3, widths=[8, 8, 16, 16])
    torch.save(plain.state_dict(), tmp_path / "resnet18-weights.pth")
    target = models.create_model("resnet18", num_classes=3, widths=[8, 8, 16, 16])
    report = load_init_weights(target, (tmp_path / "resnet18-weights.pth").as_uri())
    assert report["missing"] == [] and torch.equal(target.conv1.weight, plain.conv1.weight)
    assert list((tmp_path / "hub").rglob("resnet18-weights.pth"))  # cached like a real download


def test_init_imagenet_names_the_wheel_or_refuses():
    with pytest.raises(ValueError, match="no installed ImageNet weights"):
        load_init_weights(models.create_model("resnet18", num_classes=3, widths=[8, 8, 16, 16]), "imagenet")
