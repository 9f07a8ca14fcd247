"""Build a method (backbone + method) from a config, and save / load it as a checkpoint.

The checkpoint holds the resolved config, the backbone's `model_args` and the state dict, so a checkpoint
alone rebuilds the trained method (STYLE: config and model args saved with the weights).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .config import FewShotConfig, apply_overrides
from .methods import FewShotMethod, create_backbone, create_method

# Methods that need the embedding width (a linear head) or the feature-map channels (a relation module).
_NEEDS_DIM = {"maml"}
_NEEDS_CHANNELS = {"relation"}


def build_method(cfg: FewShotConfig) -> FewShotMethod:
    backbone = create_backbone(cfg.backbone, **cfg.backbone_args)
    options = dict(cfg.method_args)
    if cfg.method in _NEEDS_DIM or cfg.method in _NEEDS_CHANNELS:
        backbone.eval()
        with torch.no_grad():
            maps = backbone.features(torch.zeros(1, 3, cfg.image_size, cfg.image_size))
            dim = backbone.embed(torch.zeros(1, 3, cfg.image_size, cfg.image_size)).shape[1]
        backbone.train()
        if cfg.method in _NEEDS_DIM:
            options["dim"] = int(dim)
        if cfg.method in _NEEDS_CHANNELS:
            options["channels"] = int(maps.shape[1])
    return create_method(cfg.method, backbone, n_way=cfg.n_way, **options)


def normalisation(method: FewShotMethod) -> tuple[tuple, tuple]:
    """The backbone's mean/std (its data config), ImageNet's when it has none."""
    cfg = getattr(method.backbone, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def save_checkpoint(path, method: FewShotMethod, cfg: FewShotConfig, extra: dict | None = None) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save({
        "config": cfg.to_dict(),
        "model_args": dict(getattr(method.backbone, "pretrained_cfg", {}).get("model_args", cfg.backbone_args)),
        "architecture": cfg.backbone,
        "state_dict": method.state_dict(),
        **(extra or {}),
    }, tmp)
    tmp.replace(path)  # a crash mid-write never leaves a torn checkpoint


def load_checkpoint(path, device: str = "cpu", overrides: list[str] | None = None
                    ) -> tuple[FewShotMethod, FewShotConfig, dict]:
    """Rebuild a trained method; `overrides` may change settings that do not change the weights' shapes
    (test-time inner steps, for instance)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    cfg = FewShotConfig.from_dict(apply_overrides(ckpt["config"], overrides or []))
    method = build_method(cfg)
    method.load_state_dict(ckpt["state_dict"])
    return method.to(device), cfg, ckpt
