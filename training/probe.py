"""Linear probe: a class-balanced logistic regression on the frozen pooled features, written into the
network's own classifier, so that the result is an ordinary checkpoint (export, Grad-CAM, serving
unchanged).

Probing first is LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and
Underperform Out-of-Distribution"): a classifier fitted to frozen features starts any later
fine-tuning from a head that already fits, so the features are not torn up to fit a random one.
Patients the split keeps apart are exactly that out-of-distribution case here.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from models.layers import global_avg
from training.engine import autocast, to_device

C_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # inverse L2 strength, picked on the validation split


@torch.no_grad()
def pooled_features(model, loader, device, cfg) -> tuple[np.ndarray, np.ndarray]:
    """What the head reads, the spatial mean of the last feature map, for every image of a loader."""
    model.eval()
    feats, labels = [], []
    for batch in loader:
        batch = to_device(batch, device, cfg.channels_last)
        with autocast(device, cfg.amp, cfg.cpu_bf16):
            feats.append(global_avg(model.features(batch["image"])).float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(feats).numpy().astype(np.float64), torch.cat(labels).numpy()


def fit_linear_probe(model, train_loader, val_loader, device, cfg, seed: int = 0) -> dict:
    """Fit on the training loader's images, pick C on the validation loader's, and write the
    standardisation and the regression into model.get_classifier(). Returns what was chosen."""
    classifier = model.get_classifier()
    x_train, y_train = pooled_features(model, train_loader, device, cfg)
    x_val, y_val = pooled_features(model, val_loader, device, cfg)
    scaler = StandardScaler().fit(x_train)
    n_classes = classifier.out_features
    scores = {}
    fits = {}
    for c in C_GRID:
        lr = LogisticRegression(C=c, max_iter=5000, class_weight="balanced", random_state=seed)
        lr.fit(scaler.transform(x_train), y_train)
        fits[c] = lr
        scores[c] = float(balanced_accuracy_score(y_val, lr.predict(scaler.transform(x_val))))
    best_c = max(C_GRID, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    lr = fits[best_c]
    coef = np.zeros((n_classes, x_train.shape[1]))
    bias = np.full(n_classes, -1e4)  # a class absent from the training images is never predicted
    if n_classes == 2 and lr.coef_.shape[0] == 1:  # scikit-learn's binary form: one logit difference
        coef[1], bias[1], bias[0] = lr.coef_[0], lr.intercept_[0], 0.0
    else:
        coef[lr.classes_], bias[lr.classes_] = lr.coef_, lr.intercept_
    # (x - mean) / scale folded into the layer: W' = W / scale, b' = b - W' mean
    weight = coef / scaler.scale_
    bias = bias - weight @ scaler.mean_
    with torch.no_grad():
        classifier.weight.copy_(torch.as_tensor(weight, dtype=classifier.weight.dtype))
        classifier.bias.copy_(torch.as_tensor(bias, dtype=classifier.bias.dtype))
    return {"C": best_c, "val_balanced_accuracy_by_C": {str(c): s for c, s in scores.items()},
            "train_images": int(len(y_train))}
