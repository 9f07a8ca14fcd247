"""ImageNet-style ResNet and ResNeXt with an attention slot in every residual block.

Papers: `Deep Residual Learning for Image Recognition`, He et al., CVPR 2016 -
https://arxiv.org/abs/1512.03385; `Aggregated Residual Transformations for Deep Neural
Networks` (ResNeXt), Xie et al., CVPR 2017 - https://arxiv.org/abs/1611.05431.

Written here because the registry's torchvision wheels are CUDA builds whose import fails beside
the CPU torch (`operator torchvision::nms does not exist`), with
torchvision's attribute names, which are the checkpoint format: a torchvision state dict loads
with strict=True into the plain networks and with strict=False into the attention variants,
whose only extra keys are the blocks' `attn.*`. Stride sits on the 3x3 conv (ResNet v1.5, as
torchvision). `widths` shrinks every stage for networks small enough to train on a CPU.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import Network, check_num_classes
from ._registry import register_model
from .layers import create_attn, global_avg

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _cfg(**kwargs) -> dict:
    return dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, 224, 224)) | kwargs


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding"""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=dilation, groups=groups, bias=False,
                     dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution"""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, attn_layer=None, attn_kwargs: dict | None = None):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        # Both self.conv1 and self.downsample layers downsample the input when stride != 1
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attn = create_attn(attn_layer, planes, **(attn_kwargs or {}))
        self.downsample = downsample
        self.stride = stride

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attn is not None:
            out = self.attn(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, attn_layer=None, attn_kwargs: dict | None = None):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        if width < 1:
            raise ValueError(f"bottleneck width {width} < 1 (planes={planes}, base_width={base_width})")
        # Both self.conv2 and self.downsample layers downsample the input when stride != 1
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.attn = create_attn(attn_layer, planes * self.expansion, **(attn_kwargs or {}))
        self.downsample = downsample
        self.stride = stride

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attn is not None:
            out = self.attn(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return self.relu(out)


def _check_ints(name: str, values: Sequence[int], length: int) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != length or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"{name} must be {length} positive ints, got {values!r}")
    return values


class ResNet(Network):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: Sequence[int], num_classes: int = 1000,
                 in_chans: int = 3, widths: Sequence[int] = (64, 128, 256, 512), groups: int = 1,
                 width_per_group: int = 64, attn_layer=None, attn_kwargs: dict | None = None,
                 drop_rate: float = 0.0, zero_init_last: bool = False):
        super().__init__()
        layers = _check_ints("layers", layers, 4)
        widths = _check_ints("widths", widths, 4)
        if block not in (BasicBlock, Bottleneck):
            raise ValueError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        if groups < 1 or width_per_group < 1:
            raise ValueError(f"groups and width_per_group must be >= 1, got {groups}, {width_per_group}")
        if block is BasicBlock and (groups != 1 or width_per_group != 64):
            raise ValueError("BasicBlock only supports groups=1 and width_per_group=64")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.num_classes = check_num_classes(num_classes)
        self.drop_rate = drop_rate
        self.groups = groups
        self.base_width = width_per_group
        self.inplanes = widths[0]

        self.conv1 = nn.Conv2d(in_chans, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        # never liked "layerN" either, but torchvision weight compatibility requires it
        for i, (planes, n) in enumerate(zip(widths, layers, strict=True)):
            stage = self._make_layer(block, planes, n, stride=1 if i == 0 else 2,
                                     attn_layer=attn_layer, attn_kwargs=attn_kwargs)
            self.add_module(f"layer{i + 1}", stage)
        self.num_features = widths[3] * block.expansion
        self._init_head(self.num_features, self.num_classes)
        self.init_weights(zero_init_last=zero_init_last)

    def _init_head(self, num_features: int, num_classes: int) -> None:
        self.fc = nn.Linear(num_features, num_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, attn_layer=None,
                    attn_kwargs: dict | None = None) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        kw = dict(groups=self.groups, base_width=self.base_width, attn_layer=attn_layer, attn_kwargs=attn_kwargs)
        layers = [block(self.inplanes, planes, stride, downsample, **kw)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def init_weights(self, zero_init_last: bool = False) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. 2015 (https://arxiv.org/abs/1502.01852): keeps activation variance through ReLUs
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            # Each residual block starts as the identity. This improves the model by 0.2~0.3%
            # according to https://arxiv.org/abs/1706.02677 (Goyal et al.)
            for m in self.modules():
                if isinstance(m, BasicBlock | Bottleneck):
                    nn.init.zeros_(m.last_bn().weight)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        x = global_avg(feats)
        if self.drop_rate > 0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self.fc(x)

    def get_classifier(self) -> nn.Linear:
        return self.fc


def _create_resnet(block, layers, cfg: dict | None = None, **kwargs) -> ResNet:
    model = ResNet(block, layers, **kwargs)
    model.pretrained_cfg = cfg or _cfg()
    return model


def _cbam_options(kwargs: dict) -> dict:
    """Turn the ablation switches `channel_attention` / `spatial_attention` into CBAM kwargs."""
    kwargs = dict(kwargs)
    attn_kwargs = dict(kwargs.pop("attn_kwargs", None) or {})
    attn_kwargs["use_channel"] = bool(kwargs.pop("channel_attention", True))
    attn_kwargs["use_spatial"] = bool(kwargs.pop("spatial_attention", True))
    return dict(kwargs, attn_kwargs=attn_kwargs)


@register_model
def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (He et al. 2016)."""
    return _create_resnet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    """ResNet-34 (He et al. 2016)."""
    return _create_resnet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (He et al. 2016)."""
    return _create_resnet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model
def resnext50_32x4d(**kwargs) -> ResNet:
    """ResNeXt-50 32x4d (Xie et al. 2017)."""
    return _create_resnet(Bottleneck, (3, 4, 6, 3), **dict(dict(groups=32, width_per_group=4), **kwargs))


@register_model
def se_resnet18(**kwargs) -> ResNet:
    """ResNet-18 with SE in every block (Hu et al. 2018)."""
    return _create_resnet(BasicBlock, (2, 2, 2, 2), **dict(dict(attn_layer="se"), **kwargs))


@register_model
def cbam_resnet18(**kwargs) -> ResNet:
    """ResNet-18 with CBAM in every block; `channel_attention=False` / `spatial_attention=False` ablate."""
    return _create_resnet(BasicBlock, (2, 2, 2, 2), **_cbam_options(dict(dict(attn_layer="cbam"), **kwargs)))


@register_model
def cbam_resnet50(**kwargs) -> ResNet:
    """ResNet-50 with CBAM in every block; `channel_attention=False` / `spatial_attention=False` ablate."""
    return _create_resnet(Bottleneck, (3, 4, 6, 3), **_cbam_options(dict(dict(attn_layer="cbam"), **kwargs)))
