"""Classification figures from predicted probabilities (scikit-learn underneath).

Below the tasks that score with it (`tasks.classification`) and the evaluation that
reports it: it needs only NumPy and scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(targets: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, top-3 accuracy, macro-F1, per-class precision/recall/F1, confusion matrix."""
    targets = np.asarray(targets)
    if len(targets) == 0:
        raise ValueError("no predictions to score")
    labels = list(range(len(classes)))
    preds = probs.argmax(1)
    k = min(3, probs.shape[1])
    topk = np.argsort(-probs, axis=1)[:, :k]
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, preds, labels=labels, zero_division=0)
    present = support > 0
    return {
        "accuracy": float(accuracy_score(targets, preds)),
        "top3_accuracy": float((topk == targets[:, None]).any(1).mean()),
        # Macro averages run over the classes that occur in this set.
        "macro_f1": float(f1[present].mean()),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "num_images": int(len(targets)),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion_matrix(targets, preds, labels=labels).tolist(),
        "classes": list(classes),
    }


def pooled_counts(predicted: np.ndarray, targets: np.ndarray) -> tuple[float, float, float]:
    """Micro (tp, fp, fn), unknown cells skipped."""
    known = ~np.isnan(targets)
    truth = targets > 0.5
    predicted = predicted & known
    return (float((predicted & truth).sum()), float((predicted & ~truth).sum()),
            float((~predicted & truth).sum()))
