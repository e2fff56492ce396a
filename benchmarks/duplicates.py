"""Benchmark: does the near-duplicate threshold hold for a model? Prints JSON.

    python benchmarks/duplicates.py --model fashion --model clothing10

`search.query.DUPLICATE_THRESHOLD` (cosine similarity) decides which catalog items
`catalog duplicates` and the review queue list as the same photo. For each model, on the
clothing train + validation photos (3,409): 300 of them (seeded) get a lightly edited copy
(4 % cropped off the borders, resized to 80 %, saved as JPEG quality 70, what a re-upload
does), and each copy is compared with its original (should reach the threshold) and with
every other photo (should not).
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
from fashionlens.precision import cpu_description  # noqa: E402
from fashionlens.search import Embedder  # noqa: E402
from fashionlens.search.query import DUPLICATE_THRESHOLD  # noqa: E402

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


def measure(model: str, photos: list[Path], chosen: list[int], threshold: float) -> dict:
    started = time.perf_counter()
    embedder = Embedder(model)
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
    # distinct photos at or above the threshold: what the queue would list among originals
    among = vectors @ vectors.T
    np.fill_diagonal(among, -1.0)
    pairs = int((np.triu(among, 1) >= threshold).sum())
    return {
        "model": embedder.spec, "dimension": embedder.dim, "photos": len(kept),
        "copies": len(chosen),
        "copy_vs_original": {"share_at_threshold": round(float((own >= threshold).mean()), 4),
                             "median": round(float(np.median(own)), 4),
                             "p5": round(float(np.percentile(own, 5)), 4)},
        "copy_vs_others": {"share_at_threshold": round(float((best_other >= threshold).mean()),
                                                       4),
                           "p99": round(float(np.percentile(best_other, 99)), 4),
                           "max": round(float(best_other.max()), 4)},
        "distinct_pairs_at_threshold": pairs,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model name or folder (repeat)")
    parser.add_argument("--threshold", type=float, default=DUPLICATE_THRESHOLD)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    photos = clothing_photos()
    chosen = sorted(random.Random(0).sample(range(len(photos)), COPIES))
    result = {
        "benchmark": "duplicates", "cpu": cpu_description(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "threshold": args.threshold,
        "results": [measure(m, photos, chosen, args.threshold)
                    for m in args.model or ["default"]],
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
