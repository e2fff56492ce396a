"""`evaluate(model, data)`: score a saved model on any dataset of the same layout."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import TrainConfig
from ..data import DataSpec, PhotoDataset, Preprocess, eval_transform, load_labelled
from ..errors import DataError
from ..inference.predictor import tta_probabilities
from ..models import load_model
from ..precision import resolve_precision
from ..progress import track
from ..training.loop import make_loader, predict_loader, resolve_device
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
    model, info = load_model(model_dir)
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
    precision = resolve_precision(precision, resolve_device(device))
    metrics = evaluate_dataset(model, dataset, info.classes, info.preprocess, precision, device,
                               tta=tta)
    return EvaluationResult(metrics=metrics, model=str(model_dir), data=str(data),
                            skipped=dataset.skipped, unknown_labels=dict(unknown),
                            missing=[str(p) for p in labelled.missing], precision=precision,
                            name=info.name)


def evaluate_dataset(model: torch.nn.Module, dataset: PhotoDataset, classes: list[str],
                     preprocess: Preprocess, precision: str = "auto", device: str = "auto",
                     tta: bool = False, batch_size: int = 64) -> dict:
    """Score a model on a dataset whose labels use the model's class names."""
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    model.to(dev).to(memory_format=torch.channels_last)
    if tta:
        probs, targets = tta_probabilities(model, dataset, preprocess, dev, precision)
    else:
        loader = make_loader(dataset, TrainConfig(num_workers=0), False, 0, batch_size=batch_size)
        probs, targets, _ = predict_loader(model, loader, dev, precision, "evaluate")
    if len(targets) == 0:
        raise DataError("no readable images to evaluate")
    return classification_metrics(targets, probs, classes)
