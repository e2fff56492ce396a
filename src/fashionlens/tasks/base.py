"""What every task has: its config, how it reads its column, and the interface the
training loop and evaluation use."""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

# The task's config lives with the run config (torch-free, below the tasks); imported
# here under its old name too.
from ..config import TaskConfig, TrainConfig
from ..data.sources import Sample
from ..errors import DataError
from ..models.heads import RESERVED_NAMES, HeadSpec

log = logging.getLogger(__name__)


def mapped_value(text: str, config: TaskConfig) -> str | None:
    """A raw value through a task's `mapping` (None: mapped to nothing, or not in the
    mapping under `unmapped: drop`)."""
    mapping = config.mapping if isinstance(config.mapping, dict) else {}
    if text in mapping:
        mapped = mapping[text]
        return None if mapped is None else str(mapped)
    return None if mapping and config.unmapped == "drop" else text


class Task(ABC):
    """One head's targets, loss, metrics and linear-probe start."""

    kind: ClassVar[str]
    monitor: str = ""  # the key of `metrics()` that early stopping and summaries read
    headline: tuple[str, ...] = ()  # the keys of `metrics()` shown per epoch and in tables

    def __init__(self, config: TaskConfig, classes: list[str],
                 thresholds: list[float] | None = None) -> None:
        self.config = config
        self.classes = list(classes)
        self.thresholds = thresholds

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def weight(self) -> float:
        return self.config.weight

    # --- reading the column -------------------------------------------------------
    def raw(self, sample: Sample) -> str | None:
        """The sample's value for this task after keywords and mapping; None if missing."""
        text = (sample.values or {}).get(self.config.source_column)
        text = text.strip() if isinstance(text, str) else None
        if self.config.keywords:
            text = match_keywords(text or "", self.config.keywords) or self.config.default
        if text and self.config.mapping:
            text = mapped_value(text, self.config)
        return text or None

    @classmethod
    @abstractmethod
    def from_data(cls, config: TaskConfig, train: Sequence[Sample], val: Sequence[Sample],
                  source: str) -> Task:
        """Decide the classes from the training photos; refuse unusable data."""

    @abstractmethod
    def encode(self, samples: Sequence[Sample]) -> np.ndarray:
        """Targets as an array (missing values marked, see the kind)."""

    @abstractmethod
    def present(self, targets: np.ndarray) -> np.ndarray:
        """Which rows have a target."""

    @abstractmethod
    def counts(self, targets: np.ndarray) -> dict[str, int]:
        """Photos per class (or carrying each tag)."""

    # --- training -------------------------------------------------------------------
    def prepare(self, train_targets: np.ndarray, train: TrainConfig,  # noqa: B027
                device: torch.device) -> None:
        """Precompute loss constants (class weights) from the training targets; read the
        training settings that concern this kind (balance, label smoothing, monitor)."""

    @abstractmethod
    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss over the rows that have a target (0 when none has)."""

    @abstractmethod
    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, int]:
        """(right answers, answers) in a training batch, for the progress line."""

    @abstractmethod
    def probe(self, features: np.ndarray, targets: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray] | None:
        """(weight, bias) of a head fitted on frozen features, or None to keep it."""

    def sample_weights(self, targets: np.ndarray) -> np.ndarray | None:
        """Per-photo draw weights for a balanced sampler (None: uniform)."""
        return None

    # --- validation -----------------------------------------------------------------
    @abstractmethod
    def val_loss(self, scores: np.ndarray, targets: np.ndarray) -> float:
        ...

    @abstractmethod
    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        ...

    # whether `tune` fits anything (decision thresholds): where it does, the photos it is
    # fitted on should not be the ones the figures are read on
    tunes_thresholds = False

    def tune(self, scores: np.ndarray, targets: np.ndarray) -> None:  # noqa: B027
        """Fit decision thresholds on validation scores (multilabel)."""

    def adopt(self, head: HeadSpec) -> None:  # noqa: B027
        """Take a saved head's decision settings decided in training (multilabel: the
        cap that `max_tags: auto` chose)."""

    def head_spec(self) -> HeadSpec:
        return HeadSpec(self.name, self.kind, list(self.classes), self.thresholds,
                        column=self.config.source_column)

    def report(self) -> dict:
        """How the column became classes (folding, mapping, dropped tags), for metrics.json."""
        return {}


TASK_KINDS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASK_KINDS[cls.kind] = cls
    return cls


def match_keywords(text: str, keywords: dict) -> str | None:
    """The first class whose words occur in `text` (whole words, any case)."""
    lowered = text.lower()
    for label, words in keywords.items():
        for word in [words] if isinstance(words, str) else words:
            if re.search(rf"\b{re.escape(str(word).lower())}\b", lowered):
                return str(label)
    return None


def check_task_configs(configs: Sequence[TaskConfig], columns: Sequence[str] | None,
                       source: str) -> None:
    names = set()
    for index, cfg in enumerate(configs):
        where = f"tasks[{index}]"
        if not cfg.name:
            raise DataError(f"{where}: a task needs a name")
        if cfg.name in names:
            raise DataError(f"{where}: two tasks are named '{cfg.name}'")
        if cfg.name in RESERVED_NAMES:
            raise DataError(f"{where}: '{cfg.name}' is reserved for the model's own outputs "
                            f"({', '.join(RESERVED_NAMES)}); choose another task name")
        names.add(cfg.name)
        if cfg.kind not in TASK_KINDS:
            raise DataError(f"{where} ({cfg.name}): unknown kind '{cfg.kind}'; known kinds: "
                            f"{', '.join(TASK_KINDS)}")
        if columns is not None and cfg.source_column not in columns:
            raise DataError(f"{source}: no column '{cfg.source_column}' (the column of task "
                            f"'{cfg.name}'); columns are: {', '.join(columns)}")
        if cfg.min_count < 1:
            raise DataError(f"{where} ({cfg.name}): min_count must be at least 1")
        if cfg.weight < 0:
            raise DataError(f"{where} ({cfg.name}): weight cannot be negative")
        if cfg.unmapped not in ("keep", "drop"):
            raise DataError(f"{where} ({cfg.name}): unmapped must be keep or drop, got "
                            f"'{cfg.unmapped}'")


def build_tasks(configs: Sequence[TaskConfig], train: Sequence[Sample], val: Sequence[Sample],
                source: str) -> list[Task]:
    check_task_configs(configs, None, source)
    return [TASK_KINDS[cfg.kind].from_data(cfg, train, val, source) for cfg in configs]


def tasks_from_heads(heads: Sequence[HeadSpec], configs: Sequence[TaskConfig] = ()
                     ) -> list[Task]:
    """The tasks of a saved model (to score it on new data), with their training configs
    where the model recorded them (mapping and keywords say how to read the columns)."""
    by_name = {cfg.name: cfg for cfg in configs}
    tasks = []
    for head in heads:
        if head.kind not in TASK_KINDS:
            continue
        cfg = by_name.get(head.name) or TaskConfig(name=head.name, kind=head.kind,
                                                   column=head.column or head.name)
        tasks.append(TASK_KINDS[head.kind](cfg, head.classes, head.thresholds))
        tasks[-1].adopt(head)
    return tasks
