"""`train(config)`: from a run config to a model folder, metrics and figures."""

from __future__ import annotations

import itertools
import json
import logging
import random
import resource
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig
from ..data import (
    DataSpec,
    LabelledSet,
    PhotoDataset,
    eval_transform,
    load_labelled,
    split_train_val,
    train_transform,
)
from ..errors import DataError
from ..evaluation.evaluate import evaluate_dataset
from ..evaluation.plots import plot_confusion, plot_curves
from ..inference.runtime import TorchRuntime
from ..models import ModelInfo, architecture_preprocess, create_model, save_model
from ..progress import track
from .loop import FitResult, fit

log = logging.getLogger(__name__)


# What a run writes into its folder; `output.exist_ok` clears these (and only these) first.
RUN_OUTPUTS = ("model", "metrics.json", "config.yaml", "curves.png", "confusion.png",
               "skipped.txt", "validation.txt")


@dataclass
class RunResult:
    output_dir: Path
    model_dir: Path
    metrics: dict
    fit: FitResult
    skipped: dict[str, str]
    note: str = ""  # a plain-words remark on the outcome (e.g. fine-tuning did not help)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _output_dir(config: RunConfig) -> Path:
    """The run's folder: output.dir/output.name, or name-2, name-3, ... when that is taken
    (the YOLO/Lightning convention), or the named folder itself with `output.exist_ok`."""
    root = Path(config.output.dir).expanduser()
    name = config.output.name or datetime.now().strftime("run-%Y%m%d-%H%M%S")
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: not a folder (output.dir)")
    root.mkdir(parents=True, exist_ok=True)
    if config.output.exist_ok:
        out = root / name
        out.mkdir(exist_ok=True)
        log.info("run folder: %s (reused: --exist-ok)", out)
        for old in RUN_OUTPUTS:  # no stale figure or skipped.txt from the previous run
            target = out / old
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
        return out
    for number in itertools.count(1):
        out = root / (name if number == 1 else f"{name}-{number}")
        try:
            out.mkdir()  # atomic: two runs started together never share a folder
        except FileExistsError:
            continue
        if number > 1:
            log.info("run folder: %s (%s is taken; --exist-ok reuses it)", out, root / name)
        else:
            log.info("run folder: %s", out)
        return out
    raise AssertionError("unreachable")


def _check_classes(train: LabelledSet) -> None:
    if len(train.classes) < 2:
        raise DataError(f"{train.source}: need at least two classes to train, found "
                        f"{train.classes or 'none'}")


def prepare_datasets(spec: DataSpec, config: RunConfig, preprocess, seed: int):
    data = load_labelled(spec)
    if data.missing:
        log.warning("%d images listed in %s are missing, e.g. %s", len(data.missing),
                    data.source, ", ".join(str(p) for p in data.missing[:3]))
    train, val = split_train_val(data, spec, seed)
    _check_classes(train)
    aug_size = config.train.train_size or preprocess.size
    cache = int(round(max(preprocess.size, aug_size) / preprocess.crop_pct * 1.15)) \
        if config.train.cache_images else None
    index = train.class_to_index
    train_ds = PhotoDataset(train.samples, index, train_transform(preprocess, config.augment,
                                                                  aug_size), cache)
    val_ds = PhotoDataset(val.samples, index, eval_transform(preprocess), cache)
    if config.train.cache_images:
        train_ds.preload(lambda it: track(it, "reading train photos", len(train_ds)))
        val_ds.preload(lambda it: track(it, "reading validation photos", len(val_ds)))
        if not len(train_ds):
            raise DataError(f"no readable photos in {data.source}: all {len(train.samples)} "
                            f"training photos failed to open, e.g. "
                            f"{_first_reasons(train_ds.skipped)}")
    return data, train, val, train_ds, val_ds


def _first_reasons(skipped: dict[str, str], count: int = 2) -> str:
    return "; ".join(f"{path} ({why})" for path, why in list(skipped.items())[:count])


def fine_tuning_note(fit: FitResult, monitor: str, num_val: int) -> str:
    """Say plainly when fine-tuning did not beat its linear-probe start, and what was kept."""
    if fit.fine_tuning_helped is not False:
        return ""
    tuned = [row["val_" + monitor] for row in fit.history
             if row.get("epoch", 0) > 0 and "val_" + monitor in row]
    best_tuned = f", at best {max(tuned):.3f} after fine-tuning" if tuned else ""
    small = (f" {num_val} validation photos are too few to tell models apart reliably."
             if num_val < 50 else "")
    return (f"fine-tuning did not beat the linear probe: validation {monitor.replace('_', '-')} "
            f"{fit.probe_score:.3f} after the probe (epoch 0){best_tuned}; the linear-probe "
            f"weights (epoch 0) were kept.{small}")


def train(config: RunConfig) -> RunResult:
    """Fine-tune a pretrained backbone on the configured photos and save everything."""
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.seed)
    started = time.perf_counter()

    model_cfg = config.model
    preprocess = architecture_preprocess(model_cfg.name, model_cfg.image_size)
    data, train_set, val_set, train_ds, val_ds = prepare_datasets(config.data, config,
                                                                   preprocess, config.seed)
    # The folder is claimed once the data is known to be usable: a typo in a path leaves
    # no empty run folder behind.
    out = _output_dir(config)
    config.save(out / "config.yaml")
    if len(val_ds):  # the photos this run never trains on: `predict runs/NAME/validation.txt`
        (out / "validation.txt").write_text(
            "".join(f"{Path(s.path).resolve()}\n" for s in val_ds.samples))
    classes = train_set.classes
    log.info("training on %d photos, validating on %d, %d classes", len(train_ds), len(val_ds),
             len(classes))
    model = create_model(model_cfg.name, num_classes=len(classes),
                         pretrained=model_cfg.pretrained, drop_rate=model_cfg.drop_rate,
                         drop_path_rate=model_cfg.drop_path_rate)
    probe_ds = train_ds.with_transform(eval_transform(preprocess))  # un-augmented view

    seed_everything(config.seed)
    result = fit(model, train_ds, val_ds, probe_ds, config.train, config.seed, classes)
    # Photos found unreadable during training (without preloading) are listed too.
    skipped = {**train_ds.skipped, **val_ds.skipped}

    metrics: dict = {}
    if len(val_ds):
        runtime = TorchRuntime(model, preprocess, device=config.train.device,
                               precision=result.precision,
                               info=ModelInfo(architecture=model_cfg.name, classes=classes,
                                              preprocess=preprocess))
        metrics = evaluate_dataset(runtime, val_ds, tta=config.train.tta)
    note = fine_tuning_note(result, config.train.monitor, len(val_ds))
    summary = {
        "metrics": metrics,
        "best_epoch": result.best_epoch,
        "kept": "linear probe (epoch 0)" if result.best_epoch == 0 and result.probe_score
        is not None else f"epoch {result.best_epoch}",
        "fine_tuning_improved": result.fine_tuning_helped,
        "note": note,
        "precision": result.precision,
        "stopped_early": result.stopped_early,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "num_train_images": len(train_ds),
        "num_val_images": len(val_ds),
        "classes": classes,
        "class_counts": {c: n for c, n in sorted(train_set.counts().items())},
        "skipped_images": skipped,
        "missing_images": [str(p) for p in data.missing],
        "history": result.history,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    if skipped or data.missing:
        lines = [f"{p}\t{why}" for p, why in skipped.items()]
        lines += [f"{p}\tfile not found" for p in data.missing]
        (out / "skipped.txt").write_text("\n".join(lines) + "\n")
    plot_curves(result.history, out / "curves.png", kept_epoch=result.best_epoch)
    if metrics:
        plot_confusion(metrics["confusion_matrix"], classes, out / "confusion.png",
                       title=f"Validation (accuracy {metrics['accuracy']:.3f})")
    info = ModelInfo(architecture=model_cfg.name, classes=classes, preprocess=preprocess,
                     config=config.to_dict(), name=out.name,
                     metrics={k: v for k, v in metrics.items() if k != "confusion_matrix"})
    model_dir = save_model(model.float().cpu(), info, out / "model",
                           half=config.output.half_weights)
    return RunResult(output_dir=out, model_dir=model_dir, metrics=metrics, fit=result,
                     skipped=skipped, note=note)

