"""Likely mislabels: out-of-fold probabilities of a linear probe, ranked by confident
learning (cleanlab).

A logistic regression on the photos' embedding vectors is the same linear probe
training starts from, and cheap: five folds take seconds on a CPU. Each photo is scored
by a probe that never saw it, so a wrong label cannot vouch for itself. cleanlab's
`find_label_issues` then picks the photos whose given label disagrees with what the
probe confidently predicts, using per-class noise estimates (the confident joint), and
`get_label_quality_scores` (self-confidence: the probability of the given label) ranks
them; multi-label data goes through cleanlab's multi-label counterparts.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)

FOLDS = 5
PROBE_C = 1.0


@dataclass
class LabelIssues:
    """Per analysed photo: out-of-fold probabilities, label quality and whether cleanlab
    flags it. `rows` are the photos' positions in the scan; `classes` the columns."""

    rows: np.ndarray
    classes: list[str]
    probabilities: np.ndarray
    quality: np.ndarray  # 0 (surely wrong) .. 1 (surely right)
    flagged: np.ndarray  # bool
    skipped_classes: list[str]


def _probe(multilabel: bool):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    probe = LogisticRegression(C=PROBE_C, max_iter=500)
    return OneVsRestClassifier(probe) if multilabel else probe


def out_of_fold(vectors: np.ndarray, targets: np.ndarray, multilabel: bool, seed: int = 0
                ) -> np.ndarray:
    """(N, K) probabilities, each row from a probe fitted on the other folds."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

    if multilabel:
        folds = KFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    else:
        smallest = int(np.bincount(targets).min())
        folds = StratifiedKFold(n_splits=max(2, min(FOLDS, smallest)), shuffle=True,
                                random_state=seed)
    with warnings.catch_warnings():  # a tag absent from one fold's training part
        warnings.simplefilter("ignore")
        return cross_val_predict(_probe(multilabel), vectors, targets, cv=folds,
                                 method="predict_proba")


def find_label_issues(vectors: np.ndarray, labels: list[list[str]], classes: list[str],
                      multilabel: bool, rows: np.ndarray, seed: int = 0) -> LabelIssues:
    """Score every photo's label; classes (tags) with fewer than `FOLDS` photos are left
    out of the analysis (a probe cannot learn them out of fold), and so are their photos
    in single-label data."""
    from cleanlab.filter import find_label_issues as cl_issues
    from cleanlab.rank import get_label_quality_scores

    counts = {c: sum(c in ls for ls in labels) for c in classes}
    kept = [c for c in classes if counts[c] >= FOLDS]
    skipped = [c for c in classes if counts[c] < FOLDS]
    if len(kept) < 2:
        raise DataError(f"too few photos to look for mislabels: it needs two classes with "
                        f"at least {FOLDS} photos each (counts: {counts})")
    column = {c: i for i, c in enumerate(kept)}
    if multilabel:
        keep = np.ones(len(labels), dtype=bool)
        target_lists = [[column[t] for t in ls if t in column] for ls in labels]
        targets = np.zeros((len(labels), len(kept)), dtype=np.int64)
        for i, ts in enumerate(target_lists):
            targets[i, ts] = 1
    else:
        keep = np.array([ls[0] in column for ls in labels], dtype=bool)
        targets = np.array([column[ls[0]] for ls, k in zip(labels, keep, strict=True) if k])
    x = vectors[keep]
    probs = out_of_fold(x, targets, multilabel, seed)
    if multilabel:
        from cleanlab.multilabel_classification.filter import (
            find_label_issues as cl_multi_issues,
        )
        from cleanlab.multilabel_classification.rank import (
            get_label_quality_scores as multi_quality,
        )

        quality = multi_quality(target_lists, probs)
        flagged = cl_multi_issues(target_lists, probs, n_jobs=1)
    else:
        quality = get_label_quality_scores(targets, probs, method="self_confidence")
        flagged = cl_issues(targets, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    return LabelIssues(rows=np.asarray(rows)[keep], classes=kept, probabilities=probs,
                       quality=np.asarray(quality, dtype=np.float64),
                       flagged=np.asarray(flagged, dtype=bool), skipped_classes=skipped)
