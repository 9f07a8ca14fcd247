"""Plots of a run as PNG (matplotlib, Agg): learning curves, confusion matrix, reliability diagram."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: list[dict], path: Path) -> None:
    trained = [r for r in history if "train_loss" in r]  # a linear probe's epoch 0 has no training pass
    epochs = [r["epoch"] for r in trained]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in trained], label="train")
    ev = [r for r in history if "val_loss" in r]
    ax_loss.plot([r["epoch"] for r in ev], [r["val_loss"] for r in ev], label="val (CE)")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.plot(epochs, [r["train_acc"] for r in trained], label="train accuracy")
    ax_acc.plot([r["epoch"] for r in ev], [r["val_acc"] for r in ev], label="val accuracy")
    ax_acc.plot([r["epoch"] for r in ev], [r["val_bal_acc"] for r in ev], label="val balanced accuracy")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str = "test") -> None:
    cm = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reliability(bins_raw: dict, bins_cal: dict, temperature: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for bins, label in ((bins_raw, "raw"), (bins_cal, f"temperature {temperature:.2f}")):
        pts = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"], strict=True) if c is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=label)
    ax.set(xlabel="confidence", ylabel="accuracy", title="reliability (test)", xlim=(0, 1), ylim=(0, 1))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
