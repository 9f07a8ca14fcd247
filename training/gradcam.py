"""Grad-CAM: the autograd reference, the traced head-only graph that export writes, and its scoring.

Paper: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" - https://arxiv.org/abs/1610.02391

For a feature map A (B, C, h, w) and a target logit y_c = head(A)[c]:
alpha_k = mean_{i,j} d y_c / d A_k[i,j];  cam = ReLU(sum_k alpha_k A_k), upsampled bilinearly to
the input size and min-max normalised per map (all zeros where the map is flat).

One mechanism serves every network: `cam_at_features` asks autograd for d y_c / d A, and
`trace_gradcam` records that computation, backward pass included, with `make_fx` into a plain
graph of aten ops that the ONNX exporter can translate. There is no closed form per head: a head
of pooling + linear and the lwa_resnet head (FC, LeakyReLU, FC, ReLU, dropout, classifier) go
through the same code, so parity is checked by the same test for both.

Localisation is scored against expert masks with two measures, each beside what a uniformly
random map gets on the same masks (computed from the masks, not assumed):
- pointing game: the map's maximum lies inside the mask; a random map hits with probability
  equal to the mask's area fraction;
- top-k coverage: the fraction of the mask covered by the map's top `top_fraction` pixels; a
  random choice of k of the N pixels covers k/N of the mask in expectation.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx


def normalise_maps(cam: torch.Tensor) -> torch.Tensor:
    """ReLU, then min-max to [0, 1] per map (B, H, W); a flat map becomes all zeros."""
    cam = torch.relu(cam)
    lo = cam.amin(dim=(1, 2), keepdim=True)
    hi = cam.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    flat = span <= 0
    # where the map is flat, divide by 1 instead of 0 and then zero it: no NaN reaches the graph
    return torch.where(flat, torch.zeros_like(cam), (cam - lo) / torch.where(flat, torch.ones_like(span), span))


def cam_at_features(head: nn.Module, features: torch.Tensor, target_class: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k alpha_k A_k) at the feature map's resolution (B, 1, h, w): the part that needs autograd."""
    feats = features.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = head(feats)
        # summing the per-image target logits gives each image's own gradient: images do not mix
        score = logits.gather(1, target_class.long()[:, None]).sum()
        (grads,) = torch.autograd.grad(score, feats)
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * feats.detach()).sum(dim=1, keepdim=True))


def upsample_and_normalise(cam: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    """(B, 1, h, w) -> (B, H, W): bilinear to the input size, then per-map min-max (normalise_maps)."""
    cam = F.interpolate(cam, size=tuple(int(s) for s in output_size), mode="bilinear", align_corners=False)
    return normalise_maps(cam[:, 0])


def gradcam_from_features(head: nn.Module, features: torch.Tensor, target_class: torch.Tensor,
                          output_size: Sequence[int]) -> torch.Tensor:
    """Grad-CAM maps (B, H, W) in [0, 1] for `target_class` (B,) int64, from the feature map alone."""
    return upsample_and_normalise(cam_at_features(head, features, target_class), output_size)


@torch.no_grad()
def gradcam_reference(model: nn.Module, images: torch.Tensor,
                      target_class: torch.Tensor | None = None) -> torch.Tensor:
    """Eager autograd Grad-CAM on `model.features` (no hooks): (B, H, W) at the input resolution.

    Without `target_class`, each image's predicted class (argmax of `model.head`) is explained.
    """
    feats = model.features(images)
    if target_class is None:
        target_class = model.head(feats).argmax(dim=1)
    return gradcam_from_features(model.head, feats, target_class, images.shape[-2:])


class GradCamGraph(nn.Module):
    """(features, target_class) -> gradcam, with the backward pass recorded as ordinary ops.

    `make_fx` runs `gradcam_from_features` under a tracer below autograd, so the graph it
    records contains the explicit backward ops (mm, threshold_backward, ...) instead of a
    call to autograd; symbolic tracing keeps the batch dimension free. The head's weights are
    captured as constants of the traced graph (the trace is taken from an eval-mode model).
    """

    def __init__(self, head: nn.Module, example_features: torch.Tensor, output_size: Sequence[int]):
        super().__init__()
        self.output_size = tuple(int(s) for s in output_size)

        def cam(features: torch.Tensor, target_class: torch.Tensor) -> torch.Tensor:
            return cam_at_features(head, features, target_class)

        target = torch.zeros(example_features.shape[0], dtype=torch.long)
        self.traced = make_fx(cam, tracing_mode="symbolic", _allow_non_fake_inputs=True)(
            example_features.detach(), target)

    def forward(self, features: torch.Tensor, target_class: torch.Tensor) -> torch.Tensor:
        # upsampling stays outside the trace: make_fx would decompose it into index gathers with
        # (H, W) int64 constants, while the exporter maps F.interpolate to one ONNX Resize
        return upsample_and_normalise(self.traced(features, target_class), self.output_size)


def trace_gradcam(model: nn.Module, input_size: Sequence[int], batch: int = 2) -> GradCamGraph:
    """The traced Grad-CAM graph of an eval-mode `model` for (H, W) = `input_size`."""
    if model.training:
        raise ValueError("trace_gradcam needs an eval-mode model: dropout and batch norm would be traced in training mode")
    with torch.no_grad():
        example = model.features(torch.zeros(batch, 3, *input_size))
    return GradCamGraph(model.head, example, input_size)


# --- localisation against expert masks ------------------------------------------------------

def pointing_hits(cams: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per map: True where the map's maximum pixel lies inside the mask. cams, masks: (N, H, W).

    A flat map (all zeros after ReLU) points nowhere and counts as a miss, not as its first pixel.
    """
    values = cams.reshape(len(cams), -1)
    peak = values.argmax(axis=1)
    hit = masks.reshape(len(masks), -1)[np.arange(len(masks)), peak].astype(bool)
    return hit & ~_flat(cams)


def _flat(cams: np.ndarray) -> np.ndarray:
    values = cams.reshape(len(cams), -1)
    return values.max(axis=1) <= values.min(axis=1)


def top_coverage(cams: np.ndarray, masks: np.ndarray, top_fraction: float = 0.2) -> tuple[np.ndarray, float]:
    """Per map: fraction of the mask's pixels among the map's top `top_fraction` pixels.

    Returns (coverage per map, k / N): k / N is the expected coverage of a uniformly random
    choice of k pixels, i.e. what a random map scores. A flat map has no top pixels: coverage 0.
    """
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    n_pix = cams[0].size
    k = max(1, int(round(top_fraction * n_pix)))
    flat = cams.reshape(len(cams), -1)
    top = np.argpartition(-flat, k - 1, axis=1)[:, :k]
    m = masks.reshape(len(masks), -1).astype(bool)
    covered = np.take_along_axis(m, top, axis=1).sum(axis=1)
    return np.where(_flat(cams), 0.0, covered / m.sum(axis=1)), k / n_pix


def localisation_scores(cams: np.ndarray, masks: np.ndarray, top_fraction: float = 0.2) -> dict:
    """Pointing game and top-k coverage over maps whose mask is not empty, each beside a random map's."""
    cams = np.asarray(cams, dtype=np.float32)
    masks = np.asarray(masks).astype(bool)
    if cams.shape != masks.shape or cams.ndim != 3:
        raise ValueError(f"cams and masks must both be (N, H, W), got {cams.shape} and {masks.shape}")
    keep = masks.reshape(len(masks), -1).any(axis=1)
    if not keep.any():
        raise ValueError("every mask is empty: localisation cannot be scored")
    cams, masks = cams[keep], masks[keep]
    hits = pointing_hits(cams, masks)
    coverage, random_coverage = top_coverage(cams, masks, top_fraction)
    return {
        "n_images": int(len(cams)),
        "n_empty_masks_skipped": int((~keep).sum()),
        "n_flat_maps": int(_flat(cams).sum()),  # scored as misses with no coverage
        "pointing_game": float(hits.mean()),
        "pointing_game_random": float(masks.reshape(len(masks), -1).mean(axis=1).mean()),
        "top_fraction": float(top_fraction),
        "top_coverage": float(coverage.mean()),
        "top_coverage_random": float(random_coverage),
    }


def _bundle_cams(bundle_dir: Path, images: np.ndarray, targets: np.ndarray | None, batch_size: int) -> np.ndarray:
    """Grad-CAM maps from a bundle's graphs with ONNX Runtime alone (the way the service computes them)."""
    import json

    import onnxruntime as ort

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    graphs = manifest["graphs"]
    if "gradcam" not in graphs:
        raise ValueError(f"bundle {bundle_dir} has no gradcam graph")
    opts = ort.SessionOptions()
    # the eager model is not running beside these sessions, but idle spinning threads still cost CPU
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    classify = ort.InferenceSession(str(bundle_dir / graphs["classify"]["file"]), opts,
                                    providers=["CPUExecutionProvider"])
    cam_sess = ort.InferenceSession(str(bundle_dir / graphs["gradcam"]["file"]), opts,
                                    providers=["CPUExecutionProvider"])
    out_names = [o.name for o in classify.get_outputs()]
    maps = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].astype(np.float32)
        outs = dict(zip(out_names, classify.run(None, {"image": batch}), strict=True))
        if targets is not None:
            target = targets[start:start + batch_size].astype(np.int64)
        elif "logits" in outs:
            target = outs["logits"].argmax(axis=1).astype(np.int64)
        else:
            raise ValueError("an embedding bundle has no predicted class: pass targets")
        maps.append(cam_sess.run(None, {"features": outs["features"], "target_class": target})[0])
    return np.concatenate(maps)


def score_localisation(source: nn.Module | str | Path, images: torch.Tensor | np.ndarray,
                       masks: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray | None = None,
                       *, top_fraction: float = 0.2, batch_size: int = 16) -> dict:
    """Score Grad-CAM of a bundle directory (ONNX Runtime) or an eval-mode model (autograd) against masks.

    images: (N, 3, H, W) normalised as the model expects; masks: (N, H, W), non-zero inside the
    labelled region; targets: the class to explain per image (default: the predicted class).
    """
    images_np = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    masks_np = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    targets_np = None
    if targets is not None:
        targets_np = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    if images_np.ndim != 4 or len(images_np) != len(masks_np):
        raise ValueError(f"images must be (N, 3, H, W) matching masks (N, H, W), got {images_np.shape} and {masks_np.shape}")
    if isinstance(source, nn.Module):
        cams = []
        for start in range(0, len(images_np), batch_size):
            batch = torch.from_numpy(images_np[start:start + batch_size]).float()
            target = None if targets_np is None else torch.from_numpy(targets_np[start:start + batch_size]).long()
            cams.append(gradcam_reference(source, batch, target).numpy())
        cam_np = np.concatenate(cams)
    else:
        cam_np = _bundle_cams(Path(source), images_np, targets_np, batch_size)
    return localisation_scores(cam_np, masks_np, top_fraction)
