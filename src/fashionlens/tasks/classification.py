"""One label per photo: softmax, cross-entropy, accuracy / macro-F1."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from ..data.sources import Sample
from ..errors import DataError
from ..metrics import classification_metrics
from .base import Task, TaskConfig, register_task

if TYPE_CHECKING:
    from ..config import TrainConfig

log = logging.getLogger(__name__)

MISSING = -1  # a photo without this label: no loss, not scored


@register_task
class ClassificationTask(Task):
    kind = "classification"
    headline = ("accuracy", "macro_f1")
    monitor = "accuracy"

    def __init__(self, config: TaskConfig, classes: list[str],
                 thresholds: list[float] | None = None) -> None:
        super().__init__(config, classes, None)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.folded: dict[str, int] = {}
        self.unknown_in_validation: dict[str, int] = {}
        self._weights: torch.Tensor | None = None
        self._smoothing = 0.0
        self._balance = "none"

    @classmethod
    def from_data(cls, config: TaskConfig, train: Sequence[Sample], val: Sequence[Sample],
                  source: str) -> ClassificationTask:
        probe = cls(config, [])
        if config.mapping:
            seen = {v for s in [*train, *val]
                    if (v := (s.values or {}).get(config.source_column, "").strip())}
            if config.keywords:
                seen |= {str(k) for k in config.keywords} | {config.default or ""}
            unknown = sorted(str(k) for k in config.mapping if str(k) not in seen)
            # A typo, or a taxonomy shared by several data sets (it names values this
            # data lacks): refused only when the mapping matches nothing at all.
            if unknown and len(unknown) == len(config.mapping):
                raise DataError(f"{source}: task '{config.name}': the mapping names values "
                                f"that column '{config.source_column}' never has: "
                                f"{', '.join(unknown[:10])}")
            if unknown:
                log.info("task '%s': the mapping names values this data lacks: %s",
                         config.name, ", ".join(unknown[:10]))
        counts = Counter(v for s in train if (v := probe.raw(s)) is not None)
        if not counts:
            raise DataError(f"{source}: task '{config.name}': column "
                            f"'{config.source_column}' is empty in every training row")
        rare = {c: n for c, n in counts.items() if n < config.min_count}
        classes = sorted(c for c in counts if c not in rare)
        if rare:
            classes = sorted({*classes, config.other})
        if len(classes) < 2:
            raise DataError(f"{source}: task '{config.name}' has one class only "
                            f"({', '.join(classes)}) in column '{config.source_column}'; "
                            "a classifier needs at least two")
        task = cls(config, classes)
        task.folded = dict(sorted(rare.items()))
        if rare:
            log.info("task %s: %d rare values (< %d photos) folded into '%s'", config.name,
                     len(rare), config.min_count, config.other)
        unknown_val = Counter(v for s in val if (v := task.raw(s)) is not None
                              and v not in task.index and not task.folds)
        if unknown_val:
            task.unknown_in_validation = dict(unknown_val)
            log.warning("task %s: validation values never seen in training are not scored: %s",
                        config.name, ", ".join(sorted(unknown_val)[:10]))
        return task

    @property
    def folds(self) -> bool:
        """Whether values training never saw (or saw too rarely) count as `other`."""
        return self.config.min_count > 1 and self.config.other in self.index

    def target(self, sample: Sample) -> int:
        value = self.raw(sample)
        if value is None:
            return MISSING
        if value in self.index:
            return self.index[value]
        return self.index[self.config.other] if self.folds else MISSING

    def encode(self, samples: Sequence[Sample]) -> np.ndarray:
        return np.array([self.target(s) for s in samples], dtype=np.int64)

    def present(self, targets: np.ndarray) -> np.ndarray:
        return targets != MISSING

    def _bincount(self, targets: np.ndarray) -> np.ndarray:
        return np.bincount(targets[targets != MISSING], minlength=len(self.classes))

    def counts(self, targets: np.ndarray) -> dict[str, int]:
        return {name: int(n) for name, n in zip(self.classes, self._bincount(targets),
                                                strict=True)}

    def prepare(self, train_targets: np.ndarray, train: TrainConfig,
                device: torch.device) -> None:
        self.monitor = train.monitor
        self._smoothing = train.label_smoothing
        self._weights = None
        self._balance = train.balance
        if train.balance in ("sqrt", "inverse"):
            counts = np.maximum(self._bincount(train_targets).astype(np.float64), 1.0)
            weights = 1.0 / (np.sqrt(counts) if train.balance == "sqrt" else counts)
            weights *= len(self.classes) / weights.sum()
            self._weights = torch.tensor(weights, dtype=torch.float32, device=device)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not bool((targets != MISSING).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), targets, weight=self._weights,
                               label_smoothing=self._smoothing, ignore_index=MISSING)

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
        keep = targets != MISSING
        return float((logits.argmax(-1)[keep] == targets[keep]).sum()), int(keep.sum())

    def sample_weights(self, targets: np.ndarray) -> np.ndarray:
        counts = Counter(targets.tolist())
        return np.array([0.0 if t == MISSING else 1.0 / counts[t] for t in targets.tolist()])

    def probe(self, features: np.ndarray, targets: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray] | None:
        keep = targets != MISSING
        features, targets = features[keep], targets[keep]
        present = np.unique(targets)
        if len(present) < 2:
            log.warning("task %s: linear probe skipped: fewer than two classes in the "
                        "training photos", self.name)
            return None
        probe = LogisticRegression(C=0.5, max_iter=300,
                                   class_weight="balanced" if self._balance != "none" else None)
        probe.fit(features, targets)
        weight = np.zeros((len(self.classes), features.shape[1]), np.float32)
        # Classes the probe never saw keep a very negative bias instead of random logits.
        bias = np.full(len(self.classes), -10.0, np.float32)
        if len(present) > 2:
            coef, intercept = probe.coef_, probe.intercept_
        else:  # binary logistic regression: one weight vector, split symmetrically
            coef = np.vstack([-probe.coef_[0], probe.coef_[0]]) / 2
            intercept = np.array([-probe.intercept_[0], probe.intercept_[0]]) / 2
        weight[probe.classes_] = coef
        bias[probe.classes_] = intercept
        return weight, bias

    def val_loss(self, scores: np.ndarray, targets: np.ndarray) -> float:
        keep = targets != MISSING
        picked = scores[keep][np.arange(int(keep.sum())), targets[keep]]
        return float(-np.log(picked + 1e-7).mean()) if len(picked) else float("nan")

    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        keep = targets != MISSING
        if not keep.any():
            raise DataError(f"task '{self.name}': no photo with a known label to score")
        return classification_metrics(targets[keep], scores[keep], self.classes)

    def report(self) -> dict:
        out: dict = {"kind": self.kind, "column": self.config.source_column,
                     "classes": len(self.classes)}
        if self.folded:
            out[f"folded_into_{self.config.other}"] = self.folded
        if self.config.mapping:
            out["mapping"] = self.config.mapping
        if self.unknown_in_validation:
            out["validation_values_not_scored"] = self.unknown_in_validation
        return out
