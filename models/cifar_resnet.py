"""CIFAR-style ResNets (ResNet-20/32/56/110), plain, with SE and with CBAM.

Paper: He et al. 2016, section 4.2 (https://arxiv.org/abs/1512.03385): a 3x3 stem, then three
stages of n BasicBlocks at 16/32/64 channels, global average pool and fc: 6n + 2 weighted layers
(20, 32, 56, 110). Used with SE (https://arxiv.org/abs/1709.01507) and CBAM
(https://arxiv.org/abs/1807.06521) in every block, as the SE/CBAM-in-ResNets study on BreakHis does
(README.md, methods table).

Shortcuts are the paper's option A (parameter-free: stride-2 subsampling and zero-padded
channels), which is what gives ResNet-20 its 0.27M parameters; `shortcut="B"` uses 1x1 projections.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import Network, check_num_classes
from ._registry import register_model
from .layers import global_avg
from .resnet import IMAGENET_MEAN, IMAGENET_STD, BasicBlock, _check_ints, conv1x1

__all__ = ["CifarResNet"]


def _cfg(**kwargs) -> dict:
    return dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, 32, 32)) | kwargs


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by `stride`, zero-pad the new channels (no parameters)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.stride = stride
        self.pad = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class CifarResNet(Network):
    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3, widths: Sequence[int] = (16, 32, 64),
                 attn_layer=None, attn_kwargs: dict | None = None, shortcut: str = "A"):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 56, 110), got {depth!r}")
        widths = _check_ints("widths", widths, 3)
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-pad) or 'B' (projection), got {shortcut!r}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        self.num_classes = check_num_classes(num_classes)
        n = (depth - 2) // 6
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or self.inplanes != planes:
                downsample = (PadShortcut(self.inplanes, planes, stride) if shortcut == "A" else
                              nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes)))
            kw = dict(attn_layer=attn_layer, attn_kwargs=attn_kwargs)
            blocks = [BasicBlock(self.inplanes, planes, stride, downsample, **kw)]
            blocks += [BasicBlock(planes, planes, **kw) for _ in range(n - 1)]
            self.inplanes = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_features = widths[-1]
        self.fc = nn.Linear(self.num_features, self.num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015 (https://arxiv.org/abs/1502.01852), the init the CIFAR ResNets were trained with
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(global_avg(feats))


def _create(depth: int, **kwargs) -> CifarResNet:
    model = CifarResNet(depth, **kwargs)
    model.pretrained_cfg = _cfg()
    return model


@register_model
def resnet20(**kwargs) -> CifarResNet:
    return _create(20, **kwargs)


@register_model
def resnet32(**kwargs) -> CifarResNet:
    return _create(32, **kwargs)


@register_model
def resnet56(**kwargs) -> CifarResNet:
    return _create(56, **kwargs)


@register_model
def resnet110(**kwargs) -> CifarResNet:
    return _create(110, **kwargs)


@register_model
def se_resnet20(**kwargs) -> CifarResNet:
    return _create(20, **dict(dict(attn_layer="se"), **kwargs))


@register_model
def se_resnet32(**kwargs) -> CifarResNet:
    return _create(32, **dict(dict(attn_layer="se"), **kwargs))


@register_model
def se_resnet56(**kwargs) -> CifarResNet:
    return _create(56, **dict(dict(attn_layer="se"), **kwargs))


@register_model
def se_resnet110(**kwargs) -> CifarResNet:
    return _create(110, **dict(dict(attn_layer="se"), **kwargs))


@register_model
def cbam_resnet20(**kwargs) -> CifarResNet:
    return _create(20, **dict(dict(attn_layer="cbam"), **kwargs))


@register_model
def cbam_resnet32(**kwargs) -> CifarResNet:
    return _create(32, **dict(dict(attn_layer="cbam"), **kwargs))


@register_model
def cbam_resnet56(**kwargs) -> CifarResNet:
    return _create(56, **dict(dict(attn_layer="cbam"), **kwargs))


@register_model
def cbam_resnet110(**kwargs) -> CifarResNet:
    return _create(110, **dict(dict(attn_layer="cbam"), **kwargs))
