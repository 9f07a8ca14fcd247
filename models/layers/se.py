"""Squeeze-and-Excitation channel attention.

Paper: `Squeeze-and-Excitation Networks`, Hu, Shen, Sun, CVPR 2018 - https://arxiv.org/abs/1709.01507

Global average pool -> 1x1 conv (reduce) -> ReLU -> 1x1 conv (expand) -> sigmoid gate per channel.
"""
from __future__ import annotations

import torch
from torch import nn

from .helpers import reduced_channels
from .pool import global_avg


class SEModule(nn.Module):
    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 act_layer: type[nn.Module] = nn.ReLU, gate_layer: type[nn.Module] = nn.Sigmoid):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.fc1 = nn.Conv2d(channels, rd, kernel_size=1, bias=True)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, kernel_size=1, bias=True)
        self.gate = gate_layer()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The channel gate (B, C, 1, 1), each value in (0, 1)."""
        return self.gate(self.fc2(self.act(self.fc1(global_avg(x, keepdim=True)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)
