"""Benchmark: train an attribute tagger or tag model from a config and print JSON.

    python benchmarks/train_tasks.py --config configs/products.yaml   # five attributes
    python benchmarks/train_tasks.py --config configs/outfits.yaml    # outfit tags
    python benchmarks/train_tasks.py --run runs/products-cpu          # summarise a run
                                                                      # already trained

Per task: classification accuracy / macro-F1 (and the issue's target, reached or not);
multilabel micro-F1 with thresholds tuned on the validation photos, the honest
cross-fitted micro-F1 (thresholds tuned on the other half), macro-F1 over tags with at
least 30 validation photos, and mAP. Plus training time, peak memory, the CPU, and
prediction throughput of the saved model (batch 32, JPEG decoding included).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from train_clothing import throughput  # this folder is on sys.path when run as a script

from fashionlens import load_config, train
from fashionlens.precision import cpu_description

ROOT = Path(__file__).resolve().parent.parent

# The targets (products: accuracy per task; outfits: micro-F1 with tuned thresholds).
TARGETS = {"articleType": 0.90, "baseColour": 0.70, "season": 0.73, "usage": 0.92,
           "gender": 0.92, "tags": 0.60}


def task_figures(name: str, metrics: dict) -> dict:
    keys = ("accuracy", "macro_f1", "top3_accuracy", "micro_f1", "micro_f1_crossfit",
            "micro_f1_at_0.5", "macro_f1_30", "tags_with_30", "map", "exact_match",
            "micro_precision", "micro_recall", "num_images")
    out = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()
           if k in keys}
    if name in TARGETS:
        headline = "accuracy" if "accuracy" in metrics else "micro_f1"
        out["target"] = {"metric": headline, "at_least": TARGETS[name],
                         "reached": metrics[headline] >= TARGETS[name]}
    return out


def summarise(run_dir: Path, wall: float | None) -> dict:
    summary = json.loads((run_dir / "metrics.json").read_text())
    metrics = summary["metrics"]
    per_task = metrics["tasks"] if "tasks" in metrics else {
        next(iter(summary["tasks"])): metrics}
    validation = [Path(p) for p in (run_dir / "validation.txt").read_text().split()]
    return {
        "run_dir": str(run_dir),
        "config": str(run_dir / "config.yaml"),
        "tasks": {name: task_figures(name, m) for name, m in per_task.items()},
        "label_spaces": summary["tasks"],
        "train_images": summary["num_train_images"],
        "val_images": summary["num_val_images"],
        "best_epoch": summary["best_epoch"],
        "epochs_run": len([h for h in summary["history"] if "train_loss" in h]),
        "history": [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                    for row in summary["history"]],
        "precision": summary["precision"],
        "train_minutes": round(summary["train_seconds"] / 60, 2),
        "wall_minutes_incl_data_and_reports": round(
            (wall if wall is not None else summary["total_seconds"]) / 60, 2),
        "peak_rss_mb": summary["peak_rss_mb"],
        "prediction": throughput(run_dir / "model", validation[:512]),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_description(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "products.yaml"))
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--name", default=None, help="run name under runs/")
    parser.add_argument("--run", default=None, help="summarise this trained run instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.run:
        print(json.dumps(summarise(Path(args.run), None), indent=2))
        return
    name = args.name or f"bench-{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    overrides = [*args.override, f"output.name={name}", f"output.dir={ROOT / 'runs'}"]
    config = load_config(args.config, overrides=overrides)
    started = time.perf_counter()
    result = train(config)
    report = summarise(result.output_dir, time.perf_counter() - started)
    report["overrides"] = args.override
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
