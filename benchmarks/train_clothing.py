"""Benchmark: train the garment classifier on ../shared/data/clothing and print JSON.

    python benchmarks/train_clothing.py                       # 10 types, recommended config
    python benchmarks/train_clothing.py --config configs/clothing20.yaml
    python benchmarks/train_clothing.py -o train.epochs=6     # any config override

Reports validation accuracy / macro-F1, wall-clock training time, peak memory, and
prediction throughput (single process, batch 32, JPEG decoding from disk included).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

import torch

from fashionlens import Predictor, load_config, train
from fashionlens.data import load_labelled, split_train_val
from fashionlens.precision import cpu_description

ROOT = Path(__file__).resolve().parent.parent


def throughput(model_dir: Path, paths: list[Path], batch_size: int = 32) -> dict:
    predictor = Predictor(model_dir)
    list(predictor.predict_paths(paths[:batch_size], batch_size=batch_size))  # warm-up
    start = time.perf_counter()
    results = list(predictor.predict_paths(paths, batch_size=batch_size))
    seconds = time.perf_counter() - start
    return {"images": len(results), "seconds": round(seconds, 2),
            "images_per_second": round(len(results) / seconds, 1),
            "precision": predictor.precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "clothing10.yaml"))
    parser.add_argument("-o", "--override", action="append", default=[])
    parser.add_argument("--name", default=None, help="run name under runs/")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    overrides = list(args.override)
    name = args.name or f"bench-{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    overrides += [f"output.name={name}", f"output.dir={ROOT / 'runs'}"]
    config = load_config(args.config, overrides=overrides)
    started = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - started
    summary = json.loads((result.output_dir / "metrics.json").read_text())

    data = load_labelled(config.data)
    _, val = split_train_val(data, config.data, config.seed)
    speed = throughput(result.model_dir, [s.path for s in val.samples])
    m = result.metrics
    print(json.dumps({
        "config": args.config,
        "overrides": args.override,
        "run_dir": str(result.output_dir),
        "classes": len(summary["classes"]),
        "train_images": summary["num_train_images"],
        "val_images": summary["num_val_images"],
        "val_accuracy": round(m["accuracy"], 4),
        "val_top3_accuracy": round(m["top3_accuracy"], 4),
        "val_macro_f1": round(m["macro_f1"], 4),
        "best_epoch": summary["best_epoch"],
        "epochs_run": len([h for h in summary["history"] if "train_loss" in h]),
        "train_minutes": round(summary["train_seconds"] / 60, 2),
        "wall_minutes_incl_data_and_reports": round(wall / 60, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "prediction": speed,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_description(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
