"""CBAM: channel attention then spatial attention, applied in sequence.

Paper: `CBAM: Convolutional Block Attention Module`, Woo, Park, Lee, Kweon, ECCV 2018 -
https://arxiv.org/abs/1807.06521

Channel attention: one MLP shared by the global average- and max-pooled descriptors, their
outputs summed, then a sigmoid. Spatial attention: a 7x7 conv (+ BN, as in the authors' code)
over the channel-wise mean and max maps, then a sigmoid. `use_channel` / `use_spatial` switch
either part off for the ablation of the dual-attention meta-learning paper.
"""
from __future__ import annotations

import torch
from torch import nn

from .helpers import reduced_channels
from .pool import global_avg, global_max


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 act_layer: type[nn.Module] = nn.ReLU, gate_layer: type[nn.Module] = nn.Sigmoid,
                 mlp_bias: bool = True):
        super().__init__()
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        self.fc1 = nn.Conv2d(channels, rd, kernel_size=1, bias=mlp_bias)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd, channels, kernel_size=1, bias=mlp_bias)
        self.gate = gate_layer()

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The channel gate (B, C, 1, 1), each value in (0, 1)."""
        return self.gate(self._mlp(global_avg(x, keepdim=True)) + self._mlp(global_max(x, keepdim=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class SpatialAttention(nn.Module):
    # `channels` is unused (the map is built from channel-wise mean and max); it is accepted so that
    # every attention layer has the same constructor.
    def __init__(self, channels: int | None = None, kernel_size: int = 7, gate_layer: type[nn.Module] = nn.Sigmoid):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)
        self.gate = gate_layer()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial gate (B, 1, H, W), each value in (0, 1)."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return self.gate(self.bn(self.conv(pooled)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CBAM(nn.Module):
    def __init__(self, channels: int, rd_ratio: float = 1.0 / 16, rd_channels: int | None = None,
                 spatial_kernel_size: int = 7, act_layer: type[nn.Module] = nn.ReLU,
                 gate_layer: type[nn.Module] = nn.Sigmoid, use_channel: bool = True, use_spatial: bool = True):
        super().__init__()
        if not (use_channel or use_spatial):
            raise ValueError("CBAM with both channel and spatial attention off is no attention: use attn_layer=None")
        self.channel = (ChannelAttention(channels, rd_ratio, rd_channels, act_layer, gate_layer)
                        if use_channel else None)
        self.spatial = (SpatialAttention(channels, kernel_size=spatial_kernel_size, gate_layer=gate_layer)
                        if use_spatial else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel is not None:
            x = self.channel(x)
        if self.spatial is not None:
            x = self.spatial(x)
        return x
