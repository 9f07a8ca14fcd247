"""The network interface of docs/contracts.md, shared by every model in the zoo.

A subclass defines `features(x)` (last feature map, after its attention) and `head(feats)`
(logits from that map alone); `forward`, `embed` and `forward_aux` follow from them unless a
network has more to say (gated_fusion's fused logits, tad_resnext50's attention maps).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import global_avg


class Network(nn.Module):
    num_classes: int
    num_features: int
    pretrained_cfg: dict

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) vector for prototypes: the spatial mean of the last feature map."""
        return global_avg(self.features(x))

    def get_classifier(self) -> nn.Linear:
        """The linear layer of a head that is pool -> (dropout) -> linear, as timm names it; a head that
        is more than that (a dense stack, fused branches) has none to give."""
        raise NotImplementedError(f"{type(self).__name__}: its head is not a single linear layer on pooled features")

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits plus what special losses need; nothing extra by default."""
        return self.forward(x), {}


def check_num_classes(num_classes: int) -> int:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes
