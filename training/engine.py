"""Device, precision and batched prediction: what training, evaluation and export share.

bfloat16 autocast runs on CUDA when `amp` is on, and on a CPU only when asked (`cpu_bf16`) and the
CPU computes bfloat16 natively; `channels_last` is the NHWC layout oneDNN's convolutions prefer.
"""
from __future__ import annotations

import random
from contextlib import nullcontext

import numpy as np
import torch


def pick_device(cfg) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but torch sees no CUDA device")
    return torch.device(cfg.device)


def cpu_supports_bf16() -> bool:
    """oneDNN runs bfloat16 natively only with AVX-512 bf16 or AMX; elsewhere it is emulated and slower."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, enabled: bool, cpu_bf16: bool = False):
    """bfloat16 (or float16) autocast on CUDA when asked; bfloat16 on a CPU that has it, when asked."""
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "cpu" and cpu_bf16 and cpu_supports_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 symmetries of the square (4 rotations, each optionally mirrored)."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


@torch.no_grad()
def predict(model, loader, device, amp: bool, cpu_bf16: bool = False, tta: bool = False,
            channels_last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Logits (forward: the fused ones for gated_fusion) and labels of a loader, in order.
    With tta, the mean softmax over the 8 dihedral transforms, returned as log-probabilities."""
    model.eval()
    logits, labels = [], []
    for batch in loader:
        batch = to_device(batch, device, channels_last)
        with autocast(device, amp, cpu_bf16):
            if tta:
                probs = torch.stack([model(dihedral(batch["image"], k)).float().softmax(1) for k in range(8)])
                out = probs.mean(0).clamp_min(1e-12).log()
            else:
                out = model(batch["image"])
        logits.append(out.float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def set_train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    """Train mode; with freeze_bn, BatchNorm keeps using (and no longer updates) its running statistics."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
