"""Every tag that applies: sigmoid per tag, BCE or focal loss, thresholds tuned per tag.

Thresholds are tuned on the validation photos to maximise each tag's F1. Scores measured
with thresholds tuned on the same photos flatter the model, so `metrics()` also reports
`micro_f1_crossfit`: thresholds tuned on one half of the validation photos, applied to
the other half, and the other way round (the honest figure).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from ..data.sources import Sample, split_tags
from ..errors import DataError
from .base import Task, TaskConfig, register_task

if TYPE_CHECKING:
    from ..config import TrainConfig

log = logging.getLogger(__name__)

LOSSES = ("auto", "bce", "focal")
POS_WEIGHTS = ("none", "sqrt", "inverse")
GRID = np.round(np.arange(0.05, 0.96, 0.025), 3)


def f1_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float),
                     where=denominator > 0)


def best_thresholds(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per tag, the grid threshold with the best F1 (0.5 for a tag with no positives)."""
    thresholds = np.full(scores.shape[1], 0.5)
    for j in range(scores.shape[1]):
        positives = targets[:, j] > 0.5
        if not positives.any():
            continue
        predicted = scores[:, j][None, :] >= GRID[:, None]
        tp = (predicted & positives).sum(1)
        fp = (predicted & ~positives).sum(1)
        fn = (~predicted & positives).sum(1)
        thresholds[j] = GRID[int(np.argmax(f1_counts(tp, fp, fn)))]
    return thresholds


def multilabel_scores(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray,
                      names: list[str]) -> dict:
    truth = targets > 0.5
    predicted = scores >= thresholds[None, :]
    tp = (predicted & truth).sum(0).astype(float)
    fp = (predicted & ~truth).sum(0).astype(float)
    fn = (~predicted & truth).sum(0).astype(float)
    support = truth.sum(0)
    per_tag_f1 = f1_counts(tp, fp, fn)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
    ap = np.full(len(names), np.nan)
    for j in range(len(names)):
        if 0 < support[j] < len(truth):
            ap[j] = average_precision_score(truth[:, j], scores[:, j])
    present = support > 0
    common = support >= 30
    micro_tp, micro_fp, micro_fn = tp.sum(), fp.sum(), fn.sum()
    return {
        "micro_f1": float(f1_counts(np.array([micro_tp]), np.array([micro_fp]),
                                    np.array([micro_fn]))[0]),
        "micro_precision": float(micro_tp / max(micro_tp + micro_fp, 1)),
        "micro_recall": float(micro_tp / max(micro_tp + micro_fn, 1)),
        "macro_f1": float(per_tag_f1[present].mean()) if present.any() else 0.0,
        "macro_f1_30": float(per_tag_f1[common].mean()) if common.any() else None,
        "tags_with_30": int(common.sum()),
        "exact_match": float((predicted == truth).all(1).mean()),
        "map": float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0,
        "num_images": int(len(truth)),
        "per_tag": {
            name: {"precision": float(precision[j]), "recall": float(recall[j]),
                   "f1": float(per_tag_f1[j]),
                   "ap": None if np.isnan(ap[j]) else float(ap[j]),
                   "threshold": float(thresholds[j]), "support": int(support[j])}
            for j, name in enumerate(names)
        },
    }


@register_task
class MultilabelTask(Task):
    kind = "multilabel"
    headline = ("micro_f1", "map")
    monitor = "map"  # threshold-free: stable from epoch to epoch

    def __init__(self, config: TaskConfig, classes: list[str],
                 thresholds: list[float] | None = None) -> None:
        super().__init__(config, classes, thresholds)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.dropped: dict[str, int] = {}
        self._pos_weight: torch.Tensor | None = None

    def tags(self, sample: Sample) -> list[str] | None:
        """The sample's tags after mapping; None when its tag cell is empty (unlabelled)."""
        text = (sample.values or {}).get(self.config.source_column)
        if not isinstance(text, str) or not text.strip():
            return None
        tags = split_tags(text, self.config.separator)
        if self.config.mapping:
            tags = sorted({str(self.config.mapping.get(t, t)) for t in tags})
        return tags

    @classmethod
    def from_data(cls, config: TaskConfig, train: Sequence[Sample], val: Sequence[Sample],
                  source: str) -> MultilabelTask:
        if config.loss not in LOSSES:
            raise DataError(f"task '{config.name}': loss '{config.loss}' is not one of "
                            f"{', '.join(LOSSES)}")
        if config.pos_weight not in POS_WEIGHTS:
            raise DataError(f"task '{config.name}': pos_weight '{config.pos_weight}' is not "
                            f"one of {', '.join(POS_WEIGHTS)}")
        reader = cls(config, [])
        train_tags = [reader.tags(s) for s in train]
        if all(t is None for t in train_tags):
            raise DataError(f"{source}: task '{config.name}': column "
                            f"'{config.source_column}' has no tags in any training row")
        if config.mapping:
            seen = {t.strip() for s in [*train, *val]
                    for t in ((s.values or {}).get(config.source_column) or "")
                    .split(config.separator)}
            unknown = sorted(str(k) for k in config.mapping if str(k) not in seen)
            if unknown:
                raise DataError(f"{source}: task '{config.name}': the mapping names tags that "
                                f"column '{config.source_column}' never has: "
                                f"{', '.join(unknown[:10])}")
        counts = Counter(tag for tags in train_tags if tags for tag in tags)
        val_counts = Counter(tag for s in val if (tags := reader.tags(s)) for tag in tags)
        only_val = sorted(set(val_counts) - set(counts))
        if only_val and config.min_count <= 1:
            raise DataError(f"{source}: task '{config.name}': tags that appear only in the "
                            f"validation photos, never in training: {', '.join(only_val[:10])}"
                            f"; set min_count (e.g. 5) to drop rare tags, or map them to "
                            "others (mapping)")
        classes = sorted(t for t, n in counts.items() if n >= config.min_count)
        if len(classes) < 1:
            raise DataError(f"{source}: task '{config.name}': no tag has {config.min_count} "
                            "training photos (min_count)")
        task = cls(config, classes)
        task.dropped = {t: counts.get(t, 0) for t in sorted({*counts, *val_counts})
                        if t not in task.index}
        if task.dropped:
            log.info("task %s: %d tags with fewer than %d training photos are not learned: %s",
                     config.name, len(task.dropped), config.min_count,
                     ", ".join(list(task.dropped)[:10]))
        return task

    def encode(self, samples: Sequence[Sample]) -> np.ndarray:
        out = np.zeros((len(samples), len(self.classes)), np.float32)
        for row, sample in enumerate(samples):
            tags = self.tags(sample)
            if tags is None:
                out[row] = np.nan
                continue
            for tag in tags:
                if tag in self.index:
                    out[row, self.index[tag]] = 1.0
        return out

    def present(self, targets: np.ndarray) -> np.ndarray:
        return ~np.isnan(targets).any(1)

    def counts(self, targets: np.ndarray) -> dict[str, int]:
        totals = targets[self.present(targets)].sum(0)
        return {name: int(n) for name, n in zip(self.classes, totals, strict=True)}

    def prepare(self, train_targets: np.ndarray, train: TrainConfig,
                device: torch.device) -> None:
        self._pos_weight = None
        known = train_targets[self.present(train_targets)]
        if self.config.pos_weight != "none" and len(known):
            positives = np.maximum(known.sum(0), 1.0)
            ratio = (len(known) - positives) / positives
            ratio = np.sqrt(ratio) if self.config.pos_weight == "sqrt" else ratio
            self._pos_weight = torch.tensor(np.clip(ratio, 1.0, 50.0), dtype=torch.float32,
                                            device=device)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        keep = ~torch.isnan(targets).any(1)
        if not bool(keep.any()):
            return logits.sum() * 0.0
        logits, targets = logits[keep].float(), targets[keep]
        per = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self._pos_weight,
                                                 reduction="none")
        if self.config.loss == "focal":
            p = torch.sigmoid(logits)
            p_t = p * targets + (1 - p) * (1 - targets)
            per = per * (1 - p_t) ** self.config.focal_gamma
            if self.config.focal_alpha is not None:
                alpha = self.config.focal_alpha
                per = per * (alpha * targets + (1 - alpha) * (1 - targets))
        # Summed over tags, averaged over photos: a rare tag's gradient is not divided by
        # the number of tags.
        return per.sum(1).mean()

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
        keep = ~torch.isnan(targets).any(1)
        predicted = logits[keep] > 0
        truth = targets[keep] > 0.5
        tp = float((predicted & truth).sum())
        answers = float(predicted.sum() + truth.sum())
        return 2 * tp, int(answers)  # ratio = F1 at 0.5

    def sample_weights(self, targets: np.ndarray) -> np.ndarray:
        """A photo is drawn as often as its rarest tag asks (1/sqrt of that tag's count)."""
        known = self.present(targets)
        counts = np.maximum(np.nansum(targets[known], 0), 1.0)
        weights = np.zeros(len(targets))
        for row in np.flatnonzero(known):
            tags = targets[row] > 0.5
            weights[row] = (1.0 / np.sqrt(counts[tags])).max() if tags.any() else \
                1.0 / np.sqrt(counts.max())
        return weights

    def probe(self, features: np.ndarray, targets: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray] | None:
        keep = self.present(targets)
        features, targets = features[keep], targets[keep]
        weight = np.zeros((len(self.classes), features.shape[1]), np.float32)
        bias = np.full(len(self.classes), -4.0, np.float32)
        for j in range(len(self.classes)):
            column = targets[:, j] > 0.5
            if column.all() or not column.any():
                bias[j] = 4.0 if column.all() else -4.0
                continue
            fitted = LogisticRegression(C=0.5, max_iter=300).fit(features, column)
            weight[j], bias[j] = fitted.coef_[0], fitted.intercept_[0]
        return weight, bias

    def val_loss(self, scores: np.ndarray, targets: np.ndarray) -> float:
        keep = self.present(targets)
        p = np.clip(scores[keep], 1e-7, 1 - 1e-7)
        t = targets[keep]
        return float(-(t * np.log(p) + (1 - t) * np.log(1 - p)).sum(1).mean()) \
            if keep.any() else float("nan")

    def tune(self, scores: np.ndarray, targets: np.ndarray) -> None:
        keep = self.present(targets)
        self.thresholds = best_thresholds(scores[keep], targets[keep]).tolist()

    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        keep = self.present(targets)
        if not keep.any():
            raise DataError(f"task '{self.name}': no photo with tags to score")
        scores, targets = scores[keep], targets[keep]
        thresholds = np.asarray(self.thresholds if self.thresholds is not None
                                else [0.5] * len(self.classes))
        result = multilabel_scores(scores, targets, thresholds, self.classes)
        result["micro_f1_at_0.5"] = multilabel_scores(
            scores, targets, np.full(len(self.classes), 0.5), self.classes)["micro_f1"]
        result["micro_f1_crossfit"] = crossfit_micro_f1(scores, targets, self.classes)
        result["tags"] = list(self.classes)
        return result

    def report(self) -> dict:
        out: dict = {"kind": self.kind, "column": self.config.source_column,
                     "tags": len(self.classes), "loss": self.config.loss,
                     "pos_weight": self.config.pos_weight}
        if self.dropped:
            out["tags_not_learned"] = self.dropped
        if self.config.mapping:
            out["mapping"] = self.config.mapping
        return out


def crossfit_micro_f1(scores: np.ndarray, targets: np.ndarray, names: list[str],
                      seed: int = 0) -> float | None:
    """Micro-F1 with thresholds tuned on the other half of the photos (two folds)."""
    if len(scores) < 4:
        return None
    order = np.random.default_rng(seed).permutation(len(scores))
    halves = order[: len(order) // 2], order[len(order) // 2:]
    tp = fp = fn = 0.0
    for fit_rows, score_rows in (halves, halves[::-1]):
        thresholds = best_thresholds(scores[fit_rows], targets[fit_rows])
        predicted = scores[score_rows] >= thresholds[None, :]
        truth = targets[score_rows] > 0.5
        tp += float((predicted & truth).sum())
        fp += float((predicted & ~truth).sum())
        fn += float((~predicted & truth).sum())
    return float(2 * tp / max(2 * tp + fp + fn, 1))
