"""ResNeXt-50 with dual-path blocks and activation attention, for teacher attention distillation.

Paper: the improved-DPN + teacher attention distillation study on gastric CT (README.md, methods table),
built from `Dual Path Networks`, Chen et al., NeurIPS 2017 (https://arxiv.org/abs/1707.01629)
on the ResNeXt-50 32x4d layout (Xie et al. 2017, https://arxiv.org/abs/1611.05431), and the
activation attention g(A) = sum_c |A_c|^2 of Zagoruyko & Komodakis (https://arxiv.org/abs/1612.03928).

Our reading of the "improved dual-path block merged with the attention branch":
- each block is a ResNeXt bottleneck (1x1, grouped 3x3, 1x1) whose output is split in two:
  the first R channels are added to the residual path (feature re-use), the other `inc`
  channels are concatenated onto the dense path (new features), as in DPN; post-activation
  (conv-BN-ReLU) as in ResNeXt rather than DPN's pre-activation;
- the outputs of stage 4 (`layer3`) and stage 5 (`layer4`) pass through the activation
  attention branch, which merges g(A) back as x * (1 + g(A) / max g(A));
- `forward_aux` returns both maps, g(A) upsampled to the stage-4 resolution and L2-normalised per
  image: aux["att4"] is what the labelled region supervises, aux["att5"] mimics aux["att4"].
Stage numbering follows the paper (conv1 is stage 1), hence layer3 -> att4 and layer4 -> att5.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._base import Network, check_num_classes
from ._registry import register_model
from .layers import create_attn, global_avg
from .resnet import _cfg, _check_ints, conv1x1, conv3x3

__all__ = ["DualPathBlock", "TadResNeXt"]

DEFAULT_WIDTHS = (64, 128, 256, 512)
DEFAULT_DENSE_INC = (16, 32, 24, 128)  # DPN-92's increments


class DualPathBlock(nn.Module):
    """Input: the residual path (R channels) concatenated with the dense path; output likewise."""

    def __init__(self, in_chs: int, res_chs: int, width: int, inc: int, groups: int, stride: int = 1,
                 project: bool = False):
        super().__init__()
        self.res_chs = res_chs
        if project:
            # the first block of a stage re-projects both paths (new width, stride); the dense path starts at 2*inc
            self.downsample = nn.Sequential(conv1x1(in_chs, res_chs + 2 * inc, stride), nn.BatchNorm2d(res_chs + 2 * inc))
        else:
            self.downsample = None
        self.conv1 = conv1x1(in_chs, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, res_chs + inc)
        self.bn3 = nn.BatchNorm2d(res_chs + inc)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.downsample(x) if self.downsample is not None else x
        res, dense = shortcut[:, : self.res_chs], shortcut[:, self.res_chs:]
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = res + out[:, : self.res_chs]
        dense = torch.cat([dense, out[:, self.res_chs:]], dim=1)
        return self.relu(torch.cat([res, dense], dim=1))


class TadResNeXt(Network):
    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 1000, in_chans: int = 3,
                 widths: Sequence[int] = DEFAULT_WIDTHS, groups: int = 32, width_per_group: int = 4,
                 dense_inc: Sequence[int] | None = None, attn_p: float = 2.0):
        super().__init__()
        layers = _check_ints("layers", layers, 4)
        widths = _check_ints("widths", widths, 4)
        if dense_inc is None:
            # keep the dense share of each stage when the network is narrowed
            dense_inc = tuple(max(1, round(i * w / d)) for i, w, d in zip(DEFAULT_DENSE_INC, widths, DEFAULT_WIDTHS,
                                                                          strict=True))
        dense_inc = _check_ints("dense_inc", dense_inc, 4)
        if groups < 1 or width_per_group < 1:
            raise ValueError(f"groups and width_per_group must be >= 1, got {groups}, {width_per_group}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        self.num_classes = check_num_classes(num_classes)
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_chs = widths[0]
        for i, (planes, n, inc) in enumerate(zip(widths, layers, dense_inc, strict=True)):
            res_chs = planes * 4
            width = int(planes * (width_per_group / 64.0)) * groups
            if width < 1:
                raise ValueError(f"bottleneck width {width} < 1 at stage {i + 1}")
            blocks = [DualPathBlock(in_chs, res_chs, width, inc, groups, 1 if i == 0 else 2, project=True)]
            in_chs = res_chs + 3 * inc  # projected 2*inc plus the first block's own inc
            for _ in range(1, n):
                blocks.append(DualPathBlock(in_chs, res_chs, width, inc, groups))
                in_chs += inc
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            if i == 2:
                self.stage4_chs = in_chs
        self.attn4 = create_attn("activation", self.stage4_chs, p=attn_p)
        self.attn5 = create_attn("activation", in_chs, p=attn_p)
        self.num_features = in_chs
        self.fc = nn.Linear(in_chs, self.num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015 (https://arxiv.org/abs/1502.01852): keeps activation variance through ReLUs
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage-4 and stage-5 activations before their attention merge, and after."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        a4 = self.layer3(self.layer2(self.layer1(x)))
        f4 = self.attn4(a4)
        a5 = self.layer4(f4)
        return a4, f4, a5, self.attn5(a5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._stages(x)[3]

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(global_avg(feats))

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        a4, _, a5, f5 = self._stages(x)
        size = (a4.shape[-2], a4.shape[-1])
        aux = {"att4": self.attn4.attention_map(a4), "att5": self.attn5.attention_map(a5, size=size)}
        return self.head(f5), aux


@register_model
def tad_resnext50(**kwargs) -> TadResNeXt:
    """ResNeXt-50 32x4d with dual-path blocks and stage-4/5 activation attention (teacher attention distillation)."""
    model = TadResNeXt(**kwargs)
    model.pretrained_cfg = _cfg()
    return model
