"""PNG figures for a run: confusion matrix and training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


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


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    rows = [h for h in history if key in h]
    return [h["epoch"] for h in rows], [h[key] for h in rows]


def plot_curves(history: list[dict], path: str | Path, kept_epoch: int | None = None) -> None:
    """Save `curves_figure` as a PNG."""
    fig = curves_figure(history, kept_epoch)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves_figure(history: list[dict], kept_epoch: int | None = None) -> plt.Figure:
    """Loss and accuracy per epoch. Epoch 0 is the linear-probe start (validation only), so
    the plot shows whether fine-tuning beat it; `kept_epoch` marks the weights kept."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, lines in (
        (ax_loss, (("train_loss", "train", "o"), ("val_loss", "validation", "o"))),
        (ax_acc, (("train_accuracy", "train accuracy", "o"),
                  ("val_accuracy", "val accuracy", "o"), ("val_macro_f1", "val macro-F1", "s"))),
    ):
        for key, label, marker in lines:
            x, y = _series(history, key)
            if x:
                ax.plot(x, y, marker=marker, label=label)
        if kept_epoch is not None and history:
            ax.axvline(kept_epoch, color="grey", linestyle=":", linewidth=1,
                       label=f"kept (epoch {kept_epoch})")
        ax.set_xlabel("epoch (0: linear probe)" if any(h.get("epoch") == 0 for h in history)
                      else "epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.has_data():
            ax.legend()
    ax_loss.set_ylabel("loss")
    ax_acc.set_ylim(0, 1)
    fig.tight_layout()
    return fig
