"""PNG figures for a run: confusion matrix and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion(matrix: list[list[int]], classes: list[str], path: str | Path,
                   title: str = "Confusion matrix") -> None:
    cm = np.asarray(matrix, dtype=float)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.55 * n + 2), max(4, 0.5 * n + 1.5)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history: list[dict], path: str | Path) -> None:
    epochs = [h for h in history if "train_loss" in h]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    x = [h["epoch"] for h in epochs]
    ax_loss.plot(x, [h["train_loss"] for h in epochs], marker="o", label="train")
    if epochs and "val_loss" in epochs[0]:
        ax_loss.plot(x, [h["val_loss"] for h in epochs], marker="o", label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(x, [h["train_accuracy"] for h in epochs], marker="o", label="train accuracy")
    if epochs and "val_accuracy" in epochs[0]:
        ax_acc.plot(x, [h["val_accuracy"] for h in epochs], marker="o", label="val accuracy")
        ax_acc.plot(x, [h["val_macro_f1"] for h in epochs], marker="s", label="val macro-F1")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
