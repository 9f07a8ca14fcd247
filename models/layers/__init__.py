"""Attention modules and the small helpers they share; one idea per file."""
from .activation_attention import ActivationAttention, activation_map
from .cbam import CBAM, ChannelAttention, SpatialAttention
from .create_attn import create_attn, get_attn, list_attn
from .gated import GatedAttention
from .helpers import reduced_channels
from .lightweight import LightweightAttention
from .pool import global_avg, global_max
from .se import SEModule
from .taught_attention import TaughtSpatialAttention, weighted_avg

__all__ = [
    "ActivationAttention", "activation_map", "CBAM", "ChannelAttention", "SpatialAttention",
    "create_attn", "get_attn", "list_attn", "GatedAttention", "reduced_channels",
    "LightweightAttention", "global_avg", "global_max", "SEModule", "TaughtSpatialAttention", "weighted_avg",
]
