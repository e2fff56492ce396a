"""Inference benchmark: the same model on every runtime, side by side in one run; JSON.

    python benchmarks/inference.py                  # bundled clothing10, clothing validation
    python benchmarks/inference.py --model fashion  # the default: accuracy of its type task
    python benchmarks/inference.py --model runs/x/model --limit 200

For each path (eager PyTorch fp32, the tuned PyTorch path (precision auto: bf16 where the
CPU has it natively), ONNX Runtime fp32, OpenVINO fp32, OpenVINO int8 when the model has
an int8 export, and the default `--runtime auto`): model-only images/s at batch 32 and
batch-1 latency on pre-decoded photos; end-to-end `Predictor.predict_paths` images/s (JPEG
decoding included, batch 32); accuracy on the labelled photos. Then the command line, each
a new process: `fashionlens predict --json` on the whole list of photos (start-up
included) per runtime, once; `fashionlens predict --json PHOTO` per runtime and
`python -c "import torch, timm"`, each the median of three. The ratios the issue asks
for are against eager PyTorch's model-only throughput, measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fashionlens.inference.backends import MODULE_OF, installed  # noqa: E402
from fashionlens.inference.export_cache import find_exported  # noqa: E402
from fashionlens.inference.photos import prepare_photo  # noqa: E402
from fashionlens.inference.predictor import Predictor  # noqa: E402
from fashionlens.models.resolve import resolve_model  # noqa: E402
from fashionlens.precision import cpu_description  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "clothing"

PATHS = [  # (name, runtime, precision)
    ("torch eager fp32", "torch", "fp32"),
    ("torch tuned (precision auto)", "torch", "auto"),
    ("onnxruntime fp32", "onnxruntime", None),
    ("openvino fp32", "openvino", None),
    ("openvino int8", "openvino-int8", None),
    ("default (--runtime auto)", "auto", None),
]


def photos(limit: int | None) -> tuple[list[Path], list[str]]:
    with (DATA / "labels.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "validation"]
    rows = rows[:limit] if limit else rows
    return [DATA / "images" / f"{r['image']}.jpg" for r in rows], [r["label"] for r in rows]


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(name: str, runtime: str, precision: str | None, model: str, paths: list[Path],
            labels: list[str], batch: np.ndarray) -> dict:
    predictor = Predictor(model, runtime=runtime, precision=precision)
    rt = predictor.runtime
    head = predictor.heads[0].name
    rt.run(batch[:32], (head,))  # warm-up (and first-use export)
    chunks = [batch[i:i + 32] for i in range(0, len(batch), 32)]
    model_only = timed(lambda: [rt.run(c, (head,)) for c in chunks], 2)
    one = batch[:1]
    for _ in range(5):
        rt.run(one, (head,))
    latency = timed(lambda: rt.run(one, (head,)), 30)
    start = time.perf_counter()
    results = list(predictor.predict_paths(paths, batch_size=32))
    end_to_end = time.perf_counter() - start
    predicted = [type_of(r) for r in results]
    return {
        "path": name, "runtime": runtime, "ran_on": rt.backend,
        "precision": getattr(rt, "precision", "fp32"),
        "model_only_images_per_s_batch32": round(len(batch) / min(model_only), 1),
        "latency_ms_batch1_median": round(1000 * statistics.median(latency), 2),
        "end_to_end_images_per_s_batch32": round(len(paths) / end_to_end, 1),
        "accuracy": round(float(np.mean([p == t for p, t in zip(predicted, labels,
                                                                strict=True)])), 4),
    }


def type_of(prediction) -> str | None:
    """The garment type a prediction names: a one-task model's label, else its `type`
    task's (the joint model answers several tasks; the photos are labelled by type)."""
    if prediction.label is not None:
        return prediction.label
    return (prediction.tasks or {}).get("type", {}).get("label")


def cli_seconds(args: list[str], repeat: int = 3) -> float:
    times = timed(lambda: subprocess.run(args, check=True, capture_output=True), repeat)
    return round(statistics.median(times), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clothing10")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    paths, labels = photos(args.limit)
    reference = Predictor(args.model, precision="fp32", runtime="torch")
    pre = reference.info.preprocess  # model-only timing: every photo at the default shape
    batch = np.stack([prepare_photo(p, pre.fixed(pre.shape)) for p in paths])
    folder = resolve_model(args.model).folder
    int8 = find_exported(folder, "openvino-int8") is not None
    results = []
    for name, runtime, precision in PATHS:
        if runtime in MODULE_OF and not installed(runtime):
            results.append({"path": name, "skipped": f"{MODULE_OF[runtime]} is not installed"})
            continue
        if runtime == "openvino-int8" and not int8:
            results.append({"path": name, "skipped": "no int8 export of this model (fashionlens "
                                                     "export MODEL --format openvino-int8)"})
            continue
        results.append(measure(name, runtime, precision, args.model, paths, labels, batch))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    eager = results[0]["model_only_images_per_s_batch32"]
    for row in results:
        if "model_only_images_per_s_batch32" in row:
            row["end_to_end_vs_eager_model_only"] = round(
                row["end_to_end_images_per_s_batch32"] / eager, 2)
    exe = str(Path(sys.executable).with_name("fashionlens"))
    runtimes = [r for r in ("torch", "onnxruntime", "openvino", "openvino-int8", "auto")
                if r not in MODULE_OF or installed(r)]
    if not int8:
        runtimes.remove("openvino-int8")
    listing = Path(os.environ.get("TMPDIR", "/tmp")) / "fashionlens-benchmark-photos.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    folder_runs = {}
    for r in runtimes:
        seconds = cli_seconds([exe, "predict", "--json", "--model", args.model, "--runtime", r,
                               str(listing)])
        folder_runs[r] = {"seconds": seconds, "images_per_s": round(len(paths) / seconds, 1),
                          "vs_eager_model_only": round(len(paths) / seconds / eager, 2)}
    cli = {f"predict --json one photo, --runtime {r}": cli_seconds(
        [exe, "predict", "--json", "--model", args.model, "--runtime", r, str(paths[0])])
        for r in runtimes}
    cli["python -c 'import torch, timm'"] = cli_seconds([sys.executable, "-c",
                                                          "import torch, timm"])
    cli["fashionlens --help"] = cli_seconds([exe, "--help"])
    default = next(r for r in results if r.get("runtime") == "auto")
    targets = {
        "predict_json_folder_vs_eager_model_only": {
            "ratio": folder_runs["auto"]["vs_eager_model_only"], "target": 3.0,
            "reached": folder_runs["auto"]["vs_eager_model_only"] >= 3.0},
        "predict_one_photo_vs_import_torch_timm": {
            "seconds": [cli["predict --json one photo, --runtime auto"],
                        cli["python -c 'import torch, timm'"]],
            "reached": cli["predict --json one photo, --runtime auto"]
            < cli["python -c 'import torch, timm'"]},
        "default_accuracy_vs_torch_fp32_points": {
            "change": round(100 * (default["accuracy"] - results[0]["accuracy"]), 2),
            "target": -0.5,
            "reached": 100 * (default["accuracy"] - results[0]["accuracy"]) >= -0.5},
    }
    print(json.dumps({"model": args.model, "photos": len(paths), "data": str(DATA),
                      "results": results,
                      "cli_predict_json_all_photos_one_process_median_of_3": folder_runs,
                      "cli_wall_seconds_median_of_3": cli,
                      "targets": targets,
                      "cpu": cpu_description(), "torch_threads": torch.get_num_threads(),
                      "load_average": os.getloadavg(), "torch": torch.__version__},
                     indent=2))


if __name__ == "__main__":
    main()
