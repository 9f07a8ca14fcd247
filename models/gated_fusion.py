"""Gated attention + instance crops + fusion (Fan et al., BACH and fungi images).

Paper: Fan M, Chakraborty T, Chang EI-C, Xu Y, Rittscher J, `Microscopic fine-grained instance
classification through deep attention`, arXiv:2010.02818 (2020). A global network sees the whole image; the
gated attention module (`models/layers/gated.py`) turns its last feature map into an attention
map; the k most attended places are cropped from the input, resized to the local input size and
embedded by one shared local network; the instance embeddings are fused with the global
features. Training uses lambda * L(global_logits) + (1 - lambda) * L(fused logits).

The crops are built inside the graph so the whole network exports to ONNX with a fixed number
of instances: top-k over the flattened map after a 3x3 max-pool suppression (a peak must be its
own neighbourhood's maximum), one affine grid per peak with a fixed crop scale, then
`grid_sample` (ONNX GridSample). "Threshold the map" becomes a weight: a peak below
`threshold * max` gets weight 0, so fewer than k instances can count without a data-dependent
number of crops. The paper uses a ResNet-18 global branch at 224 and a ResNet-50 local branch at
336 (`local_backbone="resnet50", local_size=336`); the defaults here are smaller for CPUs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._base import Network, check_num_classes
from ._registry import create_model, is_model, register_model
from .layers import create_attn, global_avg
from .resnet import _cfg

__all__ = ["GatedFusion"]


class GatedFusion(Network):
    def __init__(self, num_classes: int = 1000, global_backbone: str = "resnet18", local_backbone: str = "resnet18",
                 global_kwargs: dict | None = None, local_kwargs: dict | None = None, num_instances: int = 4,
                 crop_scale: float = 0.25, local_size: int = 112, threshold: float = 0.5,
                 attn_kwargs: dict | None = None):
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        for name in (global_backbone, local_backbone):
            if name == "gated_fusion" or not is_model(name):
                raise ValueError(f"backbone must be a registered single-branch network, got {name!r}")
        if not isinstance(num_instances, int) or num_instances < 1:
            raise ValueError(f"num_instances must be a positive int, got {num_instances!r}")
        if not 0.0 < crop_scale <= 1.0:
            raise ValueError(f"crop_scale (crop side / image side) must be in (0, 1], got {crop_scale}")
        if not isinstance(local_size, int) or local_size < 8:
            raise ValueError(f"local_size must be an int >= 8, got {local_size!r}")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold (fraction of the map's max) must be in [0, 1), got {threshold}")
        self.num_instances = num_instances
        self.crop_scale = float(crop_scale)
        self.local_size = local_size
        self.threshold = float(threshold)
        self.global_net = create_model(global_backbone, num_classes=num_classes, **(global_kwargs or {}))
        # the local network only embeds crops; its own classifier is not used
        self.local_net = create_model(local_backbone, num_classes=num_classes, **(local_kwargs or {}))
        self.num_features = self.global_net.num_features
        self.attn = create_attn("gated", self.num_features, **(attn_kwargs or {}))
        local_dim = self.local_net.num_features
        self.fusion_fc = nn.Linear(self.num_features + local_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_net.features(x)

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        """Global-branch logits (what Grad-CAM explains)."""
        return self.global_net.head(feats)

    def select_instances(self, amap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k peaks of the map: centres (B, k, 2) as (x, y) in [-1, 1], and weights (B, k) summing to 1 or 0."""
        b, h, w = amap.shape
        k = min(self.num_instances, h * w)
        peaks = amap * (amap == F.max_pool2d(amap.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)).to(amap.dtype)
        scores, idx = peaks.flatten(1).topk(k, dim=1)
        rows = torch.div(idx, w, rounding_mode="floor")
        cols = idx - rows * w
        # keep each crop inside the image: its centre at least half a crop from the border
        lim = 1.0 - self.crop_scale
        cx = ((cols.to(amap.dtype) + 0.5) / w * 2 - 1).clamp(-lim, lim)
        cy = ((rows.to(amap.dtype) + 0.5) / h * 2 - 1).clamp(-lim, lim)
        keep = (scores >= self.threshold * scores[:, :1]).to(amap.dtype) * (scores > 0).to(amap.dtype)
        weights = scores * keep
        weights = weights / (weights.sum(dim=1, keepdim=True) + 1e-6)
        return torch.stack([cx, cy], dim=2), weights

    def crop(self, x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Crops of side crop_scale * image side around each centre, resized to local_size: (B*k, C, L, L)."""
        b, k, _ = centres.shape
        c = x.shape[1]
        s = torch.full_like(centres[..., 0], self.crop_scale)
        zero = torch.zeros_like(s)
        theta = torch.stack([torch.stack([s, zero, centres[..., 0]], dim=-1),
                             torch.stack([zero, s, centres[..., 1]], dim=-1)], dim=-2).reshape(b * k, 2, 3)
        grid = F.affine_grid(theta, [b * k, c, self.local_size, self.local_size], align_corners=False)
        xs = x.unsqueeze(1).expand(b, k, c, x.shape[2], x.shape[3]).reshape(b * k, c, x.shape[2], x.shape[3])
        return F.grid_sample(xs, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats = self.features(x)
        global_logits = self.head(feats)
        amap = self.attn.attention_map(feats)
        centres, weights = self.select_instances(amap)
        b, k = weights.shape
        inst = self.local_net.embed(self.crop(x, centres)).reshape(b, k, -1)
        inst = (inst * weights.unsqueeze(2)).sum(dim=1)
        fused = self.fusion_fc(torch.cat([global_avg(feats), inst], dim=1))
        return fused, {"global_logits": global_logits, "attention": amap}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_aux(x)[0]


@register_model
def gated_fusion(**kwargs) -> GatedFusion:
    """ResNet-18 global branch + gated attention + shared local network on k instance crops, fused."""
    model = GatedFusion(**kwargs)
    model.pretrained_cfg = _cfg()
    return model
