"""Benchmark: where a joint run's training time goes, per source, on this CPU. Prints JSON.

    python benchmarks/train_time.py --config configs/fashion.yaml

For each source of the config: decoding a photo from disk (what preloading pays once),
the augmentation pipeline per photo (paid every epoch, in the loader's worker), and one
training step (forward, backward, optimizer) per batch at the source's size, in the
precision the run would use; then the epoch time the config's draws imply. The model is
the config's (its starting weights do not change the cost), the heads every task's.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from report import emit
from timm.optim import create_optimizer_v2

from fashionlens.config import load_config
from fashionlens.data.images import load_image
from fashionlens.models import create_model
from fashionlens.models.embedding import pooled_features
from fashionlens.models.heads import attach_heads, head_logits
from fashionlens.precision import autocast, cpu_description, resolve_precision
from fashionlens.training.loop import freeze_batchnorm_statistics, freeze_early_stages
from fashionlens.training.run import prepare_sources, run_preprocess

ROOT = Path(__file__).resolve().parent.parent


def _median_ms(times: list[float]) -> float:
    return round(1000 * statistics.median(times), 2)


def _training_step(model, heads, tasks, targets, optimizer, batch, index, device,
                   precision: str) -> float:
    """Seconds of one training step (forward, backward, optimizer) on `batch`."""
    t0 = time.perf_counter()
    with autocast(device, precision):
        logits = head_logits(model, heads, pooled_features(model, batch))
    loss = sum(t.weight * t.loss(logits[t.name].float(), targets[t.name][index])
               for t in tasks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "fashion.yaml"))
    parser.add_argument("--photos", type=int, default=64, help="photos timed per source")
    parser.add_argument("--steps", type=int, default=4, help="training steps timed per source")
    parser.add_argument("--compare", action="append", default=[], metavar="PRECISION",
                        help="also time the training step in this precision (fp32, bf16; "
                             "repeatable), side by side with the run's own")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    config = load_config(args.config)
    config.train.cache_images = False  # decoding is timed here, not preloaded
    torch.set_num_threads(torch.get_num_threads())
    preprocess = run_preprocess(config)
    started = time.perf_counter()
    prepared = prepare_sources(config, preprocess, config.seed)
    read_seconds = time.perf_counter() - started
    tasks = prepared.tasks
    heads = [t.head_spec() for t in tasks]
    model = create_model(config.model.name, num_classes=len(heads[0].classes),
                         pretrained="none", drop_rate=config.model.drop_rate)
    attach_heads(model, heads)
    freeze_early_stages(model, config.train.freeze_stages)
    model.train()
    if config.train.freeze_bn:
        freeze_batchnorm_statistics(model)
    device = torch.device("cpu")
    precision = resolve_precision(config.train.precision, device)
    compared = list(dict.fromkeys([precision, *(resolve_precision(p, device)
                                                 for p in args.compare)]))
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-4, layer_decay=config.train.layer_decay)
    for task in tasks:
        task.prepare(prepared.train_targets[task.name], config.train, device)
    targets = {n: torch.as_tensor(t) for n, t in prepared.train_targets.items()}
    rng = np.random.default_rng(0)
    report: dict = {}
    epoch_seconds = 0.0
    for part, source, start in zip(prepared.train_ds.parts, config.sources,
                                   prepared.train_ds.starts(), strict=True):
        name, draws = source.name, source.draws
        rows = rng.choice(len(part), min(args.photos, len(part)), replace=False)
        decode, augment, images = [], [], []
        for row in rows:
            t0 = time.perf_counter()
            img = load_image(part.samples[row].path, draft_size=part.cache_short_side)
            t1 = time.perf_counter()
            tensor = part.transform(img)
            augment.append(time.perf_counter() - t1)
            decode.append(t1 - t0)
            images.append(tensor)
        batch = torch.stack(images[: config.train.batch_size]).contiguous(
            memory_format=torch.channels_last)
        index = torch.as_tensor(rows[: len(batch)] + start)
        # precisions take turns step by step, so that neither gets the warmer or quieter
        # minutes; each one's first step builds its kernels for this size and is not counted
        step_seconds: dict[str, list[float]] = {p: [] for p in compared}
        for step in range(args.steps + 1):
            for p in compared:
                seconds = _training_step(model, heads, tasks, targets, optimizer, batch,
                                         index, device, p)
                if step:
                    step_seconds[p].append(seconds)
        steps = step_seconds[precision]
        per_photo_step = statistics.median(steps) / len(batch)
        draws = draws or len(part)
        aug_ms, step_ms = statistics.median(augment), per_photo_step
        # the loader's one worker augments while the main process trains: on 2 cores the
        # two share the CPU, so an epoch costs about the sum
        source_epoch = draws * (aug_ms + step_ms)
        epoch_seconds += source_epoch
        report[name] = {
            "training_size": [source.height or preprocess.shape[0],
                              source.width or preprocess.shape[1]],
            "photos": len(part), "draws_per_epoch": draws,
            "decode_ms_per_photo": _median_ms(decode),
            "augment_ms_per_photo": _median_ms(augment),
            "train_step_ms_per_photo": round(1000 * step_ms, 2),
            **({"train_step_ms_per_photo_by_precision": {
                p: round(1000 * statistics.median(t) / len(batch), 2)
                for p, t in step_seconds.items()}} if len(compared) > 1 else {}),
            "batch": len(batch),
            "epoch_seconds_estimate": round(source_epoch, 1),
            "share_in_augmentation": round(aug_ms / (aug_ms + step_ms), 3),
        }
    result = {
        "benchmark": "train_time",
        "config": str(Path(args.config).resolve().relative_to(ROOT))
        if Path(args.config).resolve().is_relative_to(ROOT) else args.config,
        "cpu": cpu_description(), "threads": torch.get_num_threads(),
        "precision": precision, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "reading_the_sources_seconds": round(read_seconds, 1),
        "sources": report,
        "epoch_seconds_estimate": round(epoch_seconds, 1),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
