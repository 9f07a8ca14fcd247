"""Handcrafted baseline: colour histograms and simple texture statistics -> logistic regression.

A network earns its place only by beating this on the same split: on BreakHis 200x colour
alone separates benign from malignant well (see the issue). Runs through the same split code
and metrics as the networks.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from training.data import ImageCache, Sample
from training.metrics import classification_metrics
from training.splits import Split
from training.transforms import HED_FROM_RGB

BINS = 16


def _hist(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    h, _ = np.histogram(values, bins=BINS, range=(lo, hi))
    return h / max(values.size, 1)


def _lbp_riu(grey: np.ndarray) -> np.ndarray:
    """Rotation-invariant uniform LBP over 8 neighbours: 10-bin histogram (Ojala et al. 2002)."""
    c = grey[1:-1, 1:-1]
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    h, w = grey.shape
    bits = np.stack([grey[1 + dy:h - 1 + dy, 1 + dx:w - 1 + dx] >= c for dy, dx in offsets]).astype(np.int8)
    transitions = np.abs(np.diff(np.concatenate([bits, bits[:1]]), axis=0)).sum(0)
    codes = np.where(transitions <= 2, bits.sum(0), 9)
    return np.bincount(codes.ravel(), minlength=10) / codes.size


def features(image: np.ndarray) -> np.ndarray:
    """~110 numbers per uint8 RGB image: colour (RGB, HSV, H&E stain) and texture statistics."""
    rgb = image.astype(np.float32)
    hsv = np.asarray(Image.fromarray(image).convert("HSV"), np.float32)
    od = -np.log(np.maximum(rgb / 255.0, 1e-3))
    hed = od.reshape(-1, 3) @ HED_FROM_RGB
    grey = rgb.mean(2)
    gy, gx = np.gradient(grey)
    grad = np.hypot(gx, gy)
    lap = grey[1:-1, 1:-1] * 4 - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    parts = [_hist(rgb[..., i], 0, 256) for i in range(3)]
    parts += [_hist(hsv[..., i], 0, 256) for i in range(2)]
    parts += [rgb.reshape(-1, 3).mean(0) / 255, rgb.reshape(-1, 3).std(0) / 255, hed.mean(0), hed.std(0)]
    parts += [np.array([grad.mean(), grad.std(), lap.var() ** 0.5,
                        np.abs(np.diff(grey, axis=0)).mean(), np.abs(np.diff(grey, axis=1)).mean(),
                        np.abs(grey[2:] - grey[:-2]).mean(), (grey < 100).mean(), (grey > 200).mean()]) / 64.0]
    parts.append(_lbp_riu(grey))
    return np.concatenate(parts).astype(np.float32)


def feature_matrix(samples: list[Sample], cache: ImageCache) -> np.ndarray:
    return np.stack([features(cache.get(s.path)) for s in samples])


def run_baseline(split: Split, size: int = 128, cache_dir=".data_cache", seed: int = 0) -> dict:
    """Fit on split.train, report metrics on val and test."""
    cache = ImageCache(size, cache_dir)
    xtr = feature_matrix(split.train, cache)
    ytr = np.array([s.label for s in split.train])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced",
                                                             random_state=seed))
    clf.fit(xtr, ytr)
    out = {"method": "colour histograms + texture statistics -> logistic regression (class-balanced)",
           "image_size": size}
    for name in ("val", "test"):
        samples = split.part(name)
        if not samples:
            continue
        probs = np.zeros((len(samples), len(split.classes)))
        probs[:, clf.classes_] = clf.predict_proba(feature_matrix(samples, cache))
        out[name] = classification_metrics([s.label for s in samples], probs, split.classes,
                                           groups=[s.group for s in samples])
    return out
