"""Transfer ResNet with lightweight attention on layer 4 and a dense head (BreakHis).

Paper: the transfer-ResNet-50 + lightweight-attention study on BreakHis (README.md, methods table): a
ResNet-50 trunk (ImageNet-transferable, torchvision names), the lightweight channel attention
(`models/layers/lightweight.py`) applied to layer 4's output, then FC + LeakyReLU, FC + ReLU,
dropout 0.25 and the classifier. The head widths (512, 256) are our choice; the paper's
description fixes the layer types, not their widths.

Grad-CAM through this head, like every bundle's, is the autograd backward pass traced into
`gradcam.onnx` (training/gradcam.py); there is no closed-form variant. A torchvision ResNet state
dict loads with strict=False: `attn.*`, `head_fc1/2.*` and `classifier.*` are the only keys it
lacks, and torchvision's `fc` is the only key it has extra (the classifier is named differently so
its shape never clashes).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import register_model
from .layers import create_attn, global_avg
from .resnet import BasicBlock, Bottleneck, ResNet, _cfg

__all__ = ["LwaResNet"]


class LwaResNet(ResNet):
    def __init__(self, block, layers, num_classes: int = 1000, head_dims: Sequence[int] = (512, 256),
                 head_drop_rate: float = 0.25, attn_kwargs: dict | None = None, **kwargs):
        head_dims = tuple(head_dims)
        if len(head_dims) != 2 or any(not isinstance(d, int) or d < 1 for d in head_dims):
            raise ValueError(f"head_dims must be two positive ints, got {head_dims!r}")
        if not 0.0 <= head_drop_rate < 1.0:
            raise ValueError(f"head_drop_rate must be in [0, 1), got {head_drop_rate}")
        if kwargs.get("drop_rate"):
            raise ValueError("lwa_resnet's dropout is in its dense head: set head_drop_rate, not drop_rate")
        if "attn_layer" in kwargs:
            raise ValueError("lwa_resnet places its own attention (lightweight, after layer 4)")
        self.head_dims = head_dims
        self.head_drop_rate = head_drop_rate
        super().__init__(block, layers, num_classes=num_classes, **kwargs)
        self.attn = create_attn("lightweight", self.num_features, **(attn_kwargs or {}))

    def _init_head(self, num_features: int, num_classes: int) -> None:
        self.head_fc1 = nn.Linear(num_features, self.head_dims[0])
        self.head_act1 = nn.LeakyReLU()
        self.head_fc2 = nn.Linear(self.head_dims[0], self.head_dims[1])
        self.head_act2 = nn.ReLU()
        self.classifier = nn.Linear(self.head_dims[1], num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(super().features(x))

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.head_act1(self.head_fc1(global_avg(feats)))
        x = self.head_act2(self.head_fc2(x))
        x = F.dropout(x, p=self.head_drop_rate, training=self.training)
        return self.classifier(x)


def _create(block, layers, **kwargs) -> LwaResNet:
    model = LwaResNet(block, layers, **kwargs)
    model.pretrained_cfg = _cfg()
    return model


@register_model
def lwa_resnet50(**kwargs) -> LwaResNet:
    """ResNet-50 + lightweight attention on layer 4 + FC/LeakyReLU, FC/ReLU, dropout 0.25 head."""
    return _create(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model
def lwa_resnet18(**kwargs) -> LwaResNet:
    """ResNet-18 trunk with the lwa_resnet50 attention and head, small enough for a CPU."""
    return _create(BasicBlock, (2, 2, 2, 2), **kwargs)
