"""The fine-tuning loop: linear probe, then the whole network with layer-wise learning rates.

Stage 1 fits the new classifier on frozen features (a logistic regression over one pass
of un-augmented photos); starting the full fine-tune from a good head keeps the
pretrained features from being wrecked by large early gradients (LP-FT). Stage 2 trains
every layer with AdamW, smaller learning rates for earlier layers, warm-up then cosine
decay (or reduce-on-plateau), label smoothing, class re-weighting, bf16 autocast where the
hardware computes it natively (`fashionlens.precision`), early
stopping on the validation metric, keeping the best weights.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from timm.models import group_parameters
from timm.optim import create_optimizer_v2
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from ..config import FieldError, TrainConfig
from ..data.dataset import (
    PhotoDataset,
    SeededEpochSampler,
    ShardedEpochSampler,
    SourceBatchSampler,
    SourcedDataset,
    collate_skipping,
)
from ..data.transforms import Preprocess
from ..errors import DataError
from ..evaluation.evaluate import score_tasks
from ..inference.runtime import FEATURES, TorchRuntime
from ..models.artifact import ModelInfo
from ..models.embedding import pooled_features
from ..models.heads import head_logits, head_module
from ..precision import autocast, resolve_precision
from ..progress import StepBar
from ..tasks import Task
from . import distributed
from .distill import Teacher

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("-inf")
    stopped_early: bool = False
    seconds: float = 0.0
    precision: str = "fp32"  # what the passes ran in ("auto" resolved)
    probe_score: float | None = None  # validation score after the linear probe (epoch 0)
    monitor: str = "val_accuracy"  # the history key the best epoch was chosen by
    kept_epoch: int = 0  # whose weights the model holds: best_epoch, or the last (keep: last)

    @property
    def kept_probe(self) -> bool:
        """Whether the model holds the linear probe's weights (epoch 0)."""
        return self.kept_epoch == 0 and self.probe_score is not None

    @property
    def kept(self) -> str:
        """Whose weights the model holds, in words (metrics.json's `kept`, the CLI)."""
        if self.kept_probe:
            return "linear probe (epoch 0)"
        last = " (the last: train.keep)" if self.kept_epoch != self.best_epoch else ""
        return f"epoch {self.kept_epoch}{last}"

    @property
    def fine_tuning_helped(self) -> bool | None:
        """Whether a fine-tuned epoch beat the linear-probe start; None without a probe score."""
        return None if self.probe_score is None else self.best_epoch > 0


def epoch_line(row: dict, epochs: int, monitor: str = "accuracy") -> str:
    """One short log line per epoch (fits 80 columns beside the log level), e.g.
    'epoch 2/3: train loss 0.912 acc 0.750 | val loss 0.801 acc 0.833 | 12 s'.
    A multi-task run shows its mean validation score (`val_score`)."""
    parts = ["linear probe (epoch 0)" if row["epoch"] == 0 else f"epoch {row['epoch']}/{epochs}"]
    if "train_loss" in row:
        parts.append(f"train loss {row['train_loss']:.3f} acc {row['train_accuracy']:.3f}")
    if "val_accuracy" in row:
        val = f"val loss {row['val_loss']:.3f} acc {row['val_accuracy']:.3f}"
        if monitor == "macro_f1":
            val += f" F1 {row['val_macro_f1']:.3f}"
        parts.append(val)
    elif "val_score" in row:
        parts.append(f"val loss {row['val_loss']:.3f} score {row['val_score']:.3f}")
    elif "val_loss" in row:  # one task of another kind: its own figures (tags: micro-F1, mAP)
        figures = [f"{key[4:].replace('_', '-')} {value:.3f}" for key, value in row.items()
                   if key.startswith("val_") and key != "val_loss"][:2]
        parts.append(" ".join([f"val loss {row['val_loss']:.3f}", *figures]))
    line = parts[0] + ": " + " | ".join(parts[1:])
    return line + (f" | {row['seconds']:.0f} s" if "seconds" in row else "")


def make_loader(dataset: PhotoDataset, cfg: TrainConfig, seed: int,
                weights: np.ndarray | None = None) -> DataLoader:
    """The training loader: shuffled (or drawn by `weights`, a balanced sampler) through a
    `SeededEpochSampler`; call `loader.sampler.set_epoch(e)` before each epoch.

    Under torchrun, `cfg.batch_size` is the global batch: this process loads its
    batch_size / world share of each (`ShardedEpochSampler`)."""
    workers = cfg.num_workers if cfg.num_workers is not None else 1
    ctx = distributed.current()
    if ctx.world > 1:
        distributed.check_batch(cfg.batch_size, len(dataset))
    batching: dict
    if isinstance(dataset, SourcedDataset):  # a joint run: each batch from one source
        batching = {"batch_sampler": SourceBatchSampler(
            [len(p) for p in dataset.parts], cfg.batch_size, seed, dataset.draws, ctx.rank,
            ctx.world)}
    else:
        generator = torch.Generator().manual_seed(seed)
        if weights is not None:
            base = WeightedRandomSampler(weights.tolist(), num_samples=len(weights),
                                         generator=generator)
        else:
            base = RandomSampler(dataset, generator=generator)
        sampler: SeededEpochSampler | ShardedEpochSampler = SeededEpochSampler(
            base, generator, seed)
        drop_last = len(dataset) > cfg.batch_size
        batch_size = cfg.batch_size
        if ctx.world > 1:
            sampler = ShardedEpochSampler(sampler, cfg.batch_size, drop_last, ctx.rank,
                                          ctx.world)
            batch_size, drop_last = cfg.batch_size // ctx.world, False  # the sampler drops
        batching = {"batch_size": batch_size, "sampler": sampler, "drop_last": drop_last}
    # The loader's own generator: the seed of its worker processes is drawn from it, not
    # from the global RNG (which would shift the dropout draws of the epoch that starts
    # them: after a resume, that is another epoch than in an uninterrupted run).
    return DataLoader(dataset, num_workers=workers, persistent_workers=workers > 0,
                      collate_fn=collate_skipping,
                      generator=torch.Generator().manual_seed(seed), **batching)


def linear_probe(runtime: TorchRuntime, tasks: list[Task], probe_set: PhotoDataset,
                 targets: dict[str, np.ndarray], limit: int, seed: int) -> None:
    """Initialise every head from a logistic regression on frozen pooled features.

    Under torchrun the processes share the feature pass; the main process fits the heads
    and `distributed.wrap` hands its weights to the others."""
    rows = None
    if len(probe_set) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(len(probe_set), limit, replace=False))
        log.info("linear probe on %d of %d training photos (train.probe_photos)", limit,
                 len(probe_set))
    outputs, seen = distributed.run_sharded(runtime, probe_set, (FEATURES,), "linear probe",
                                            rows=None if rows is None else rows.tolist())
    if not distributed.current().main:
        return
    heads = runtime.heads
    for task in tasks:
        fitted = task.probe(outputs[FEATURES], targets[task.name][seen])
        if fitted is None:
            continue
        head = head_module(runtime.model, heads, task.name)
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(fitted[0], dtype=head.weight.dtype))
            head.bias.copy_(torch.as_tensor(fitted[1], dtype=head.bias.dtype))


def validate(runtime: TorchRuntime, tasks: list[Task], dataset: PhotoDataset,
             targets: dict[str, np.ndarray]) -> dict:
    """One history row's val_* part.

    One task: `val_loss`, `val_accuracy`, `val_macro_f1` (or its kind's keys) as before;
    several: `val_<task>_<key>` each, `val_loss` summed with the task weights, and
    `val_score`, the mean of the tasks' monitored figures (what early stopping reads).
    """
    outputs, rows = distributed.run_sharded(runtime, dataset, [t.name for t in tasks],
                                            "validate")
    metrics = score_tasks(tasks, outputs, rows, targets)
    row: dict = {"val_loss": sum(task.weight * task.val_loss(outputs[task.name],
                                                             targets[task.name][rows])
                                 for task in tasks)}
    for task in tasks:
        prefix = "val_" if len(tasks) == 1 else f"val_{task.name}_"
        for key in (*task.headline, task.monitor):
            value = metrics[task.name].get(key)
            if isinstance(value, float | int):
                row[prefix + key] = float(value)
    if len(tasks) > 1:
        row["val_score"] = float(np.mean([metrics[t.name][t.monitor] for t in tasks]))
    return row


def freeze_early_stages(model: torch.nn.Module, stages: int) -> int:
    """Freeze the stem and the first `stages` stages (timm's coarse parameter groups).

    Early layers detect edges and textures that transfer as they are; with layer-wise
    decay they barely move anyway, and skipping their backward pass at full resolution
    makes each CPU step about 1.5x (2 stages) to 2x (3 stages) faster.
    """
    if stages <= 0:
        return 0
    groups = group_parameters(model, model.group_matcher(coarse=True))
    # The coarse groups: the stem, the stages, then the head part, which always trains.
    most = len(groups) - 2
    if stages > most:
        raise FieldError("train.freeze_stages", f"this backbone has {most} stages that can "
                                                f"be frozen (the last one trains); got {stages}")
    frozen = 0
    params = dict(model.named_parameters())
    for group_id in sorted(groups)[: stages + 1]:
        for name in groups[group_id]:
            params[name].requires_grad_(False)
            frozen += params[name].numel()
    return frozen


def freeze_batchnorm_statistics(model: torch.nn.Module) -> None:
    """Keep the pretrained BatchNorm running statistics (small batches of augmented crops
    estimate them poorly); the affine BN parameters still train."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def _lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float = 0.01
               ) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def fit(model: torch.nn.Module, tasks: list[Task], preprocess: Preprocess,
        train_set: PhotoDataset, train_targets: dict[str, np.ndarray],
        val_set: PhotoDataset | None, val_targets: dict[str, np.ndarray] | None,
        probe_set: PhotoDataset | None, cfg: TrainConfig, seed: int,
        checkpoint: Path | None = None, resume: dict | None = None,
        teacher: Teacher | None = None) -> FitResult:
    """Train in place; on return the model holds the best weights seen.

    The loop sums the tasks' weighted losses and never asks what kind of head it trains;
    validation and the probe's features run through the model's runtime. After every
    epoch the whole state goes to `checkpoint` (atomically); `resume` (a checkpoint read
    back) continues from there, giving what an uninterrupted run gives. A `teacher`
    (`training.distill`) adds its distillation loss on the rows it teaches.

    Under torchrun (`distributed.session`) each process trains on its share of every
    batch, the gradients are averaged, and only the main process writes the checkpoint.
    """
    ctx = distributed.current()
    device = ctx.device if ctx.active else distributed.available_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    log.info("device %s, precision %s", device, precision)
    heads = [task.head_spec() for task in tasks]
    runtime = TorchRuntime(model, preprocess, device=device, precision=precision,
                           info=ModelInfo(architecture="", classes=[], preprocess=preprocess,
                                          heads=heads))
    model.train()
    for task in tasks:
        task.prepare(train_targets[task.name], cfg, device)
    started = time.perf_counter() - (resume["elapsed"] if resume else 0.0)
    if cfg.linear_probe and probe_set is not None and len(probe_set) and resume is None:
        linear_probe(runtime, tasks, probe_set, train_targets, cfg.probe_photos, seed)

    frozen = freeze_early_stages(model, cfg.freeze_stages)
    if frozen:
        log.info("frozen: stem and first %d stages (%.2fM parameters)", cfg.freeze_stages,
                 frozen / 1e6)
    if not cfg.freeze_bn:
        model = distributed.sync_batchnorm(model)
    # The one place the model is wrapped: DDP under torchrun (weights from the main
    # process, gradients averaged), the plain forward pass in one process.
    forward = distributed.wrap(distributed.Forward(
        model, lambda net, images: head_logits(net, heads, pooled_features(net, images))))
    weights = None
    if cfg.balance == "sampler":  # drawn as the first task asks (its rare classes or tags)
        weights = tasks[0].sample_weights(train_targets[tasks[0].name])
    loader = make_loader(train_set, cfg, seed, weights=weights)
    trainable = [p for p in model.parameters() if p.requires_grad]
    has_val = val_set is not None and len(val_set) > 0 and val_targets is not None
    optimizer = create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    layer_decay=cfg.layer_decay)
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr * group.get("lr_scale", 1.0)
    steps_per_epoch = max(1, len(loader))
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(total_steps, int(cfg.warmup_epochs * steps_per_epoch)))
        plateau = None
    else:
        scheduler = None
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.3,
                                                             patience=1)
    target_tensors = {name: torch.as_tensor(t) for name, t in train_targets.items()}
    monitor_key = _monitor_key(tasks)

    result = FitResult(precision=precision)
    best_state = copy.deepcopy(model.state_dict())
    bad_epochs, best_tuned, first_epoch = 0, float("-inf"), 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resume["scheduler"])
        if plateau is not None:
            plateau.load_state_dict(resume["plateau"])
        best_state = resume["best_state"]
        result = FitResult(**{**resume["result"], "precision": precision})
        bad_epochs, best_tuned = resume["bad_epochs"], resume["best_tuned"]
        first_epoch = resume["epoch"] + 1
        set_rng_state(resume.get("rng"))
        log.info("resuming after epoch %d of %d", resume["epoch"], cfg.epochs)
    elif has_val and cfg.linear_probe:
        row = distributed.broadcast(validate(runtime, tasks, val_set, val_targets))
        row = {"epoch": 0, **row}
        result.best_score = result.probe_score = row[monitor_key]
        result.history.append(row)
        log.info("%s", epoch_line(row, cfg.epochs, cfg.monitor))
    # A run that had decided to stop (early stopping, time budget) and was killed before it
    # saved its model stops again rather than training on.
    stop = result.stopped_early
    for epoch in range(first_epoch, cfg.epochs + 1):
        if stop:
            break
        (loader.batch_sampler if isinstance(loader.batch_sampler, SourceBatchSampler)
         else loader.sampler).set_epoch(epoch)
        batches = iter(loader)  # starts the worker processes, if not yet started
        # Dropout: the same draws after a resume (and other draws on each process).
        torch.manual_seed(seed * 1_000_003 + epoch + ctx.seed_offset)
        model.train()
        if cfg.freeze_bn:
            freeze_batchnorm_statistics(model)
        epoch_start = time.perf_counter()
        loss_sum, right, answers, seen = 0.0, 0.0, 0, 0
        taught_sum, taught_batches = 0.0, 0
        norms: list[float] = []
        with StepBar(f"epoch {epoch}/{cfg.epochs}", steps_per_epoch) as bar:
            for batch, errors in batches:
                train_set.record_skipped(errors)
                if batch is None:
                    continue
                images, indices = batch
                images = images.to(device, non_blocking=True).contiguous(
                    memory_format=torch.channels_last)
                with autocast(device, precision):
                    logits = forward(images)
                loss = torch.zeros((), device=device)
                for task in tasks:
                    wanted = target_tensors[task.name][indices].to(device)
                    loss = loss + task.weight * task.loss(logits[task.name].float(), wanted)
                    hits, count = task.correct(logits[task.name].detach(), wanted)
                    right, answers = right + hits, answers + count
                taught = teacher.loss(logits, images, indices) if teacher is not None else None
                if taught is not None:
                    loss = loss + taught
                    taught_sum, taught_batches = taught_sum + taught.item(), taught_batches + 1
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # the norm before clipping, kept for the epoch's row: what grad_clip is
                # chosen from
                norms.append(float(torch.nn.utils.clip_grad_norm_(
                    trainable, cfg.grad_clip or math.inf)))
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                loss_sum += loss.item() * len(indices)
                seen += len(indices)
                bar.advance(f"loss {loss_sum / seen:.3f} acc {right / max(answers, 1):.3f}")
        loss_sum, right, answers, seen, taught_sum, taught_batches = distributed.all_sum(
            [loss_sum, right, answers, seen, taught_sum, taught_batches])
        row = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
               "train_accuracy": right / max(answers, 1),
               "lr": optimizer.param_groups[-1]["lr"],
               "grad_norm_median": float(np.median(norms)) if norms else None,
               "grad_norm_max": max(norms, default=None),
               "seconds": time.perf_counter() - epoch_start}
        if teacher is not None:  # the mean over the batches it taught (weighted, as added)
            row["train_teacher_loss"] = taught_sum / max(taught_batches, 1)
        if has_val:
            scores = distributed.broadcast(validate(runtime, tasks, val_set, val_targets))
            row.update(scores)
            score = row[monitor_key]
            if plateau is not None:
                plateau.step(score)
            if score > result.best_score:
                result.best_score, result.best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
            # Patience counts from the best fine-tuning epoch, not from the linear probe:
            # the first epochs at high learning rate usually score below the probe.
            bad_epochs = 0 if score > best_tuned else bad_epochs + 1
            best_tuned = max(best_tuned, score)
        else:
            result.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        result.history.append(row)
        log.info("%s", epoch_line(row, cfg.epochs, cfg.monitor))
        if has_val and bad_epochs >= cfg.early_stopping_patience:
            result.stopped_early = stop = True
            log.info("early stopping: no improvement for %d epochs", bad_epochs)
        if cfg.max_minutes and (time.perf_counter() - started) / 60 > cfg.max_minutes:
            result.stopped_early = stop = True
            log.info("stopping: time budget of %.1f minutes reached", cfg.max_minutes)
        stop = result.stopped_early = distributed.broadcast(stop)  # the main's clock decides
        if checkpoint is not None and ctx.main:
            save_checkpoint(checkpoint, {
                "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "plateau": plateau.state_dict() if plateau is not None else None,
                "best_state": best_state, "bad_epochs": bad_epochs, "best_tuned": best_tuned,
                "result": dataclasses.asdict(result), "rng": rng_state(),
                "elapsed": time.perf_counter() - started})
    if cfg.keep == "last":
        result.kept_epoch = result.history[-1]["epoch"] if result.history else 0
    else:
        model.load_state_dict(best_state)
        result.kept_epoch = result.best_epoch
    model.eval()
    result.seconds = time.perf_counter() - started
    result.monitor = monitor_key
    return result


def rng_state() -> dict:
    """The global random states (python, numpy, torch CPU and CUDA) at an epoch's end: a
    resumed run continues with the draws an uninterrupted one would make."""
    return {"python": list(random.getstate()[1]), "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2],
            "numpy": [int(v) for v in np.random.get_state()[1]],
            "numpy_rest": [int(v) for v in np.random.get_state()[2:4]]
            + [float(np.random.get_state()[4])],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict | None) -> None:
    if not state:  # a checkpoint written before the random states were kept
        return
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(("MT19937", np.asarray(state["numpy"], dtype=np.uint32), int(pos),
                         int(has_gauss), gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() \
            and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Write the training state atomically: a kill mid-write leaves the previous one."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable checkpoint
        raise DataError(f"{path}: cannot read this training checkpoint ({exc})") from exc


def _monitor_key(tasks: list[Task]) -> str:
    """The history key early stopping reads: the one task's monitored figure, or the
    mean over tasks (`val_score`)."""
    return f"val_{tasks[0].monitor}" if len(tasks) == 1 else "val_score"
