"""Activation-based attention map g(A) = sum_c |A_c|^p.

Paper: `Paying More Attention to Attention: Improving the Performance of Convolutional Neural
Networks via Attention Transfer`, Zagoruyko & Komodakis, ICLR 2017 - https://arxiv.org/abs/1612.03928
(p = 2), as used by the improved-DPN + teacher attention distillation study (README.md, methods table).

`attention_map(x, size)` is the map the distillation losses compare: g(A), bilinearly
upsampled to `size`, then L2-normalised per image over the flattened map, as in attention
transfer (so compare it with a mask normalised the same way). `forward` merges the map back
into the features as a residual gate, x * (1 + m) with m = g(A) / max g(A) in [0, 1], so the
branch can only emphasise, never erase, the trunk's activations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def activation_map(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """g(A) = sum_c |A_c|^p: (B, C, H, W) -> (B, H, W)."""
    return x.abs().pow(p).sum(dim=1)


def attention_map(x: torch.Tensor, size: tuple[int, int] | None = None, p: float = 2.0,
                  eps: float = 1e-6) -> torch.Tensor:
    """g(A) upsampled to `size` (default: x's own), L2-normalised per image: (B, H, W)."""
    g = activation_map(x, p)
    if size is not None:
        g = F.interpolate(g.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    flat = g.flatten(1)
    return (flat / (flat.norm(dim=1, keepdim=True) + eps)).view_as(g)


class ActivationAttention(nn.Module):
    def __init__(self, channels: int, p: float = 2.0, eps: float = 1e-6):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if p <= 0:
            raise ValueError(f"p must be > 0, got {p}")
        self.channels = channels
        self.p = float(p)
        self.eps = eps

    def attention_map(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return attention_map(x, size, self.p, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = activation_map(x, self.p)
        m = g / (g.amax(dim=(1, 2), keepdim=True) + self.eps)
        return x * (1.0 + m.unsqueeze(1))
