"""Every tag that applies: sigmoid per tag, BCE or focal loss, thresholds tuned per tag.

Thresholds are tuned on the validation photos to maximise each tag's F1 (`tag_f1`) or
the F1 of all tags pooled (`micro_f1`: a rare tag the model is unsure of then needs a
higher score, so a photo gets fewer wrong tags). Scores measured with thresholds tuned
on the same photos flatter the model, so `metrics()` also reports `micro_f1_crossfit`:
thresholds tuned on one half of the validation photos, applied to the other half, and
the other way round (the honest figure).

Tag parents (`parents`: boots -> shoes) make one tag set of annotations that name the
same thing at different depths: a photo's tags gain their parents, and a photo that
names a parent but none of its children (`shoes`) is not taught that it shows no boots:
those cells of its target row are NaN (unknown), and the loss, the thresholds and the
scores skip them. A row wholly NaN is a photo without tags at all.

A photo's tags are decided by `models.info.decide_tags` here as in every runtime: over
the thresholds, a parent not repeated when a child says it, at most `max_tags` (a cap
`"auto"` picks by cross-fitting).
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
from ..metrics import pooled_counts
from ..models.info import (
    HeadSpec,
    check_parents,
    decide,
    implied,
    parent_indices,
    predicted_tags,
)
from .base import Task, TaskConfig, mapped_value, register_task

if TYPE_CHECKING:
    from ..config import TrainConfig

log = logging.getLogger(__name__)

LOSSES = ("auto", "bce", "focal")
POS_WEIGHTS = ("none", "sqrt", "inverse")
GRID = np.round(np.arange(0.05, 0.96, 0.025), 3)
OBJECTIVES = ("tag_f1", "micro_f1")
MAX_CAP = 15  # the largest cap `max_tags: auto` tries


def f1_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float),
                     where=denominator > 0)


def _grid_counts(scores: np.ndarray, targets: np.ndarray, j: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tag j's (tp, fp, fn) at each GRID threshold, over the photos where it is known."""
    known = ~np.isnan(targets[:, j])
    positives = targets[known, j] > 0.5
    predicted = scores[known, j][None, :] >= GRID[:, None]
    return ((predicted & positives).sum(1), (predicted & ~positives).sum(1),
            (~predicted & positives).sum(1))


def best_thresholds(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per tag, the grid threshold with the best F1 (0.5 for a tag with no positives)."""
    thresholds = np.full(scores.shape[1], 0.5)
    for j in range(scores.shape[1]):
        if not (targets[:, j] > 0.5).any():
            continue
        thresholds[j] = GRID[int(np.argmax(f1_counts(*_grid_counts(scores, targets, j))))]
    return thresholds


def micro_thresholds(scores: np.ndarray, targets: np.ndarray, rounds: int = 3) -> np.ndarray:
    """Per-tag thresholds that maximise the pooled (micro) F1: starting from each tag's
    best F1, each tag in turn takes the threshold that is best for the total with the
    others held, a few rounds over. Ties go to the higher threshold (fewer tags)."""
    thresholds = best_thresholds(scores, targets)
    grids = [_grid_counts(scores, targets, j) for j in range(scores.shape[1])]
    at = [int(np.argmin(np.abs(GRID - t))) for t in thresholds]  # each one is on the grid
    counts = np.array([(tp[k], fp[k], fn[k]) for (tp, fp, fn), k in zip(grids, at, strict=True)],
                      dtype=float).reshape(-1, 3)
    for _ in range(rounds):
        changed = False
        for j, (tp, fp, fn) in enumerate(grids):
            rest = counts.sum(0) - counts[j]
            f1 = f1_counts(rest[0] + tp, rest[1] + fp, rest[2] + fn)
            best = len(GRID) - 1 - int(np.argmax(f1[::-1]))
            if GRID[best] != thresholds[j]:
                thresholds[j], counts[j], changed = GRID[best], (tp[best], fp[best],
                                                                 fn[best]), True
        if not changed:
            break
    return thresholds


def tune_thresholds(scores: np.ndarray, targets: np.ndarray, objective: str = "tag_f1"
                    ) -> np.ndarray:
    return (micro_thresholds(scores, targets) if objective == "micro_f1"
            else best_thresholds(scores, targets))


def multilabel_scores(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray,
                      names: list[str], predicted: np.ndarray | None = None) -> dict:
    """Every figure of one decision (`predicted`; default: each tag over its threshold).
    NaN cells of `targets` (a child of a parent-only photo) count for nothing."""
    truth = targets > 0.5
    known = ~np.isnan(targets)
    if predicted is None:
        predicted = scores >= thresholds[None, :]
    predicted = predicted & known
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
        if 0 < support[j] < known[:, j].sum():
            ap[j] = average_precision_score(truth[known[:, j], j], scores[known[:, j], j])
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
        "exact_match": float(((predicted == truth) | ~known).all(1).mean()),
        "map": float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0,
        "num_images": int(len(truth)),
        "tags_per_photo": float(predicted.sum(1).mean()),
        "true_tags_per_photo": float(truth.sum(1).mean()),
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
    tunes_thresholds = True

    def __init__(self, config: TaskConfig, classes: list[str],
                 thresholds: list[float] | None = None) -> None:
        super().__init__(config, classes, thresholds)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.dropped: dict[str, int] = {}
        self._pos_weight: torch.Tensor | None = None
        # the cap in use: the config's number, or what `tune` chose for "auto"
        cap = config.max_tags
        self.max_tags: int | None = cap if isinstance(cap, int) else None
        self._set_parents(config.parents or {})

    def _set_parents(self, parents: dict) -> None:
        self.parents = {str(c): str(p) for c, p in parents.items()}
        # parent -> its children (any depth), to mask them on a parent-only photo
        self._descendants: dict[str, set[str]] = {}
        for child in self.parents:
            for parent in self._lineage(child):
                self._descendants.setdefault(parent, set()).add(child)

    def _lineage(self, tag: str) -> list[str]:
        """The parent, grandparent... of a tag."""
        found: list[str] = []
        parent = self.parents.get(tag)
        while parent is not None and parent not in found and parent != tag:
            found.append(parent)
            parent = self.parents.get(parent)
        return found

    def raw_tags(self, sample: Sample) -> list[str] | None:
        """The sample's tags after mapping, without parents; None when its tag cell is
        empty (unlabelled)."""
        text = (sample.values or {}).get(self.config.source_column)
        if not isinstance(text, str) or not text.strip():
            return None
        tags = split_tags(text, self.config.separator)
        if self.config.mapping:
            # a tag mapped to nothing (~) is dropped, as one the mapping lacks under
            # `unmapped: drop`
            tags = sorted({m for t in tags if (m := mapped_value(t, self.config)) is not None})
        return tags

    def tags(self, sample: Sample) -> list[str] | None:
        """The sample's tags after mapping, with their parents; None when unlabelled."""
        tags = self.raw_tags(sample)
        if tags is None or not self.parents:
            return tags
        return sorted({*tags, *(p for t in tags for p in self._lineage(t))})

    def unknown_tags(self, tags: Sequence[str]) -> set[str]:
        """The tags a photo's label leaves open: the children (any depth) of each parent
        it names without naming any of that parent's children."""
        present = set(tags)
        open_: set[str] = set()
        for tag in present:
            below = self._descendants.get(tag)
            if below and not below & present:
                open_ |= below
        return open_ - present

    @classmethod
    def from_data(cls, config: TaskConfig, train: Sequence[Sample], val: Sequence[Sample],
                  source: str) -> MultilabelTask:
        if config.loss not in LOSSES:
            raise DataError(f"task '{config.name}': loss '{config.loss}' is not one of "
                            f"{', '.join(LOSSES)}")
        if config.pos_weight not in POS_WEIGHTS:
            raise DataError(f"task '{config.name}': pos_weight '{config.pos_weight}' is not "
                            f"one of {', '.join(POS_WEIGHTS)}")
        if config.threshold_objective not in OBJECTIVES:
            raise DataError(f"task '{config.name}': threshold_objective "
                            f"'{config.threshold_objective}' is not one of "
                            f"{', '.join(OBJECTIVES)}")
        cap = config.max_tags
        if not (cap is None or cap == "auto" or (isinstance(cap, int)
                                                 and not isinstance(cap, bool) and cap >= 1)):
            raise DataError(f"task '{config.name}': max_tags must be a whole number of at "
                            f"least 1, auto, or empty (no cap); got {cap!r}")
        if not isinstance(config.parents, dict):
            raise DataError(f"task '{config.name}': parents must map a tag to its parent tag "
                            f"(boots: shoes); got {config.parents!r}"[:300])
        check_parents(config.parents, f"task '{config.name}': parents", DataError)
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
        if config.parents:
            seen = {t for s in [*train, *val] for t in (reader.raw_tags(s) or [])}
            unknown = sorted(str(k) for k in config.parents if str(k) not in seen)
            if unknown:
                raise DataError(f"{source}: task '{config.name}': parents names tags that "
                                f"column '{config.source_column}' never has (after the "
                                f"mapping): {', '.join(unknown[:10])}")
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
        """1 / 0 per tag; NaN for a photo without tags (the whole row) and for the
        children a parent-only label leaves open (`unknown_tags`)."""
        out = np.zeros((len(samples), len(self.classes)), np.float32)
        for row, sample in enumerate(samples):
            tags = self.tags(sample)
            if tags is None:
                out[row] = np.nan
                continue
            for tag in tags:
                if tag in self.index:
                    out[row, self.index[tag]] = 1.0
            for tag in self.unknown_tags(tags) if self.parents else ():
                if tag in self.index:
                    out[row, self.index[tag]] = np.nan
        return out

    def present(self, targets: np.ndarray) -> np.ndarray:
        return ~np.isnan(targets).all(1)

    def counts(self, targets: np.ndarray) -> dict[str, int]:
        totals = np.nansum(targets[self.present(targets)], 0)
        return {name: int(n) for name, n in zip(self.classes, totals, strict=True)}

    def prepare(self, train_targets: np.ndarray, train: TrainConfig,
                device: torch.device) -> None:
        self._pos_weight = None
        known = train_targets[self.present(train_targets)]
        if self.config.pos_weight != "none" and len(known):
            positives = np.maximum(np.nansum(known, 0), 1.0)
            ratio = (np.maximum((~np.isnan(known)).sum(0), 1) - positives) / positives
            ratio = np.sqrt(ratio) if self.config.pos_weight == "sqrt" else ratio
            self._pos_weight = torch.tensor(np.clip(ratio, 1.0, 50.0), dtype=torch.float32,
                                            device=device)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cells = ~torch.isnan(targets)
        keep = cells.any(1)
        if not bool(keep.any()):
            return logits.sum() * 0.0
        logits, targets, cells = logits[keep].float(), targets[keep], cells[keep]
        targets = torch.where(cells, targets, torch.zeros_like(targets))
        per = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self._pos_weight,
                                                 reduction="none")
        if self.config.loss == "focal":
            p = torch.sigmoid(logits)
            p_t = p * targets + (1 - p) * (1 - targets)
            per = per * (1 - p_t) ** self.config.focal_gamma
            if self.config.focal_alpha is not None:
                alpha = self.config.focal_alpha
                per = per * (alpha * targets + (1 - alpha) * (1 - targets))
        per = per * cells  # an open child of a parent-only photo teaches nothing
        # Summed over tags, averaged over photos: a rare tag's gradient is not divided by
        # the number of tags.
        return per.sum(1).mean()

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
        cells = ~torch.isnan(targets)
        keep = cells.any(1)
        predicted = (logits[keep] > 0) & cells[keep]
        truth = targets[keep] > 0.5
        tp = float((predicted & truth).sum())
        answers = float(predicted.sum() + truth.sum())
        return 2 * tp, int(answers)  # ratio = F1 at 0.5

    def sample_weights(self, targets: np.ndarray) -> np.ndarray:
        """A photo is drawn as often as its rarest tag asks (1/sqrt of that tag's count)."""
        known = self.present(targets)
        counts = np.maximum(np.nansum(targets[known], 0), 1.0)
        weights = np.zeros(len(targets))
        targets = np.nan_to_num(targets, nan=0.0)
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
            rows = ~np.isnan(targets[:, j])
            column = targets[rows, j] > 0.5
            if column.all() or not column.any():
                bias[j] = 4.0 if column.all() and column.any() else -4.0
                continue
            fitted = LogisticRegression(C=0.5, max_iter=300).fit(features[rows], column)
            weight[j], bias[j] = fitted.coef_[0], fitted.intercept_[0]
        return weight, bias

    def val_loss(self, scores: np.ndarray, targets: np.ndarray) -> float:
        keep = self.present(targets)
        p = np.clip(scores[keep], 1e-7, 1 - 1e-7)
        t = targets[keep]
        per = np.nan_to_num(-(t * np.log(p) + (1 - t) * np.log(1 - p)), nan=0.0)
        return float(per.sum(1).mean()) if keep.any() else float("nan")

    @property
    def parent_index(self) -> list[int | None] | None:
        return parent_indices(self.classes, self.parents)

    def tune(self, scores: np.ndarray, targets: np.ndarray) -> None:
        keep = self.present(targets)
        scores, targets = scores[keep], targets[keep]
        objective = self.config.threshold_objective
        self.thresholds = tune_thresholds(scores, targets, objective).tolist()
        if self.config.max_tags == "auto":
            self.max_tags = choose_cap(scores, targets, objective, self.parent_index)

    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        keep = self.present(targets)
        if not keep.any():
            raise DataError(f"task '{self.name}': no photo with tags to score")
        scores, targets = scores[keep], targets[keep]
        thresholds = np.asarray(self.thresholds if self.thresholds is not None
                                else [0.5] * len(self.classes))
        parents = self.parent_index
        predicted = (predicted_tags(scores, thresholds, self.max_tags, parents)
                     if self.max_tags is not None or parents is not None else None)
        result = multilabel_scores(scores, targets, thresholds, self.classes, predicted)
        result["micro_f1_at_0.5"] = multilabel_scores(
            scores, targets, np.full(len(self.classes), 0.5), self.classes)["micro_f1"]
        result["micro_f1_crossfit"] = crossfit_micro_f1(
            scores, targets, self.classes, objective=self.config.threshold_objective,
            max_tags=self.max_tags, parents=parents)
        result["max_tags"] = self.max_tags
        result["tags"] = list(self.classes)
        return result

    def head_spec(self) -> HeadSpec:
        parents = {c: p for c, p in self.parents.items() if c in self.index and p in self.index}
        return HeadSpec(self.name, self.kind, list(self.classes), self.thresholds,
                        column=self.config.source_column, max_tags=self.max_tags,
                        parents=parents or None)

    def adopt(self, head: HeadSpec) -> None:
        """Take a saved head's decision settings (its cap: `auto` was decided in
        training)."""
        if head.max_tags is not None:
            self.max_tags = head.max_tags
        if head.parents and not self.parents:
            self._set_parents(head.parents)

    def report(self) -> dict:
        out: dict = {"kind": self.kind, "column": self.config.source_column,
                     "tags": len(self.classes), "loss": self.config.loss,
                     "pos_weight": self.config.pos_weight}
        if self.dropped:
            out["tags_not_learned"] = self.dropped
        if self.config.mapping:
            out["mapping"] = self.config.mapping
        if self.parents:
            out["parents"] = self.parents
        if self.config.max_tags is not None:
            out["max_tags"] = self.max_tags if self.max_tags is not None else "none"
        out["threshold_objective"] = self.config.threshold_objective
        return out


def halves(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(count)
    return order[: count // 2], order[count // 2:]


def crossfit_micro_f1(scores: np.ndarray, targets: np.ndarray, names: list[str],
                      seed: int = 0, objective: str = "tag_f1", max_tags: int | None = None,
                      parents: list[int | None] | None = None) -> float | None:
    """Micro-F1 with thresholds tuned on the other half of the photos (two folds), the
    photos' tags decided as every runtime does (cap, parents)."""
    if len(scores) < 4:
        return None
    tp = fp = fn = 0.0
    for fit_rows, score_rows in (pair := halves(len(scores), seed), pair[::-1]):
        thresholds = tune_thresholds(scores[fit_rows], targets[fit_rows], objective)
        predicted = predicted_tags(scores[score_rows], thresholds, max_tags, parents)
        counts = pooled_counts(predicted, targets[score_rows])
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def cap_counts(scores: np.ndarray, targets: np.ndarray, objective: str,
               parents: list[int | None] | None, caps: Sequence[int | None], seed: int
               ) -> np.ndarray:
    """Pooled cross-fitted (tp, fp, fn) of each cap (rows: caps)."""
    out = np.zeros((len(caps), 3))
    for fit_rows, score_rows in (pair := halves(len(scores), seed), pair[::-1]):
        thresholds = tune_thresholds(scores[fit_rows], targets[fit_rows], objective)
        listed = decide(scores[score_rows], thresholds, None, parents)
        for k, cap in enumerate(caps):
            predicted = implied(listed, (len(score_rows), scores.shape[1]), cap, parents)
            out[k] += pooled_counts(predicted, targets[score_rows])
    return out


def choose_cap(scores: np.ndarray, targets: np.ndarray, objective: str = "tag_f1",
               parents: list[int | None] | None = None, seeds: Sequence[int] = (0, 1, 2)
               ) -> int | None:
    """The cap on tags a photo (None: none) with the best cross-fitted micro-F1, over a
    few cuts of the photos in halves; a tie goes to the smaller cap."""
    if len(scores) < 4:
        return None
    caps: list[int | None] = [*range(1, min(MAX_CAP, scores.shape[1]) + 1), None]
    totals = sum(cap_counts(scores, targets, objective, parents, caps, seed) for seed in seeds)
    f1 = f1_counts(totals[:, 0], totals[:, 1], totals[:, 2])
    return caps[int(np.argmax(f1 >= f1.max() - 1e-12))]
