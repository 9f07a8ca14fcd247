"""The prototype head: one mean embedding per class of a support set, as in ProtoNet.

Paper: Snell, Swersky, Zemel, `Prototypical Networks for Few-shot Learning` - https://arxiv.org/abs/1703.05175

Pure numpy, no I/O: the store persists what these functions compute, the routers never see them.
"""
from __future__ import annotations

import numpy as np

PROTOTYPE = "prototype"  # the head name persisted with an adapter; new heads add their own
HEADS = (PROTOTYPE,)


def distances(embeddings: np.ndarray, prototypes: np.ndarray, metric: str) -> np.ndarray:
    """(N, D) x (K, D) -> (N, K) distances under the bundle's training metric."""
    e = embeddings.astype(np.float64)
    p = prototypes.astype(np.float64)
    if metric == "cosine":
        en = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        pn = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        return 1.0 - en @ pn.T
    sq = (e**2).sum(1)[:, None] - 2.0 * e @ p.T + (p**2).sum(1)[None, :]
    sq = np.maximum(sq, 0.0)
    return np.sqrt(sq) if metric == "euclidean" else sq


def softmax_neg(d: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities from a softmax over negative distances, as the prototype loss defines them."""
    z = -d / temperature
    z = z - z.max(axis=1, keepdims=True)
    ez = np.exp(z)
    return ez / ez.sum(axis=1, keepdims=True)


def prototypes(embeddings: np.ndarray, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Classes in first-seen order, and the mean embedding of each."""
    classes = list(dict.fromkeys(labels))
    idx = np.asarray([classes.index(label) for label in labels])
    protos = np.stack([embeddings[idx == k].mean(axis=0) for k in range(len(classes))])
    return classes, protos.astype(np.float32)


def leave_one_out_accuracy(embeddings: np.ndarray, labels: list[str], metric: str) -> float | None:
    """Each support image classified by prototypes built without it; None when no class has 2 shots.

    An image whose class has a single shot is skipped: without it, its class has no prototype.
    """
    classes, protos = prototypes(embeddings, labels)
    counts = {c: labels.count(c) for c in classes}
    sums = {c: embeddings[[i for i, lab in enumerate(labels) if lab == c]].astype(np.float64).sum(0) for c in classes}
    correct = total = 0
    for i, label in enumerate(labels):
        if counts[label] < 2:
            continue
        own = (sums[label] - embeddings[i]) / (counts[label] - 1)
        p = protos.astype(np.float64).copy()
        p[classes.index(label)] = own
        predicted = int(np.argmin(distances(embeddings[i : i + 1], p, metric)[0]))
        correct += predicted == classes.index(label)
        total += 1
    return correct / total if total else None
