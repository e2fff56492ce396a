"""Benchmark: where should a model's near-duplicate line be, and does it hold? JSON.

    python benchmarks/duplicates.py --model fashion --model clothing10
    python benchmarks/duplicates.py --model fashion --save   # store fashion's own line

A cosine-similarity line decides which catalog items `catalog duplicates` and the review
queue list as the same photo: the model's `duplicate_threshold` (model.json), else
`search.embeddings.DUPLICATE_THRESHOLD`. For each model, on the clothing train +
validation photos (3,409): 300 of them (seeded) get a lightly edited copy (4 % cropped off
the borders, resized to 80 %, saved as JPEG quality 70, what a re-upload does), and each
copy is compared with its original (should reach the line) and with every other photo
(should not).

The line measured (`measured_line`) lies halfway between the 99th percentile of a copy's
best match among the other photos and the 5th percentile of its match with its original,
rounded to 0.01: for clothing10 that gives the long-standing 0.93. `--save` writes it into
the model's model.json (`models.info.update_info`); every figure is given at the line the
model used when measured (`line_used`) and at the measured one.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from report import emit  # noqa: E402

from fashionlens.evaluation.retrieval import embed_photos  # noqa: E402
from fashionlens.models.info import update_info  # noqa: E402
from fashionlens.precision import cpu_description  # noqa: E402
from fashionlens.search import Embedder  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COPIES = 300


def clothing_photos() -> list[Path]:
    root = DATA / "clothing"
    with (root / "labels.csv").open() as fh:
        return [root / "images" / f"{r['image']}.jpg" for r in csv.DictReader(fh)
                if r["split"] in ("train", "validation")]


def edited_copy(path: Path) -> Image.Image:
    """A re-upload: borders cropped by 4 % in all, 80 % of the size, JPEG quality 70."""
    with Image.open(path) as img:
        img = img.convert("RGB")
    w, h = img.size
    dx, dy = round(w * 0.02), round(h * 0.02)
    img = img.crop((dx, dy, w - dx, h - dy))
    img = img.resize((max(1, round(img.width * 0.8)), max(1, round(img.height * 0.8))))
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=70)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def at_line(own: np.ndarray, best_other: np.ndarray, among: np.ndarray, line: float) -> dict:
    """How copies and distinct photos fall at one line."""
    return {"line": line,
            "copies_reaching_original": round(float((own >= line).mean()), 4),
            "copies_reaching_another_photo": round(float((best_other >= line).mean()), 4),
            # what the queue would list among the originals
            "distinct_pairs": int((np.triu(among, 1) >= line).sum())}


def measured_line(own: np.ndarray, best_other: np.ndarray) -> float:
    """Halfway between a copy's near-worst match with its original (5th percentile) and
    its near-best match with another photo (99th percentile)."""
    return round(float(np.percentile(best_other, 99) + np.percentile(own, 5)) / 2, 2)


def measure(model: str, photos: list[Path], chosen: list[int], threshold: float | None,
            save: bool) -> dict:
    started = time.perf_counter()
    embedder = Embedder(model)
    line_used = embedder.duplicate_threshold if threshold is None else threshold
    vectors, kept = embed_photos(embedder, photos, "photos")
    position = {photo: row for row, photo in enumerate(kept)}
    chosen = [i for i in chosen if i in position]
    copies, kept_copies = embed_photos(embedder, [edited_copy(photos[i]) for i in chosen],
                                       "copies")
    chosen = [chosen[j] for j in kept_copies]
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    copies = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    similarity = copies @ vectors.T
    own = np.array([similarity[j, position[i]] for j, i in enumerate(chosen)])
    for j, i in enumerate(chosen):
        similarity[j, position[i]] = -1.0
    best_other = similarity.max(1)
    among = vectors @ vectors.T
    np.fill_diagonal(among, -1.0)
    line = measured_line(own, best_other)
    result = {
        "model": embedder.spec, "dimension": embedder.dim, "photos": len(kept),
        "copies": len(chosen),
        "copy_vs_original": {"median": round(float(np.median(own)), 4),
                             "p5": round(float(np.percentile(own, 5)), 4)},
        "copy_vs_others": {"p99": round(float(np.percentile(best_other, 99)), 4),
                           "max": round(float(best_other.max()), 4)},
        "line_used": at_line(own, best_other, among, line_used),
        "measured_line": at_line(own, best_other, among, line),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if save:
        folder = getattr(embedder.runtime, "folder", None)
        if folder is None:
            raise SystemExit(f"{model}: not a model folder; nothing to save the line in")
        result["saved_to"] = str(update_info(folder, {"duplicate_threshold": line}))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model name or folder (repeat)")
    parser.add_argument("--threshold", type=float,
                        help="the line to measure at (default: each model's own)")
    parser.add_argument("--save", action="store_true",
                        help="write each model's measured line into its model.json")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    photos = clothing_photos()
    chosen = sorted(random.Random(0).sample(range(len(photos)), COPIES))
    result = {
        "benchmark": "duplicates", "cpu": cpu_description(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": [measure(m, photos, chosen, args.threshold, args.save)
                    for m in args.model or ["clothing10"]],
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
