"""`evaluate(model, data)`: score a saved model on any dataset of the same layout."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from ..data import DataSpec, PhotoDataset, eval_transform, load_labelled
from ..data.dataset import collate_skipping
from ..errors import DataError
from ..inference.predictor import tta_probabilities
from ..inference.runtime import PROBABILITIES, TorchRuntime
from ..progress import track
from .metrics import classification_metrics

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    metrics: dict
    model: str
    data: str
    skipped: dict[str, str] = field(default_factory=dict)
    unknown_labels: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    precision: str = ""  # what the forward passes ran in
    name: str = ""  # the model's name (model.json), for titles

    def to_dict(self) -> dict:
        return {"model": self.model, "data": self.data, "precision": self.precision,
                **self.metrics,
                "skipped_images": self.skipped, "unknown_labels": self.unknown_labels,
                "missing_images": self.missing}


def spec_for_model(data: str | Path, model_config: dict, **overrides) -> DataSpec:
    """Read the new data with the column names the model was trained with, unless told otherwise."""
    reused = ("image_column", "target_column", "image_dir", "image_extension", "exclude_labels")
    trained = {k: v for k, v in (model_config.get("data") or {}).items() if k in reused}
    spec = DataSpec(**trained)
    spec.path = str(data)
    for key, value in overrides.items():
        if value is not None:
            setattr(spec, key, value)
    return spec


def evaluate(model_dir: str | Path, data: str | Path, *, splits: list[str] | None = None,
             tta: bool = False, precision: str = "auto", device: str = "cpu",
             **columns) -> EvaluationResult:
    """Score `model_dir` on the photos in `data` (folder per class or CSV).

    `splits` keeps only CSV rows whose `split_column` is one of them; `columns` overrides
    image_column, target_column, split_column, image_dir or image_extension.
    """
    runtime = TorchRuntime.load(model_dir, device=device, precision=precision)
    info = runtime.info
    spec = spec_for_model(data, info.config, **columns)
    labelled = load_labelled(spec)
    samples = labelled.samples
    if splits:
        if not spec.split_column:
            raise DataError("splits were given but no split column; pass split_column")
        samples = [s for s in samples if s.split in splits]
        if not samples:
            raise DataError(f"{labelled.source}: no rows with {spec.split_column} in {splits}")
    known = set(info.classes)
    unknown = Counter(s.label for s in samples if s.label not in known)
    if unknown:
        log.warning("%d photos have labels the model does not know and are not scored: %s",
                    sum(unknown.values()), dict(unknown))
    samples = [s for s in samples if s.label in known]
    if not samples:
        raise DataError(f"{labelled.source}: none of its labels are classes of this model "
                        f"({', '.join(info.classes)})")
    index = {c: i for i, c in enumerate(info.classes)}
    dataset = PhotoDataset(samples, index, eval_transform(info.preprocess),
                           cache_short_side=info.preprocess.resize_size)
    dataset.preload(lambda it: track(it, "reading photos", len(samples)))
    if not len(dataset):
        raise DataError(f"{labelled.source}: none of the photos could be read")
    metrics = evaluate_dataset(runtime, dataset, tta=tta)
    return EvaluationResult(metrics=metrics, model=str(model_dir), data=str(data),
                            skipped=dataset.skipped, unknown_labels=dict(unknown),
                            missing=[str(p) for p in labelled.missing],
                            precision=runtime.precision, name=info.name)


def evaluate_dataset(runtime: TorchRuntime, dataset: PhotoDataset, tta: bool = False,
                     batch_size: int = 64) -> dict:
    """Score a model (behind its runtime) on a dataset labelled with its class names."""
    if tta:
        probs, targets = tta_probabilities(runtime, dataset)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0,
                            collate_fn=collate_skipping)
        outs, labels = [], []
        for batch, errors in track(loader, "evaluate"):
            dataset.record_skipped(errors)
            if batch is None:
                continue
            images, batch_labels, _ = batch
            outs.append(runtime.run(images, (PROBABILITIES,))[PROBABILITIES])
            labels.append(batch_labels.numpy())
        probs = np.concatenate(outs) if outs else np.zeros((0, len(runtime.classes)))
        targets = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    if len(targets) == 0:
        raise DataError("no readable images to evaluate")
    return classification_metrics(targets, probs, runtime.classes)
