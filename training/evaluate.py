"""Evaluate a run: the best checkpoint on the held-out split, beside the majority rate and the baseline.

Writes `metrics.json` and the plots into the run directory. The temperature is fitted on the
validation logits and only changes calibration (ECE), never the predicted class.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

import models
from training.baseline import run_baseline
from training.config import TrainConfig
from training.data import HistoDataset
from training.engine import pick_device, predict
from training.loaders import image_cache
from training.metrics import (
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    probabilities,
    reliability_bins,
)
from training.report import plot_confusion, plot_curves, plot_reliability
from training.splits import load_split
from training.transforms import eval_transform

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "auc_ovr", "g_mean", "iba", "case_accuracy", "ece")


def load_checkpoint(path, device="cpu") -> tuple[torch.nn.Module, dict]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = models.create_model(ckpt["architecture"], **ckpt["model_args"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def run_logits(run_dir, data=None, mask_root=None):
    """A trained run's best checkpoint, its config and split, and `logits_of(part, tta=False)` -> (logits,
    labels) of that split part, computed the way evaluation computes them."""
    run = Path(run_dir)
    if not (run / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{run} has no checkpoint.pt; train first (python -m training train ...)")
    model, ckpt = load_checkpoint(run / "checkpoint.pt")
    cfg = TrainConfig(**ckpt["config"])
    device = pick_device(cfg)
    model.to(device)
    # the folders the run was trained on when they are here, else the split's dataset names
    here = [p if p and Path(p).is_dir() else None for p in (cfg.data, cfg.mask_root)]
    split = load_split(run / "split.json", root=data or here[0], mask_root=mask_root or here[1])
    cache = image_cache(cfg)
    tf = eval_transform(cfg.mean, cfg.std)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    def logits_of(part: str, tta: bool = False):
        ds = HistoDataset(split.part(part), cfg.image_size, tf, cache=cache)
        return predict(model, torch.utils.data.DataLoader(ds, cfg.batch_size), device, cfg.amp, cfg.cpu_bf16,
                       tta=tta, channels_last=cfg.channels_last)

    return ckpt, cfg, split, logits_of


def evaluate_run(run_dir, data=None, mask_root=None, baseline: bool | None = None) -> dict:
    run = Path(run_dir)
    t0 = time.time()
    ckpt, cfg, split, logits_of = run_logits(run, data, mask_root)

    val_logits, val_y = logits_of("val")
    test_logits, test_y = logits_of("test")
    temperature = fit_temperature(val_logits, val_y)
    groups = [s.group for s in split.test]
    test = classification_metrics(test_y, probabilities(test_logits), split.classes, groups=groups)
    calibrated = probabilities(test_logits, temperature)
    test["ece_calibrated"] = expected_calibration_error(calibrated, test_y)
    val = classification_metrics(val_y, probabilities(val_logits), split.classes,
                                 groups=[s.group for s in split.val])
    train_counts = np.bincount([s.label for s in split.train], minlength=len(split.classes))
    history = json.loads((run / "history.json").read_text()) if (run / "history.json").is_file() else []
    rates = [row["train_images_per_s"] for row in history if "train_images_per_s" in row]
    metrics = {
        "run": run.name,
        "name": cfg.name,
        "architecture": ckpt["architecture"],
        "model_args": ckpt["model_args"],
        "classes": split.classes,
        "checkpoint_epoch": ckpt["epoch"] + 1,
        "split": {"description": split.description, "file": "split.json", "seed": split.seed,
                  "counts": {p: len(split.part(p)) for p in ("train", "val", "test")},
                  "groups": {p: len({s.group for s in split.part(p)}) for p in ("train", "val", "test")},
                  "class_report": split.class_report},
        "temperature": temperature,
        # predicting the training set's largest class on the test set; and the best constant in hindsight
        "majority_rate": test["majority_rate"],
        "train_majority_class_test_accuracy": float(np.mean(test_y == int(train_counts.argmax()))),
        "test": test,
        "val": val,
        # wall-clock of the whole run (rows since round 6 carry it) and up to the checkpoint kept
        "training": {"epochs_run": sum(r["epoch"] > 0 for r in history),
                     "seconds": history[-1].get("elapsed_s") if history else None,
                     "seconds_to_checkpoint": ckpt.get("train_seconds"),
                     "train_images_per_s_mean": float(np.mean(rates)) if rates else None,
                     "precision": "bfloat16 autocast" if cfg.cpu_bf16 else "float32",
                     "channels_last": cfg.channels_last, "ema_decay": cfg.ema_decay},
    }
    if cfg.tta:  # the served graph has no TTA: its figures are `test`; these are beside them
        tta_logits, _ = logits_of("test", tta=True)
        metrics["test_tta"] = classification_metrics(test_y, probabilities(tta_logits), split.classes, groups=groups)
    if baseline if baseline is not None else cfg.baseline:
        base = run_baseline(split, size=min(cfg.image_size, 128), cache_dir=cfg.cache_dir if cfg.cache else None,
                            seed=cfg.seed)
        metrics["baseline"] = base
    metrics["summary"] = {
        "test": {k: test.get(k) for k in HEADLINE},
        "majority_rate": test["majority_rate"],
        "baseline_test": {k: metrics["baseline"]["test"].get(k) for k in HEADLINE} if "baseline" in metrics else None,
        "test_tta": {k: metrics["test_tta"].get(k) for k in HEADLINE} if "test_tta" in metrics else None,
    }
    data_report = run / "data_report.json"
    if data_report.is_file():  # skipped unreadable images and missing masks, counted at scan time
        metrics["data"] = json.loads(data_report.read_text())
    metrics["evaluated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    metrics["eval_seconds"] = time.time() - t0
    (run / "metrics.json").write_text(json.dumps(metrics, indent=1))

    history_file = run / "history.json"
    if history_file.is_file():
        plot_curves(json.loads(history_file.read_text()), run / "curves.png")
    plot_confusion(test["confusion_matrix"], split.classes, run / "confusion_matrix.png")
    plot_reliability(reliability_bins(probabilities(test_logits), test_y), reliability_bins(calibrated, test_y),
                     temperature, run / "reliability.png")
    return metrics
