"""Lightweight channel attention of the transfer-learning ResNet-50 for BreakHis.

Paper: the transfer-ResNet-50 + lightweight-attention study on BreakHis (README.md, methods table).
Its module: adaptive average pool -> FC -> LeakyReLU -> FC -> sigmoid,
the result gating the channels of layer 4. Unlike SE it uses dense layers on the pooled vector
and a LeakyReLU, so no channel's descriptor is cut to exactly zero before the gate.
"""
from __future__ import annotations

import torch
from torch import nn

from .helpers import reduced_channels
from .pool import global_avg


class LightweightAttention(nn.Module):
    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 act_layer: type[nn.Module] = nn.LeakyReLU, gate_layer: type[nn.Module] = nn.Sigmoid):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.fc1 = nn.Linear(channels, rd)
        self.act = act_layer()
        self.fc2 = nn.Linear(rd, channels)
        self.gate = gate_layer()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The channel gate (B, C, 1, 1), each value in (0, 1)."""
        return self.gate(self.fc2(self.act(self.fc1(global_avg(x)))))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)
