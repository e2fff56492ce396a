"""Benchmark: training on one GPU, directly and through torchrun + DDP, and print JSON.

    # once, where ../shared/data is: a small downscaled copy of the clothing photos
    python benchmarks/train_gpu.py prepare --out .gpu/data
    # on the GPU machine: both runs, same config, results in benchmarks/results-train-gpu.json
    python benchmarks/train_gpu.py run --data .gpu/data --out benchmarks/results-train-gpu.json

`run` starts the same training twice: `python benchmarks/train_gpu.py worker` (one plain
process) and `torchrun --standalone --nproc_per_node=1 benchmarks/train_gpu.py worker` (the
DDP path: process group, DistributedDataParallel, sharded sampler, with one process).
Each worker trains configs/clothing10.yaml's recipe on the copy (bf16 autocast where the GPU
has it) and reports training images/s per epoch (the first epoch, which warms up the
loaders and cuDNN, is listed but left out of the mean), epoch times, and validation
accuracy. With `--embedding` it also times metric learning (`train-embedding --mode
full`) both ways.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOTHING = ROOT.parent / "shared" / "data" / "clothing"


def prepare(args: argparse.Namespace) -> None:
    """A copy of the 10-type clothing photos small enough to send to a GPU machine: all
    validation photos and a random (seeded) part of the training ones, downscaled."""
    from PIL import Image

    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    with (CLOTHING / "labels.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] in ("train", "validation")]
    train = [r for r in rows if r["split"] == "train"]
    random.Random(0).shuffle(train)
    keep = sorted(train[:args.train_photos], key=lambda r: r["image"]) + \
        [r for r in rows if r["split"] == "validation"]
    for row in keep:
        with Image.open(CLOTHING / "images" / f"{row['image']}.jpg") as img:
            img = img.convert("RGB")
            scale = args.short_side / min(img.size)
            if scale < 1:
                img = img.resize((round(img.width * scale), round(img.height * scale)),
                                 Image.BICUBIC)
            img.save(out / "images" / f"{row['image']}.jpg", quality=args.quality)
    with (out / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "label", "sender_id", "split"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in keep)
    size = sum(p.stat().st_size for p in (out / "images").iterdir())
    print(json.dumps({"photos": len(keep), "train": args.train_photos,
                      "megabytes": round(size / 1e6, 1)}))


def _overrides(args: argparse.Namespace, name: str) -> list[str]:
    data = Path(args.data).resolve()
    return [f"data.path={data / 'labels.csv'}", f"data.image_dir={data / 'images'}",
            f"train.epochs={args.epochs}", f"train.num_workers={args.workers}",
            "train.tta=false", f"output.dir={Path(args.runs).resolve()}",
            f"output.name={name}", "output.exist_ok=true", *args.override]


def worker(args: argparse.Namespace) -> None:
    """One training run (this process, or each process torchrun started)."""
    import torch

    from fashionlens import load_config, train
    from fashionlens.training.distributed import is_main_process, launched

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    path = "ddp" if launched() else "single"
    config = load_config(ROOT / "configs" / "clothing10.yaml",
                         overrides=_overrides(args, f"gpu-{path}"))
    started = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - started
    if not is_main_process():
        return
    summary = json.loads((result.output_dir / "metrics.json").read_text())
    batch = config.train.batch_size
    per_epoch = summary["num_train_images"] // batch * batch  # the loader drops the rest
    epochs = [row for row in summary["history"] if "train_loss" in row]
    speeds = [per_epoch / row["seconds"] for row in epochs]
    steady = speeds[1:] or speeds
    report = {
        "path": path,
        "launcher": "torchrun --standalone --nproc_per_node=1" if path == "ddp" else "python",
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "precision": summary["precision"],
        "batch_size": batch,
        "num_workers": config.train.num_workers,
        "train_images": summary["num_train_images"],
        "val_images": summary["num_val_images"],
        "images_per_epoch": per_epoch,
        "epoch_seconds": [round(row["seconds"], 2) for row in epochs],
        "images_per_second_per_epoch": [round(s, 1) for s in speeds],
        "train_images_per_second": round(sum(steady) / len(steady), 1),
        "val_accuracy": round(result.metrics["accuracy"], 4),
        "val_macro_f1": round(result.metrics["macro_f1"], 4),
        "best_epoch": summary["best_epoch"],
        "train_seconds": summary["train_seconds"],
        "wall_seconds_incl_data_and_reports": round(wall, 1),
        # torchrun sets OMP_NUM_THREADS=1 in the processes it starts; plain python does not.
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if torch.cuda.is_available() else None,
    }
    Path(args.report).write_text(json.dumps(report, indent=2))


def _embedding(args: argparse.Namespace, ddp: bool) -> dict:
    """Metric learning, full mode, through the command line (and torchrun), starting from
    the classifier the single-GPU run trained."""
    data = Path(args.data).resolve()
    name = f"gpu-embedding-{'ddp' if ddp else 'single'}"
    command = ["-m", "fashionlens.cli.main", "train-embedding", "--data",
               str(data / "labels.csv"), "--image-dir", str(data / "images"),
               "--image-ext", ".jpg", "--split-column", "split", "--model",
               str(Path(args.runs).resolve() / "gpu-single" / "model"), "--mode", "full",
               "--epochs", "2", "--output",
               str(Path(args.runs).resolve()), "--name", name, "-o", "metric.threads=8"]
    launcher = [sys.executable] + (["-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node=1"] if ddp else [])
    started = time.perf_counter()
    subprocess.run([*launcher, *command], check=True)
    metrics = json.loads((Path(args.runs) / name / "metrics.json").read_text())
    return {"launcher": "torchrun --standalone --nproc_per_node=1" if ddp else "python",
            "seconds": round(time.perf_counter() - started, 1),
            "epoch_seconds": [round(h["seconds"], 2) for h in metrics["history"]],
            "validation": metrics["validation"], "precision": metrics["precision"]}


def run(args: argparse.Namespace) -> None:
    import torch

    parts = Path(args.runs)
    parts.mkdir(parents=True, exist_ok=True)
    common = ["worker", "--data", args.data, "--epochs", str(args.epochs), "--workers",
              str(args.workers), "--runs", args.runs,
              *[a for o in args.override for a in ("-o", o)]]
    results = {}
    for path, launcher in (("single", [sys.executable]),
                           ("ddp", [sys.executable, "-m", "torch.distributed.run",
                                    "--standalone", "--nproc_per_node=1"])):
        report = parts / f"report-{path}.json"
        subprocess.run([*launcher, __file__, *common, "--report", str(report)], check=True)
        results[path] = json.loads(report.read_text())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    out = {
        "benchmark": "benchmarks/train_gpu.py",
        "device": {"gpu": gpu, "torch": torch.__version__,
                   "cuda": torch.version.cuda, "cpu_count": os.cpu_count()},
        "data": f"{args.data}: clothing10 subset (see `prepare`), downscaled",
        "config": "configs/clothing10.yaml",
        "overrides": _overrides(args, "NAME")[2:],
        "single_gpu": results["single"],
        "ddp_one_process": results["ddp"],
        "ddp_over_single_images_per_second": round(
            results["ddp"]["train_images_per_second"]
            / results["single"]["train_images_per_second"], 3),
    }
    if args.embedding:
        out["embedding_full_mode"] = {"single": _embedding(args, False),
                                      "ddp_one_process": _embedding(args, True)}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="make the downscaled copy of the photos")
    p.add_argument("--out", default=".gpu/data")
    p.add_argument("--train-photos", type=int, default=1000)
    p.add_argument("--short-side", type=int, default=200)
    p.add_argument("--quality", type=int, default=75)
    for name in ("run", "worker"):
        p = sub.add_parser(name)
        p.add_argument("--data", default=".gpu/data")
        p.add_argument("--epochs", type=int, default=6)
        p.add_argument("--workers", type=int, default=8, help="DataLoader worker processes")
        p.add_argument("--runs", default="runs/gpu-bench")
        p.add_argument("-o", "--override", action="append", default=[])
        if name == "run":
            p.add_argument("--out", default=str(ROOT / "benchmarks" / "results-train-gpu.json"))
            p.add_argument("--embedding", action="store_true",
                           help="also time train-embedding --mode full both ways")
        else:
            p.add_argument("--report", required=True)
    args = parser.parse_args()
    {"prepare": prepare, "run": run, "worker": worker}[args.command](args)


if __name__ == "__main__":
    main()
