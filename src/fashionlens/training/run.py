"""`train(config)`: from a run config to a model folder, metrics and figures."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import random
import resource
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from ..config import RunConfig, apply_fields
from ..data import (
    LabelledSet,
    PhotoDataset,
    eval_transform,
    split_train_val,
    train_transform,
)
from ..data.dataset import SourcedDataset
from ..data.sources import FOLDER_COLUMN, Sample, csv_columns
from ..data.transforms import Preprocess, keep_colour
from ..errors import DataError
from ..evaluation.evaluate import evaluate_dataset
from ..evaluation.plots import plot_confusion, plot_curves
from ..inference.runtime import TorchRuntime
from ..models import ModelInfo, architecture_preprocess, create_model, save_model
from ..models.card import CARD_FILE, write_model_card
from ..models.heads import attach_heads
from ..models.info import WEIGHTS_FILE
from ..models.registry import load_further_heads
from ..models.resolve import META_FILE
from ..progress import track
from ..tasks import Task, build_tasks
from ..tasks.base import check_task_configs
from . import distributed
from .distill import Teacher, taught_rows
from .inputs import (  # noqa: F401  (resume_config: imported from here before inputs.py)
    CHECKPOINT,
    read_run_data,
    read_sources,
    resume_config,
    task_configs,
)
from .loop import FitResult, fit, load_checkpoint

log = logging.getLogger(__name__)


# What a run writes into its folder; `output.exist_ok` clears these (and only these) first.
# In model/ only the files a run writes go (MODEL_OUTPUTS): anything else there is the
# user's (weights of their own, notes, an export) and stays.
RUN_OUTPUTS = ("metrics.json", "config.yaml", "curves.png", "confusion.png",
               "skipped.txt", "validation.txt", "confusion-*.png", CHECKPOINT)
MODEL_OUTPUTS = (WEIGHTS_FILE, META_FILE, CARD_FILE)


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


def _output_dir(config: RunConfig) -> tuple[Path, bool]:
    """The run's folder: output.dir/output.name, or name-2, name-3, ... when that is taken
    (the YOLO/Lightning convention), or the named folder itself with `output.exist_ok`.
    Also whether this call created it (a failed run removes only what it created)."""
    root = Path(config.output.dir).expanduser()
    name = config.output.name or datetime.now().strftime("run-%Y%m%d-%H%M%S")
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: not a folder (output.dir)")
    try:
        root.mkdir(parents=True, exist_ok=True)
        if config.output.exist_ok:
            out = root / name
            new = not out.exists()
            out.mkdir(exist_ok=True)
            log.info("run folder: %s (reused: --exist-ok)", out)
            _clear_run_outputs(out)
            return out, new
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
            return out, True
    except OSError as exc:
        raise DataError(f"{root}: cannot create the run folder there (output.dir): "
                        f"{exc.strerror or exc}") from None
    raise AssertionError("unreachable")


def _clear_run_outputs(out: Path) -> None:
    """Remove what an earlier run wrote into `out` (no stale figure or skipped.txt), and
    nothing else: files a run does not write are the user's."""
    for pattern in RUN_OUTPUTS:
        for target in out.glob(pattern):
            if target.is_file() or target.is_symlink():
                target.unlink()
    model_dir = out / "model"
    if model_dir.is_dir() and not model_dir.is_symlink():
        for name in MODEL_OUTPUTS:
            target = model_dir / name
            if target.is_file() or target.is_symlink():
                target.unlink()
        kept = sorted(p.name for p in model_dir.iterdir())
        if kept:
            log.info("kept in %s (not written by a run): %s", model_dir, ", ".join(kept))
        else:
            model_dir.rmdir()


def _check_classes(train: LabelledSet) -> None:
    if len(train.classes) < 2:
        raise DataError(f"{train.source}: need at least two classes to train, found "
                        f"{train.classes or 'none'}")


@dataclass
class Prepared:
    """The data of a run, read and checked: splits, tasks, datasets and their targets."""

    data: LabelledSet
    train: LabelledSet
    val: LabelledSet
    tasks: list[Task]
    train_ds: PhotoDataset
    val_ds: PhotoDataset
    train_targets: dict[str, np.ndarray]
    val_targets: dict[str, np.ndarray]


def run_preprocess(config: RunConfig) -> Preprocess:
    """The backbone's input pipeline with the run's size and fit (crop / whole photo)."""
    model_cfg = config.model
    preprocess = architecture_preprocess(model_cfg.name, model_cfg.image_size)
    if model_cfg.fit == "crop":
        return preprocess
    return dataclasses.replace(preprocess, fit=model_cfg.fit,
                               height=model_cfg.height or preprocess.size,
                               width=model_cfg.width or preprocess.size,
                               canvases=tuple(tuple(c) for c in model_cfg.canvases))


# Preloaded photos are kept a little larger than the training input, so that the random
# crops still have detail to resample from.
CACHE_MARGIN = 1.15


def _whole_photo_cache(*shapes: tuple[int, int]) -> int:
    """The short side photos are cached at for a whole-photo fit of these shapes."""
    return int(round(max(max(shape) for shape in shapes) * CACHE_MARGIN))


def prepare_datasets(config: RunConfig, preprocess: Preprocess, seed: int) -> Prepared:
    if config.sources:
        return prepare_sources(config, preprocess, seed)
    spec = config.data
    configs = task_configs(config)
    multi = bool(config.tasks)
    if multi:
        check_task_configs(configs, csv_columns(spec) or [FOLDER_COLUMN], spec.path)
    data = read_run_data(config)
    if data.missing:
        log.warning("%d images listed in %s are missing, e.g. %s", len(data.missing),
                    data.source, ", ".join(str(p) for p in data.missing[:3]))
    train, val = split_train_val(data, spec, seed, drop_unseen=not multi)
    if not multi:
        _check_classes(train)
    tasks = build_tasks(configs, train.samples, val.samples, data.source)
    augment = config.augment
    if any(c.colour for c in configs):
        augment = keep_colour(augment)
        log.info("a colour task (%s): saturation, hue and grayscale augmentation are off",
                 ", ".join(c.name for c in configs if c.colour))
    aug_size = config.train.train_size or preprocess.size
    if preprocess.fit == "crop":
        cache = int(round(max(preprocess.size, aug_size) / preprocess.crop_pct * CACHE_MARGIN))
    else:
        cache = _whole_photo_cache(*preprocess.shapes)
    cache = cache if config.train.cache_images else None
    train_ds = PhotoDataset(train.samples, train_transform(preprocess, augment, aug_size), cache)
    val_ds = PhotoDataset(val.samples, eval_transform(preprocess), cache)
    if config.train.cache_images:
        train_ds.preload(lambda it: track(it, "reading train photos", len(train_ds)))
        val_ds.preload(lambda it: track(it, "reading validation photos", len(val_ds)))
        if not len(train_ds):
            raise DataError(f"no readable photos in {data.source}: all {len(train.samples)} "
                            f"training photos failed to open, e.g. "
                            f"{_first_reasons(train_ds.skipped)}")
    # Encoded after preloading: unreadable photos have left the datasets by then.
    return Prepared(data, train, val, tasks, train_ds, val_ds,
                    {t.name: t.encode(train_ds.samples) for t in tasks},
                    {t.name: t.encode(val_ds.samples) for t in tasks})


def prepare_sources(config: RunConfig, preprocess: Preprocess, seed: int) -> Prepared:
    """A joint run's data: each source split as its own config says, trained at its own
    size and augmentation, validated all together through the model's one preprocess
    (canvases included)."""
    configs = task_configs(config)
    read = read_sources(config)
    trains: list[list[Sample]] = []
    vals: list[list[Sample]] = []
    for source, data in read:
        train, val = split_train_val(data, source.data, seed, drop_unseen=False)
        val_samples = val.samples
        if source.val_limit is not None and len(val_samples) > source.val_limit:
            rows = np.sort(np.random.default_rng(seed).choice(
                len(val_samples), source.val_limit, replace=False))
            val_samples = [val_samples[i] for i in rows]
        trains.append(train.samples)
        vals.append(val_samples)
        log.info("source %s: %d training photos, %d validation photos", source.name,
                 len(train.samples), len(val_samples))
    every_train = [s for part in trains for s in part]
    every_val = [s for part in vals for s in part]
    names = ", ".join(source.name or source.data.path for source, _ in read)
    tasks = build_tasks(configs, every_train, every_val, names)
    colour = any(c.colour for c in configs)
    parts = []
    for index, ((source, _), samples) in enumerate(zip(read, trains, strict=True)):
        augment = dataclasses.replace(config.augment)
        apply_fields(augment, source.augment, f"sources[{index}].augment")
        if colour:
            augment = keep_colour(augment)
        shape = (source.height or preprocess.shape[0], source.width or preprocess.shape[1])
        pre = dataclasses.replace(preprocess, fit="letterbox" if preprocess.fit == "crop"
                                  else preprocess.fit, height=shape[0], width=shape[1])
        cache = _whole_photo_cache(shape) if config.train.cache_images else None
        parts.append(PhotoDataset(samples, train_transform(pre, augment), cache))
    train_ds = SourcedDataset(parts, [source.name for source, _ in read],
                              [source.draws for source, _ in read])
    cache = _whole_photo_cache(*preprocess.shapes) if config.train.cache_images else None
    val_ds = PhotoDataset(every_val, eval_transform(preprocess), cache)
    if config.train.cache_images:
        train_ds.preload(lambda it: track(it, "reading train photos", len(train_ds)))
        val_ds.preload(lambda it: track(it, "reading validation photos", len(val_ds)))
    data = LabelledSet(every_train + every_val, [], names,
                       [p for _, d in read for p in d.missing])
    return Prepared(data, LabelledSet(every_train, [], names), LabelledSet(every_val, [], names),
                    tasks, train_ds, val_ds,
                    {t.name: t.encode(train_ds.samples) for t in tasks},
                    {t.name: t.encode(val_ds.samples) for t in tasks})


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
    kept = ("the linear-probe weights (epoch 0) were kept" if fit.kept_probe else
            f"the last epoch's weights (epoch {fit.kept_epoch}) were kept, as train.keep "
            f"asks")
    return (f"fine-tuning did not beat the linear probe: validation {monitor.replace('_', '-')} "
            f"{fit.probe_score:.3f} after the probe (epoch 0){best_tuned}; {kept}.{small}")


def train(config: RunConfig, resume: str | Path | None = None) -> RunResult:
    """Fine-tune a pretrained backbone on the configured photos and save everything.

    `resume`: an interrupted run's folder; training continues from its last epoch (the
    config is the run's own: `resume_config`).

    Started by torchrun, each process runs this; they train together (`distributed`) and
    the main process alone writes the run folder. The others return a RunResult without
    metrics."""
    with distributed.session(config.train.device):
        return _train(config, resume)


def _train(config: RunConfig, resume: str | Path | None) -> RunResult:
    ctx = distributed.current()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.seed)
    started = time.perf_counter()

    preprocess = run_preprocess(config)
    prepared = prepare_datasets(config, preprocess, config.seed)
    state = None
    if resume is not None:
        out = Path(resume).expanduser()
        # Read by the main process and sent to the others: other machines need no copy.
        state = distributed.from_main(lambda: load_checkpoint(out / CHECKPOINT))
        return _train_in(config, out, state, prepared, preprocess, started, ctx)
    # The folder is claimed once the data is known to be usable: a typo in a path
    # leaves no empty run folder behind; a run that fails before its first checkpoint
    # removes what it wrote.
    out, new = distributed.from_main(lambda: _claim_output_dir(config))
    try:
        return _train_in(config, out, state, prepared, preprocess, started, ctx)
    except BaseException:
        if ctx.main:
            _remove_failed_run(out, new)
            if (out / CHECKPOINT).exists():
                log.warning("the run stopped after a finished epoch; continue it with: "
                            "fashionlens train --resume %s", out)
        raise


def _train_in(config: RunConfig, out: Path, state: dict | None, prepared: Prepared,
              preprocess: Preprocess, started: float, ctx) -> RunResult:
    model_cfg = config.model
    train_ds, val_ds, tasks = prepared.train_ds, prepared.val_ds, prepared.tasks
    if len(val_ds) and ctx.main:  # never trained on: `predict runs/NAME/validation.txt`
        (out / "validation.txt").write_text(
            "".join(f"{Path(s.path).resolve()}\n" for s in val_ds.samples))
    log.info("training on %d photos, validating on %d; %s", len(train_ds), len(val_ds),
             ", ".join(f"{t.name} ({len(t.classes)} {t.kind})" for t in tasks))
    heads = [t.head_spec() for t in tasks]
    model = create_model(model_cfg.name, num_classes=len(heads[0].classes),
                         pretrained=model_cfg.pretrained, drop_rate=model_cfg.drop_rate,
                         drop_path_rate=model_cfg.drop_path_rate)
    attach_heads(model, heads)
    went_on = load_further_heads(model, model_cfg.pretrained)
    if went_on:
        log.info("heads that start from %s's trained weights: %s", model_cfg.pretrained,
                 ", ".join(went_on))
    probe_ds = train_ds.with_transform(eval_transform(preprocess))  # un-augmented view

    teacher = None
    if config.teacher.model:
        teacher = Teacher(config.teacher, tasks, preprocess,
                          taught_rows(train_ds, config.teacher.sources),
                          device=ctx.device if ctx.active
                          else distributed.available_device(config.train.device),
                          precision=config.train.precision)
    seed_everything(config.seed)
    result = fit(model, tasks, preprocess, train_ds, prepared.train_targets, val_ds,
                 prepared.val_targets, probe_ds, config.train, config.seed,
                 checkpoint=out / CHECKPOINT, resume=state, teacher=teacher)
    if not ctx.main:  # the main process evaluates and writes the run's files
        return RunResult(output_dir=out, model_dir=out / "model", metrics={}, fit=result,
                         skipped={})
    # Photos found unreadable during training (without preloading) are listed too.
    skipped = {**train_ds.skipped, **val_ds.skipped}

    metrics: dict = {}
    if len(val_ds):
        runtime = TorchRuntime(model, preprocess,
                               device=ctx.device if ctx.active
                          else distributed.available_device(config.train.device),
                               precision=result.precision,
                               info=ModelInfo(architecture=model_cfg.name, classes=[],
                                              preprocess=preprocess, heads=heads))
        # Epochs were scored on the cached (shrunk) photos; the run's figures and tuned
        # thresholds come from the photos as `predict` and `evaluate` read them.
        exact = val_ds.read_as_predict(preprocess.resize_size)
        metrics = evaluate_dataset(runtime, exact, tasks, prepared.val_targets,
                                   tta=config.train.tta, tune=True)
        skipped.update(exact.skipped)
    heads = [t.head_spec() for t in tasks]  # with the thresholds just tuned (multilabel)
    # The figure the best epoch was chosen by: one task's monitor, or the tasks' mean.
    note = fine_tuning_note(result, result.monitor.removeprefix("val_"), len(val_ds))
    summary = {
        "metrics": metrics,
        "best_epoch": result.best_epoch,
        "kept": result.kept,
        "fine_tuning_improved": result.fine_tuning_helped,
        "note": note,
        "precision": result.precision,
        "stopped_early": result.stopped_early,
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "num_train_images": len(train_ds),
        "num_val_images": len(val_ds),
        "classes": tasks[0].classes,
        "class_counts": tasks[0].counts(prepared.train_targets[tasks[0].name]),
        "tasks": {t.name: {**t.report(),
                           "class_counts": t.counts(prepared.train_targets[t.name])}
                  for t in tasks},
        "skipped_images": skipped,
        "missing_images": [str(p) for p in prepared.data.missing],
        "history": result.history,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    if skipped or prepared.data.missing:
        lines = [f"{p}\t{why}" for p, why in skipped.items()]
        lines += [f"{p}\tfile not found" for p in prepared.data.missing]
        (out / "skipped.txt").write_text("\n".join(lines) + "\n")
    plot_curves(result.history, out / "curves.png", kept_epoch=result.kept_epoch)
    for task, task_metrics in _per_task(metrics, tasks).items():
        if "confusion_matrix" in task_metrics:
            name = "confusion.png" if len(tasks) == 1 else f"confusion-{task}.png"
            plot_confusion(task_metrics["confusion_matrix"], task_metrics["classes"],
                           out / name, title=f"{task if len(tasks) > 1 else 'Validation'} "
                                             f"(accuracy {task_metrics['accuracy']:.3f})")
    info = ModelInfo(architecture=model_cfg.name, classes=[], preprocess=preprocess,
                     config=config.to_dict(), name=out.name, heads=heads,
                     metrics=_slim(metrics))
    model_dir = save_model(model.float().cpu(), info, out / "model",
                           half=config.output.half_weights)
    write_model_card(model_dir, info, summary)
    (out / CHECKPOINT).unlink(missing_ok=True)
    return RunResult(output_dir=out, model_dir=model_dir, metrics=metrics, fit=result,
                     skipped=skipped, note=note)


def _claim_output_dir(config: RunConfig) -> tuple[Path, bool]:
    out, new = _output_dir(config)
    # The run's own config, with its data path absolute: `--resume` and repeating the run
    # read it from the run folder (a relative path would mean one inside that folder).
    saved = dataclasses.replace(config, data=dataclasses.replace(
        config.data, path=str(Path(config.data.path).expanduser().resolve())
        if config.data.path else ""), sources=[
            dataclasses.replace(source, data=dataclasses.replace(
                source.data, path=str(Path(source.data.path).expanduser().resolve())))
            for source in config.sources])
    saved.save(out / "config.yaml")
    return out, new


def _remove_failed_run(out: Path, new: bool) -> None:
    """A run that failed (or was stopped) before its first checkpoint leaves nothing to
    resume: remove the files it wrote, and its folder when it created it and nothing else
    is there (the next run would otherwise be NAME-2)."""
    if (out / CHECKPOINT).exists():
        return
    for name in ("config.yaml", "validation.txt"):
        (out / name).unlink(missing_ok=True)
    if new:
        try:
            out.rmdir()
        except OSError:  # something else is in it now: not ours to remove
            log.info("kept %s: it holds files this run did not write", out)


def _per_task(metrics: dict, tasks: list[Task]) -> dict[str, dict]:
    if not metrics:
        return {}
    return metrics["tasks"] if "tasks" in metrics else {tasks[0].name: metrics}


def _slim(metrics: dict) -> dict:
    """What model.json keeps of the metrics: no confusion matrices."""
    if isinstance(metrics, dict):
        return {k: _slim(v) for k, v in metrics.items() if k != "confusion_matrix"}
    return metrics
