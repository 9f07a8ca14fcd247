"""Teach a backbone's pooling attention from expert masks (models/layers/taught_attention.py), before any episode.

The backbone stays as it is: its maps under the attention are computed once, and only the small attention
head learns, by binary cross-entropy against each mask's coverage of the attention's grid cells. Maps and
masks turn together through the 8 symmetries of the square (tissue has no orientation), a fresh one per
batch. The masks come from the training classes only; those of the classes a few-shot test holds out never
teach it (`attention_iou` may score it on them afterwards).
"""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from .bank import ImageBank


def _targets(bank: ImageBank, rows: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """Each grid cell's share of labelled pixels, (B, 1, h, w) in [0, 1]."""
    return F.adaptive_avg_pool2d(bank.masks[torch.as_tensor(rows)].float(), grid)


def _maps_and_targets(backbone, banks: list[ImageBank], mean, std, batch_size: int = 32):
    """The attention's input maps and the masks on its grid, for every masked image of `banks`."""
    inputs, targets = [], []
    backbone.eval()
    with torch.no_grad():
        for bank in banks:
            if bank.masks is None:
                continue
            masked = np.flatnonzero(bank.has_mask.numpy())
            for start in range(0, len(masked), batch_size):
                rows = masked[start:start + batch_size]
                maps = backbone.pool_attn_input(bank.batch(rows, mean, std))
                inputs.append(maps)
                targets.append(_targets(bank, rows, tuple(maps.shape[-2:])))
    if not inputs:
        raise ValueError("no image has a mask to teach or score the pooling attention with")
    return torch.cat(inputs), torch.cat(targets)


def _iou(attention, maps: torch.Tensor, targets: torch.Tensor) -> float:
    """Intersection over union of the cells the attention calls labelled (sigmoid > 0.5) and the masks' (> 0.5)."""
    with torch.no_grad():
        predicted = torch.sigmoid(attention.logits(maps)) > 0.5
    truth = targets > 0.5
    return round(float((predicted & truth).sum() / (predicted | truth).sum().clamp_min(1)), 4)


def attention_iou(backbone, bank: ImageBank, mean, std) -> dict:
    """How well a taught attention finds the labelled region of `bank`'s masked images (classes it may never
    have seen): IoU on its grid."""
    maps, targets = _maps_and_targets(backbone, [bank], mean, std)
    return {"images": len(maps), "grid": list(maps.shape[-2:]), "iou": _iou(backbone.pool_attn, maps, targets)}


def teach_pool_attention(backbone, banks: list[ImageBank], mean, std, *, epochs: int, lr: float,
                         batch_size: int = 32, seed: int = 0, log=None) -> dict:
    """Fit `backbone.pool_attn` to the masks of `banks`' masked images; returns the fit's summary.

    `log`, a text stream, gets one JSON line per epoch."""
    attention = backbone.pool_attn
    if attention is None:
        raise ValueError("the backbone has no pooling attention to teach (backbone_args.pool_attn_stages)")
    x, y = _maps_and_targets(backbone, banks, mean, std, batch_size)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(attention.parameters(), lr=lr, weight_decay=1e-4)
    attention.train()
    losses: list[float] = []
    for epoch in range(epochs):
        order, losses = torch.randperm(len(x), generator=gen), []
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            turns, flip = int(torch.randint(4, (1,), generator=gen)), bool(torch.rand(1, generator=gen) < 0.5)
            xb, yb = torch.rot90(x[idx], turns, (2, 3)), torch.rot90(y[idx], turns, (2, 3))
            if flip:
                xb, yb = xb.flip(3), yb.flip(3)
            loss = F.binary_cross_entropy_with_logits(attention.logits(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        if log is not None:
            print(json.dumps({"attention_epoch": epoch + 1, "loss": float(np.mean(losses))}), file=log, flush=True)
    attention.eval()
    return {"images": len(x), "grid": list(x.shape[-2:]), "epochs": epochs, "loss": float(np.mean(losses)),
            "train_iou": _iou(attention, x, y)}
