"""Benchmark (issue 19 item 2): does `augment.backdrop` make studio shots teach home photos?

    python benchmarks/backdrop_transfer.py --save --seeds 0,1   # 4 runs, ~80 min on 2 cores
    python benchmarks/backdrop_transfer.py --epochs 1      # a quicker, noisier look

Trains configs/backdrop-transfer.yaml twice, identical (seed, draws, schedule) but for the
studio source's `augment.backdrop` (0, then the recipe's 0.5): garment type learned from
studio shots alone, from ImageNet weights. Each model is then scored, as `evaluate --task
type` scores it, on

- home photos (`clothing` validation, labels through configs/taxonomy/garment-types.yaml;
  photos of a type the studio shots do not teach are not scored): the kind of photo the
  augmentation is meant to bring the studio shots nearer to;
- studio shots (`products` validation, fashion only): the photos it trained on the kind of.

Prints JSON (`--save`: benchmarks/results-backdrop-transfer.json) with the CPU, each arm's
training time and both accuracies, and the difference with a paired bootstrap interval
over the home photos.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

import numpy as np  # noqa: E402

from fashionlens import load_config, train  # noqa: E402
from fashionlens.precision import cpu_description  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "backdrop-transfer.yaml"
OUT = ROOT / "benchmarks" / "results-backdrop-transfer.json"


def figures(model_dir: Path, data: Path, taxonomy: dict, groups: dict
            ) -> tuple[dict, np.ndarray]:
    """Garment type on home photos and on studio shots, as benchmarks/fashion_model.py
    scores the bundled models, and each home photo's right/wrong (for the paired
    comparison)."""
    from fashion_model import (  # this folder is on sys.path when run as a script
        head_scores,
        home_photos,
        labels_of,
        read_rows,
        studio_shots,
        to_type,
    )

    from fashionlens.inference.predictor import Predictor

    predictor = Predictor(model_dir, runtime="torch", precision="fp32")
    head = next(h for h in predictor.heads if h.name == "type")
    rows = read_rows(data / "clothing" / "labels.csv", "validation")
    paths = [data / "clothing" / "images" / f"{r['image']}.jpg" for r in rows]
    scores, readable = head_scores(predictor, paths, ["type"])
    truth = [taxonomy.get(rows[r]["label"]) for r in readable]
    said = [to_type(label, "type", taxonomy) for label in labels_of(head, scores["type"])]
    right = np.array([float(s == t) for s, t in zip(said, truth, strict=True) if t])
    return {"home_type": home_photos(predictor, taxonomy, groups, data, None)["type"],
            "studio_type": studio_shots(predictor, taxonomy, groups, data, None)["type"]}, right


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--seeds", type=lambda text: [int(x) for x in text.split(",")],
                        default=[0], help="run seeds, comma-separated (default 0): each "
                                          "seed trains both arms")
    parser.add_argument("--save", action="store_true", help=f"write {OUT.name}")
    parser.add_argument("--reuse", action="store_true",
                        help="score an arm's finished run (runs/backdrop-transfer-*) instead "
                             "of training it again")
    args = parser.parse_args()
    from fashion_model import COLOUR_GROUPS, TAXONOMY, read_mapping

    taxonomy = read_mapping(TAXONOMY, "garment type")
    groups = read_mapping(COLOUR_GROUPS, "colour group")
    arms, right = {}, {}
    for seed in args.seeds:
        for backdrop in (0.0, 0.5):
            arm = f"backdrop {backdrop:g}" + (f", seed {seed}" if seed else "")
            name = f"backdrop-transfer-{backdrop:g}" + (f"-seed{seed}" if seed else "")
            overrides = [f"output.name={name}", "output.exist_ok=true", f"seed={seed}",
                         f"sources.studio.augment.backdrop={backdrop}"]
            if args.epochs:
                overrides.append(f"train.epochs={args.epochs}")
            config = load_config(CONFIG, overrides=overrides)
            folder = Path(config.output.dir) / name
            if not (args.reuse and (folder / "model" / "model.json").is_file()):
                train(config)
            summary = json.loads((folder / "metrics.json").read_text())
            arms[arm] = {
                "run": str(folder), "seed": seed, "backdrop": backdrop,
                "train_minutes": round(summary["total_seconds"] / 60, 1),
                "peak_rss_mb": summary["peak_rss_mb"],
                "epoch_seconds": [round(h["seconds"], 1) for h in summary["history"]
                                  if "seconds" in h],
            }
            scored, right[seed, backdrop] = figures(folder / "model", args.data, taxonomy,
                                                   groups)
            arms[arm].update(scored)
            print(json.dumps(arms[arm]), file=sys.stderr, flush=True)
    # per seed, the same home photos with and without: a paired bootstrap over photos
    gains = np.stack([right[seed, 0.5] - right[seed, 0.0] for seed in args.seeds])
    rng = np.random.default_rng(0)
    draws = rng.integers(0, gains.shape[1], size=(10_000, gains.shape[1]))
    low, high = np.percentile(gains[:, draws].mean(axis=(0, 2)), [2.5, 97.5])
    result = {
        "benchmark": "backdrop_transfer",
        "date": datetime.date.today().isoformat(),
        "cpu": cpu_description(),
        "config": str(CONFIG.relative_to(ROOT)),
        "epochs": args.epochs or load_config(CONFIG).train.epochs,
        "seeds": args.seeds,
        "arms": arms,
        "home_type_gain": {
            "accuracy": round(float(gains.mean()), 4),
            "per_seed": [round(float(g.mean()), 4) for g in gains],
            "bootstrap_95_over_photos": [round(float(low), 4), round(float(high), 4)],
            "photos": gains.shape[1],
            "right_only_with_backdrop": [int((g > 0).sum()) for g in gains],
            "right_only_without": [int((g < 0).sum()) for g in gains]},
        "studio_type_gain": round(float(np.mean(
            [arms[a]["studio_type"]["accuracy"] for a in arms if arms[a]["backdrop"]]) -
            np.mean([arms[a]["studio_type"]["accuracy"] for a in arms
                     if not arms[a]["backdrop"]])), 4),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.save:
        OUT.write_text(text + "\n")


if __name__ == "__main__":
    main()
