"""Spatial attention taught by expert masks, and the weighted pooling that uses it.

Teacher attention distillation (the improved-DPN paper) lets the labelled region teach where a network
looks; here the same teacher teaches where an embedding pools. A small conv head on mid-level maps predicts
the labelled region (in EBHI-Seg: the glands and epithelium a pathologist outlined), and every stage's map
is averaged with those weights instead of uniformly, so stroma, lumen and glass no longer dilute the
epithelium that tells the subtypes apart. The region is class-agnostic, so a head taught on the training
classes' masks finds it on classes it never saw.

`power` sharpens the weights: sigmoid(z) ** power keeps the confident region and lets the rest fade.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TaughtSpatialAttention(nn.Module):
    """(B, C, h, w) mid-level maps -> (B, 1, h, w) pooling weights in (0, 1]; `logits` is what the masks teach."""

    def __init__(self, in_chs: int, hidden: int = 64, power: float = 8.0):
        super().__init__()
        if power <= 0:
            raise ValueError(f"power must be positive, got {power}")
        self.norm = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, hidden, kernel_size=3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(hidden, 1, kernel_size=1)
        self.power = float(power)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(self.norm(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x)) ** self.power


def weighted_avg(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) averaged over H and W with (B, 1, h, w) weights, resized bilinearly to (H, W) -> (B, C)."""
    if weights.shape[-2:] != x.shape[-2:]:
        weights = F.interpolate(weights, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return (x * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp_min(1e-6)
