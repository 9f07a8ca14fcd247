"""Gated attention of Fan et al. (gated attention + instance fusion, BACH and fungi images).

Paper: Fan M, Chakraborty T, Chang EI-C, Xu Y, Rittscher J, `Microscopic fine-grained instance
classification through deep attention`, arXiv:2010.02818 (2020). The module, as that paper describes it:

1. dilated 3x3 conv blocks over the feature map X (B, C, h, w) widen the receptive field;
2. their output is summed over channels and a softmax over the h*w positions gives the
   semantic map S (B, h*w), which sums to 1 per image;
3. channel scores are X^T S: each channel's activation averaged under S;
4. gates g = ReLU(tanh(scores)) lie in [0, 1) and switch off channels that do not fire where
   the semantic map looks;
5. the attention map is the gated channel average mean_c(g_c * X_c) (B, h, w).

`forward` returns the channel-gated features (the input's shape); `attention_map` is what
`gated_fusion` thresholds to place its instance crops.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .helpers import reduced_channels


class GatedAttention(nn.Module):
    def __init__(self, channels: int, rd_ratio: float = 1.0 / 4, rd_channels: int | None = None,
                 dilations: Sequence[int] = (1, 2, 4), act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        if not dilations or any(int(d) < 1 for d in dilations):
            raise ValueError(f"dilations must be a non-empty list of positive ints, got {dilations!r}")
        rd = reduced_channels(channels, rd_ratio, rd_channels)
        blocks = []
        in_ch = channels
        for d in dilations:
            blocks += [nn.Conv2d(in_ch, rd, 3, padding=int(d), dilation=int(d), bias=False),
                       nn.BatchNorm2d(rd), act_layer()]
            in_ch = rd
        self.blocks = nn.Sequential(*blocks)

    def semantic_map(self, x: torch.Tensor) -> torch.Tensor:
        """S: (B, h*w), a softmax over positions of the channel-summed dilated features."""
        return torch.softmax(self.blocks(x).sum(dim=1).flatten(1), dim=1)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Channel gates ReLU(tanh(X^T S)): (B, C), each in [0, 1)."""
        scores = torch.bmm(x.flatten(2), self.semantic_map(x).unsqueeze(2)).squeeze(2)
        return torch.relu(torch.tanh(scores))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Gated channel average: (B, h, w)."""
        return (x * self.gates(x)[:, :, None, None]).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gates(x)[:, :, None, None]
