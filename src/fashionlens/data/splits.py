"""Train/validation splits that respect contributors.

Photos by one contributor share a room, a light and a phone; if they straddle train
and validation the score flatters the model. `group_column` keeps each group on one side.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

from ..errors import DataError
from .sources import DataSpec, LabelledSet, Sample

log = logging.getLogger(__name__)


def _random_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    counts = Counter(s.label for s in samples)
    # A class with one photo can only be learned, not validated: it stays in training.
    lonely = [i for i, s in enumerate(samples) if counts[s.label] == 1]
    rest = np.array([i for i, s in enumerate(samples) if counts[s.label] > 1], dtype=int)
    labels = [samples[i].label for i in rest]
    n_classes = len({*labels})
    if len(rest) < 2:
        return sorted(range(len(samples))), []
    n_val = round(fraction * len(rest))
    if n_val >= n_classes and len(rest) - n_val >= n_classes:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        train_pos, val_pos = next(splitter.split(rest, labels))
    else:
        perm = np.random.default_rng(seed).permutation(len(rest))
        n_val = max(1, round(fraction * len(rest)))
        val_pos, train_pos = perm[:n_val], perm[n_val:]
    return sorted(rest[train_pos].tolist() + lonely), sorted(rest[val_pos].tolist())


def _group_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    groups = [s.group or f"__row{i}" for i, s in enumerate(samples)]
    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    train, val = next(splitter.split(np.arange(len(samples)), groups=groups))
    # A class with one photo must stay in training (in validation it would be dropped and
    # the class lost): its whole group moves to training, so groups still never straddle.
    counts = Counter(s.label for s in samples)
    pinned = {groups[i] for i, s in enumerate(samples) if counts[s.label] == 1}
    moved = [int(i) for i in val if groups[i] in pinned]
    val = [int(i) for i in val if groups[i] not in pinned]
    return sorted(train.tolist() + moved), sorted(val)


def split_train_val(data: LabelledSet, spec: DataSpec, seed: int, drop_unseen: bool = True
                    ) -> tuple[LabelledSet, LabelledSet]:
    """Use the CSV's split column when it has one, else make a (grouped) split.

    `drop_unseen=False` keeps validation photos whose `label` training never saw (a
    multi-task run: its tasks decide what to score, and the photo still counts for the
    other tasks)."""
    samples = data.samples
    if spec.split_column:
        train = [s for s in samples if s.split in spec.train_splits]
        val = [s for s in samples if s.split in spec.val_splits]
        if not train:
            found = sorted({str(s.split) for s in samples})
            raise DataError(
                f"{data.source}: no rows with {spec.split_column} in {spec.train_splits}; "
                f"values found: {', '.join(found)}"
            )
        if val:
            classes = sorted({s.label for s in train})
            unseen = sorted({s.label for s in val} - set(classes)) if drop_unseen else []
            if unseen:
                log.warning("validation labels absent from training are dropped: %s", unseen)
                val = [s for s in val if s.label in classes]
            return (LabelledSet(train, classes, data.source),
                    LabelledSet(val, classes, data.source))
        samples = train
    if not 0.0 < spec.val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be between 0 and 1, got {spec.val_fraction}")
    if len(samples) < 2:
        raise DataError(f"{data.source}: need at least 2 images to make a validation split")
    if spec.group_column:
        train_idx, val_idx = _group_split(samples, spec.val_fraction, seed)
    else:
        train_idx, val_idx = _random_split(samples, spec.val_fraction, seed)
    train = [samples[i] for i in train_idx]
    val = [samples[i] for i in val_idx]
    classes = sorted({s.label for s in train})
    lonely = sorted(c for c, n in Counter(s.label for s in samples).items() if n == 1)
    if lonely:
        log.warning("classes with a single image (kept for training, cannot be validated): %s",
                    ", ".join(lonely))
    if drop_unseen:
        val = [s for s in val if s.label in set(classes)]
    return LabelledSet(train, classes, data.source), LabelledSet(val, classes, data.source)
