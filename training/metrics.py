"""Classification metrics from scikit-learn and imbalanced-learn, and temperature calibration.

Every number is reported beside the majority-class rate: on imbalanced histopathology data a
network that always answers the largest class already scores that accuracy.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
from imblearn.metrics import geometric_mean_score, make_index_balanced_accuracy
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

# Index of balanced accuracy, García et al. 2009, with the dominance weight alpha = 0.1 of the
# transfer-ResNet50 paper.
_iba = make_index_balanced_accuracy(alpha=0.1, squared=True)(geometric_mean_score)


def majority_rate(y_true) -> float:
    """Accuracy of the best constant answer on these labels (an upper bound for any constant)."""
    y_true = np.asarray(y_true)
    return float(np.bincount(y_true).max() / len(y_true)) if len(y_true) else 0.0


def expected_calibration_error(probs: np.ndarray, y_true, n_bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == np.asarray(y_true)).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def reliability_bins(probs: np.ndarray, y_true, n_bins: int = 15) -> dict:
    conf = probs.max(1)
    correct = (probs.argmax(1) == np.asarray(y_true)).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    out = {"edges": edges.tolist(), "accuracy": [], "confidence": [], "count": []}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        out["count"].append(int(in_bin.sum()))
        out["accuracy"].append(float(correct[in_bin].mean()) if in_bin.any() else None)
        out["confidence"].append(float(conf[in_bin].mean()) if in_bin.any() else None)
    return out


def fit_temperature(logits: np.ndarray, y_true) -> float:
    """Temperature T minimising the negative log-likelihood of softmax(logits / T) (Guo et al. 2017)."""
    logits = np.asarray(logits, np.float64)
    y = np.asarray(y_true)
    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return -log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean()

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def case_accuracy(y_true, y_pred, groups) -> float:
    """Accuracy per patient/specimen: its images' majority prediction vs its majority label."""
    by_group: dict[str, tuple[list, list]] = {}
    for t, p, g in zip(y_true, y_pred, groups, strict=True):
        by_group.setdefault(g, ([], []))
        by_group[g][0].append(int(t))
        by_group[g][1].append(int(p))
    # ties break towards the smaller class index, the same rule for truth and prediction
    hits = [min(Counter(ts).most_common(), key=lambda kv: (-kv[1], kv[0]))[0]
            == min(Counter(ps).most_common(), key=lambda kv: (-kv[1], kv[0]))[0]
            for ts, ps in by_group.values()]
    return float(np.mean(hits)) if hits else 0.0


def auc_ovr(y_true, probs: np.ndarray) -> float | None:
    """One-vs-rest macro AUC over the classes present in y_true; None when fewer than two are."""
    y = np.asarray(y_true)
    present = np.unique(y)
    if len(present) < 2:
        return None
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    aucs = [roc_auc_score(y == c, probs[:, c]) for c in present]
    return float(np.mean(aucs))


def classification_metrics(y_true, probs: np.ndarray, classes: list[str], groups=None) -> dict:
    """All the numbers a run reports for one split, from labels and class probabilities."""
    y = np.asarray(y_true)
    probs = np.asarray(probs, np.float64)
    pred = probs.argmax(1)
    labels = list(range(len(classes)))
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    out = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "auc_ovr": auc_ovr(y, probs),
        "g_mean": float(geometric_mean_score(y, pred, labels=labels, average="multiclass")),
        "iba": float(_iba(y, pred, labels=labels, average="multiclass")),
        "ece": expected_calibration_error(probs, y),
        "majority_rate": majority_rate(y),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
    }
    if groups is not None:
        out["case_accuracy"] = case_accuracy(y, pred, groups)
        out["cases"] = len(set(groups))
    return out


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return softmax(np.asarray(logits, np.float64) / temperature, axis=1)
