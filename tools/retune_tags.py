"""Re-decide a trained model's multilabel head: thresholds, cap and parents from a config.

    python tools/retune_tags.py runs/fashion/model --config configs/fashion.yaml

The run's own validation photos of that head (its config's split) are scored once; the
head's decision settings (threshold objective, `max_tags`, `parents`) are read from the
named config's task of the same name and tuned as training's last step tunes them; the
head in model.json and its validation figures are replaced; the weights file is not
touched (exports and catalog vectors made from it stay valid).
Why: the decision rules of issue 19 arrived after the bundled model's run had started.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from fashionlens.atomic import write_bytes_atomic
from fashionlens.config import load_config
from fashionlens.data import PhotoDataset, eval_transform, split_train_val
from fashionlens.inference.runtime import TorchRuntime, run_dataset
from fashionlens.models import load_model
from fashionlens.models.resolve import META_FILE, resolve_model
from fashionlens.tasks.multilabel import MultilabelTask
from fashionlens.training.inputs import read_run_data, read_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model folder, or a bundled model's name")
    parser.add_argument("--config", type=Path, required=True,
                        help="the config whose task settings to apply")
    parser.add_argument("--head", default="tags")
    args = parser.parse_args()

    folder = resolve_model(args.model).folder
    model, info = load_model(folder)
    configured = {t.name: t for t in load_config(args.config).tasks}
    if args.head not in configured:
        parser.error(f"--head {args.head}: {args.config} has no task of that name (tasks: "
                     f"{', '.join(configured)})")
    wanted = configured[args.head]
    run = load_config(values={k: v for k, v in info.config.items() if k != "metric"})
    heads = {h.name: h for h in info.heads}
    head = heads.get(args.head)
    if head is None or head.kind != "multilabel" or not any(
            t.name == args.head for t in run.tasks):
        parser.error(f"--head {args.head}: not a multilabel head that {folder} was trained "
                     f"with (its heads: {', '.join(heads)})")
    for index, task in enumerate(run.tasks):
        if task.name == args.head:
            run.tasks[index] = dataclasses.replace(
                task, parents=wanted.parents, max_tags=wanted.max_tags,
                threshold_objective=wanted.threshold_objective)
            cfg = run.tasks[index]
    photos = []
    if not run.sources:  # a one-source run: its own split of its data
        photos = split_train_val(read_run_data(run), run.data, run.seed,
                                 drop_unseen=False)[1].samples
    for source, data in read_sources(run) if run.sources else []:
        if any(cfg.source_column in (s.values or {}) for s in data.samples[:50]):
            photos += split_train_val(data, source.data, run.seed, drop_unseen=False)[1].samples
    task = MultilabelTask(cfg, head.classes)
    dataset = PhotoDataset(photos, eval_transform(info.preprocess),
                           draft_size=info.preprocess.resize_size)  # as predict reads
    runtime = TorchRuntime(model, info.preprocess, info=info, precision="fp32")
    outputs, rows = run_dataset(runtime, dataset, [args.head], description="score")
    targets = task.encode(dataset.samples)[rows]
    task.tune(outputs[args.head], targets)
    figures = task.metrics(outputs[args.head], targets)
    info.heads = [task.head_spec() if h.name == args.head else h for h in info.heads]
    if isinstance(info.metrics, dict) and args.head in info.metrics.get("tasks", {}):
        info.metrics["tasks"][args.head] = {k: v for k, v in figures.items()
                                            if k != "confusion_matrix"}
    info.config = {**info.config, "tasks": [dataclasses.asdict(t) for t in run.tasks]}
    write_bytes_atomic(folder / META_FILE, json.dumps(info.to_dict(), indent=2).encode())
    print(json.dumps({"photos": len(rows), "max_tags": task.max_tags,
                      **{k: figures[k] for k in ("micro_f1", "micro_precision", "micro_recall",
                                                 "micro_f1_crossfit") if k in figures}},
                     indent=2))


if __name__ == "__main__":
    main()
