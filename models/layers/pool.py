"""Global pooling over the spatial dims with `mean`/`amax`.

Never a pooling layer sized from the input (`F.avg_pool2d(x, x.shape[2:])`): reductions over
dims export to ONNX with a dynamic batch and input size (a layer sized from the input would
bake the trace's size into the graph).
"""
from __future__ import annotations

import torch


def global_avg(x: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Mean over H and W: (B, C, H, W) -> (B, C) or (B, C, 1, 1)."""
    return x.mean(dim=(2, 3), keepdim=keepdim)


def global_max(x: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Max over H and W: (B, C, H, W) -> (B, C) or (B, C, 1, 1)."""
    return x.amax(dim=(2, 3), keepdim=keepdim)
