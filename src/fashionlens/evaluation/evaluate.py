"""`evaluate(model, data)`: score a saved model on any dataset of the same layout."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import DataSpec, PhotoDataset, eval_transform, load_labelled
from ..data.sources import FOLDER_COLUMN, Sample, csv_columns
from ..errors import DataError
from ..inference.backends import Runtime
from ..inference.loading import load_runtime
from ..inference.predictor import tta_outputs
from ..inference.runtime import run_dataset
from ..tasks import Task, TaskConfig, tasks_from_heads
from ..tasks.base import check_task_configs, mapped_value

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
             runtime: str = "auto", task: str | None = None, **columns) -> EvaluationResult:
    """Score `model_dir` on the photos in `data` (folder per class or CSV).

    `splits` keeps only CSV rows whose `split_column` is one of them; `columns` overrides
    image_column, target_column, split_column, image_dir or image_extension. A model with
    several heads reads each head's column (as trained) and is scored per task; `task`
    scores one classification task of it alone against one label per photo (a folder's
    class, or the target column), as a one-task model is: a folder of garment types says
    nothing of season or colour. `runtime` picks what runs the model
    (`inference.loading.load_runtime`).
    """
    runtime = load_runtime(model_dir, runtime, device=device, precision=precision)
    info = runtime.info
    spec = spec_for_model(data, info.config, **columns)
    trained = [TaskConfig(**c) for c in (info.config.get("tasks") or [])
               if isinstance(c, dict)]
    chosen = _chosen_head(info, task) if task else None
    multi = chosen is None and (bool(trained) or not info.single_label)
    columns_there = csv_columns(spec)  # None for a folder (a CSV's header is read once)
    if multi:
        configs = {c.name: c for c in trained}
        tasks = tasks_from_heads(info.scored_heads, list(configs.values()))
        if columns_there is None and any(t.config.source_column != FOLDER_COLUMN
                                         for t in tasks):
            raise DataError(_folder_needs_a_task(spec.path, info))
        check_task_configs([t.config for t in tasks], columns_there or [FOLDER_COLUMN],
                           spec.path)
        labelled = load_labelled(spec, [t.config.source_column for t in tasks])
    else:
        head = chosen or info.scored_heads[0]
        column = spec.target_column if columns_there is not None else FOLDER_COLUMN
        learned = next((c.source_column for c in trained if c.name == head.name), None)
        if chosen and columns.get("target_column") is None and \
                learned in (columns_there or []):
            column = spec.target_column = learned  # the column the task learned from
        tasks = tasks_from_heads([head], [TaskConfig(name=head.name, column=column)])
        labelled = load_labelled(spec)
    samples = labelled.samples
    if splits:
        if not spec.split_column:
            raise DataError("splits were given but no split column; pass split_column")
        samples = [s for s in samples if s.split in splits]
        if not samples:
            raise DataError(f"{labelled.source}: no rows with {spec.split_column} in {splits}")
    unknown: Counter[str] = Counter()
    if not multi:
        known = set(head.classes)
        learned_as = next((c for c in trained if c.name == head.name), None)
        # labels in the words the task learned from (Jeans, Trousers: Pants) are mapped
        # as in training; a label that is already a class stays
        as_class = [s.label if s.label in known or learned_as is None
                    else mapped_value(s.label, learned_as) for s in samples]
        unknown = Counter(s.label for s, c in zip(samples, as_class, strict=True)
                          if c not in known)
        if unknown:
            log.warning("%d photos have labels the model does not know and are not scored: %s",
                        sum(unknown.values()), dict(unknown))
        samples = [_relabelled(s, c, column) for s, c in zip(samples, as_class, strict=True)
                   if c in known]
        if not samples:
            whose = f"this model's task {head.name!r}" if chosen else "this model"
            raise DataError(f"{labelled.source}: none of its labels are classes of {whose} "
                            f"({', '.join(head.classes)})")
    # Read as `predict` reads (draft decode, one resize), one pass, nothing kept in memory.
    dataset = PhotoDataset(samples, eval_transform(info.preprocess),
                           draft_size=info.preprocess.resize_size)
    targets = {t.name: t.encode(dataset.samples) for t in tasks}
    metrics = evaluate_dataset(runtime, dataset, tasks, targets, tta=tta,
                               source=str(labelled.source))
    return EvaluationResult(metrics=metrics, model=str(model_dir), data=str(data),
                            skipped=dataset.skipped, unknown_labels=dict(unknown),
                            missing=[str(p) for p in labelled.missing],
                            precision=runtime.precision, name=info.name)


def _relabelled(sample: Sample, label: str, column: str) -> Sample:
    """The sample with its label mapped to a class (the task reads it from `column`)."""
    if label == sample.label:
        return sample
    return dataclasses.replace(sample, label=label,
                               values={**(sample.values or {}), column: label})


def _class_tasks(info) -> list:
    return [h for h in info.scored_heads if h.kind == "classification"]


def _chosen_head(info, task: str):
    """The classification head named `task`, or a DataError naming those there are."""
    heads = _class_tasks(info)
    for head in heads:
        if head.name == task:
            return head
    names = ", ".join(h.name for h in heads) or "none"
    raise DataError(f"--task {task}: not a classification task of {info.name or 'this model'} "
                    f"(its classification tasks: {names})")


def _folder_needs_a_task(path: str, info) -> str:
    """Why a folder of photos per class cannot score a model of several tasks, and which
    task to name: the one whose classes name the most sub-folders."""
    root = Path(path).expanduser()
    folders = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    heads = _class_tasks(info)
    best = max(heads, key=lambda h: len(folders & set(h.classes)), default=None)
    hint = (f"; its folders are classes of task {best.name!r} ({len(folders & set(best.classes))} "
            f"of {len(folders)}): --task {best.name}"
            if best is not None and folders & set(best.classes) else "")
    return (f"{path}: a folder of photos per class gives one label per photo, and "
            f"{info.name or 'the model'} answers {len(info.scored_heads)} tasks; name the one "
            f"its folders are classes of with --task ("
            f"{', '.join(h.name for h in heads)}){hint}")


def evaluate_dataset(runtime: Runtime, dataset: PhotoDataset, tasks: list[Task],
                     targets: dict[str, np.ndarray], tta: bool = False, tune: bool = False,
                     batch_size: int = 64, source: str = "") -> dict:
    """Score a model (behind its runtime) per task on a dataset and its encoded targets.

    `tune`: fit each task's decision thresholds on these photos first (multilabel; the
    training run's last step). One task gives today's flat figures; several give
    `{"tasks": {name: figures}, "summary": {...}}`.
    """
    names = [t.name for t in tasks]
    if tta:
        outputs, rows = tta_outputs(runtime, dataset, names)
    else:
        outputs, rows = run_dataset(runtime, dataset, names, batch_size=batch_size,
                                    description="evaluate")
    if len(rows) == 0:
        raise DataError(f"{source or 'evaluate'}: none of the photos could be read")
    per_task = score_tasks(tasks, outputs, rows, targets, tune=tune)
    if len(tasks) == 1:
        return per_task[tasks[0].name]
    return {"tasks": per_task, "summary": summarise(tasks, per_task)}


def score_tasks(tasks: list[Task], outputs: dict[str, np.ndarray], rows: np.ndarray,
                targets: dict[str, np.ndarray], tune: bool = False) -> dict[str, dict]:
    """Each task's figures from the runtime's outputs for dataset rows `rows` (`tune`:
    fit its decision thresholds on them first)."""
    per_task = {}
    for task in tasks:
        scores, wanted = outputs[task.name], targets[task.name][rows]
        if tune:
            task.tune(scores, wanted)
        per_task[task.name] = task.metrics(scores, wanted)
    return per_task


def summarise(tasks: list[Task], per_task: dict[str, dict]) -> dict:
    """Each task's headline figures side by side, and their mean monitored score."""
    summary: dict = {t.name: {k: per_task[t.name].get(k) for k in t.headline} for t in tasks}
    summary["score"] = float(np.mean([per_task[t.name][t.monitor] for t in tasks]))
    summary["num_images"] = max(per_task[t.name].get("num_images", 0) for t in tasks)
    return summary
