"""Attention factory: the one place that maps a name to an attention class.

Blocks receive `attn_layer` (a name, a class, or None) and call `create_attn(attn_layer, channels)`;
they never import a concrete attention class.
NOTE: the first positional argument of every attention layer is the input channel count.
"""
from __future__ import annotations

from functools import partial

from torch import nn

from .activation_attention import ActivationAttention
from .cbam import CBAM, ChannelAttention, SpatialAttention
from .gated import GatedAttention
from .lightweight import LightweightAttention
from .se import SEModule

_ATTN_LAYERS: dict[str, type[nn.Module] | partial] = {
    "se": SEModule,
    "cbam": CBAM,
    # CBAM halves for the ablation of the dual-attention paper
    "cbam_channel": partial(CBAM, use_spatial=False),
    "cbam_spatial": partial(CBAM, use_channel=False),
    "channel": ChannelAttention,
    "spatial": SpatialAttention,
    "lightweight": LightweightAttention,
    "gated": GatedAttention,
    "activation": ActivationAttention,
}


def list_attn() -> list[str]:
    return sorted(_ATTN_LAYERS)


def get_attn(attn_layer):
    """Resolve a name or class to a constructor; None stays None."""
    if attn_layer is None:
        return None
    if isinstance(attn_layer, str):
        key = attn_layer.lower()
        if key not in _ATTN_LAYERS:
            raise ValueError(f"unknown attention layer {attn_layer!r}; known: {', '.join(list_attn())}")
        return _ATTN_LAYERS[key]
    if callable(attn_layer):
        return attn_layer
    raise ValueError(f"attn_layer must be a name, a class or None, got {type(attn_layer).__name__}")


def create_attn(attn_layer, channels: int, **kwargs) -> nn.Module | None:
    module_cls = get_attn(attn_layer)
    if module_cls is None:
        return None
    return module_cls(channels, **kwargs)
