"""A classification bundle's out-of-distribution flag: the score, and its threshold calibrated on validation.

The score is the energy of the classify graph's logits (T = 1, as in the paper):
    E(x) = -T * logsumexp(logits(x) / T)
Paper: Liu, Wang, Owens, Li, `Energy-based Out-of-distribution Detection` (NeurIPS 2020)
- https://arxiv.org/abs/2010.03759

Why energy: `logits` is already an output of every classification bundle's model.onnx, so the
service computes it with numpy from the answer it has anyway (no new graph, nothing stored but one
number); unlike the maximum softmax probability (Hendrycks & Gimpel 2017) it keeps the logits'
magnitude, which falls for inputs unlike the training data even when one class still wins the
softmax; and unlike a distance to class means of the embedding it needs no per-class vectors in the
manifest. Higher energy = less like the training data. The raw logits are scored (not logits / the
calibration temperature): the threshold is calibrated on the same raw logits, so either would do.

The threshold is the value that a stated fraction of the validation images exceed (`calibrate`):
a query scoring above it is flagged `out_of_distribution`. Both sides use this module: training
to calibrate at export, the service to score and flag. Numpy only.
"""
from __future__ import annotations

import math

import numpy as np

ENERGY = "energy"
SCORES = (ENERGY,)
DEFAULT_FLAG_RATE = 0.05  # the fraction of validation images the threshold flags


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N, C) logits -> (N,) energies -T * logsumexp(logits / T), computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    if z.ndim != 2 or z.shape[1] == 0:
        raise ValueError(f"logits must be (N, C) with C >= 1, got shape {z.shape}")
    top = z.max(axis=1)
    return -temperature * (top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def score(name: str, logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(N,) scores of the named kind (higher: further from the training data)."""
    if name != ENERGY:
        raise ValueError(f"unknown out-of-distribution score {name!r}; known: {SCORES}")
    return energy(logits, temperature)


def calibrate(scores: np.ndarray, flag_rate: float = DEFAULT_FLAG_RATE, *, name: str = ENERGY,
              temperature: float = 1.0, calibrated_on: str = "val") -> dict:
    """The manifest's `out_of_distribution` section from the scores of the calibration images.

    The threshold is the (k+1)-th largest score, k = floor(flag_rate * N): "score > threshold" flags
    exactly k of the N images (fewer only where scores tie at the threshold), so at most the stated
    fraction of images like the validation set are flagged.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())[::-1]
    if len(s) == 0 or not np.all(np.isfinite(s)):
        raise ValueError("out-of-distribution calibration needs at least one finite score")
    if not 0 < flag_rate < 1:
        raise ValueError(f"flag_rate must be in (0, 1), got {flag_rate}")
    k = math.floor(flag_rate * len(s))
    threshold = float(s[min(k, len(s) - 1)])
    flagged = flags(s, threshold)
    return {"score": name, "temperature": float(temperature), "threshold": threshold,
            "flag_rate": float(flag_rate), "calibrated_on": calibrated_on, "val_images": int(len(s)),
            "val_flag_rate": float(flagged.mean()),
            "calibration": f"{name} score exceeded by {int(flagged.sum())} of {len(s)} {calibrated_on} images "
                           f"(stated rate {flag_rate:g})"}


def flags(scores: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) True where the score exceeds the threshold: unlike the images the threshold was calibrated on."""
    return np.asarray(scores) > threshold


__all__ = ["DEFAULT_FLAG_RATE", "ENERGY", "SCORES", "calibrate", "energy", "flags", "score"]
