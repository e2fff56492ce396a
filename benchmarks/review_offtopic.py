"""Off-topic photos in the review queue: photos that are not garments, filed under a
garment class, among real garment photos; how many `fashionlens review` lists, by which
check, and how many real garments it lists by mistake.

- Garments: `clothing` rows of the model's classes from the `validation` and `extra`
  splits whose contributor (`sender_id`) falls in the half that `benchmarks/unknown.py`
  keeps out of the "not a garment" calibration (neither fitted nor used for the
  threshold): photos the scorer never saw, from people it never saw.
- Off-topic: 40 photos from each of the three sources the calibration never used
  (`benchmarks/unknown.py`'s HELD_OUT_SOURCES: product shots of eyewear, rendered
  terrain, crops of scikit-learn's sample photos), written as JPEGs into a temporary
  folder and filed under a random garment class, as a mis-filed upload would be.
- The queue is built as `fashionlens review` builds it (same library calls) with the
  bundled model; the two checks that can catch such photos are counted apart: `off-topic`
  (the model's calibrated unknown_score at its threshold) and `outlier` (distance to the
  nearest photos beyond Tukey's far-out fence).

    flock /tmp/fashionlens-bench.lock python benchmarks/review_offtopic.py
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import unknown as calibration  # noqa: E402  (benchmarks/unknown.py: the photo sources)
from PIL import Image  # noqa: E402
from report import emit  # noqa: E402

from fashionlens.curation.dataset import load_curation_set  # noqa: E402
from fashionlens.curation.review import build_queue  # noqa: E402
from fashionlens.curation.scan import scan_photos  # noqa: E402
from fashionlens.data.sources import DataSpec  # noqa: E402
from fashionlens.inference import unknown as u  # noqa: E402
from fashionlens.models.info import read_info  # noqa: E402
from fashionlens.models.resolve import resolve_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results-review-offtopic.json"
PER_SOURCE = 40


def garment_rows(classes: list[str]) -> list[dict]:
    rows = calibration.clothing_rows(classes)["unseen"]
    return [r for r in rows if u.holdout_part(r["sender_id"], 2) == 1]


def off_topic_photos(folder: Path, classes: list[str], seed: int) -> list[dict]:
    rng = random.Random(seed)
    made = []
    eyewear = calibration.product_paths()["products_eyewear"][:PER_SOURCE]
    sources = {"products_eyewear": [Image.open(p) for p in eyewear],
               "rendered_terrain": calibration.terrain(PER_SOURCE),
               "photo_crops": calibration.photo_crops(PER_SOURCE)}
    for name, images in sources.items():
        for i, img in enumerate(images):
            path = folder / f"{name}-{i:02d}.jpg"
            img.convert("RGB").save(path, "JPEG", quality=90)
            made.append({"path": str(path), "label": rng.choice(classes), "source": name})
    return made


def rate(found: int, total: int) -> float | None:
    return round(found / total, 4) if total else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="clothing10")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    classes = read_info(resolve_model(args.model).folder).classes
    garments = garment_rows(classes)
    with tempfile.TemporaryDirectory(prefix="fashionlens-offtopic-") as tmp:
        folder = Path(tmp)
        injected = off_topic_photos(folder, classes, args.seed)
        table = folder / "labels.csv"
        with table.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["image", "label"])
            for row in garments + injected:
                writer.writerow([row["path"], row["label"]])
        started = time.perf_counter()
        data = load_curation_set(DataSpec(path=str(table)))
        scan = scan_photos([p.path for p in data.photos], data.source, model=args.model,
                           runtime=args.runtime, cache_dir=folder / "cache")
        queue = build_queue(data, scan).queue
        seconds = time.perf_counter() - started
    source_of = {r["path"]: r["source"] for r in injected}
    by_reason: dict[str, set[str]] = {}
    for entry in queue["entries"]:
        by_reason.setdefault(entry["reason"], set()).add(entry["path"])
    checks = {"off-topic": by_reason.get("off-topic", set()),
              "outlier": by_reason.get("outlier", set())}
    checks["either"] = checks["off-topic"] | checks["outlier"]
    figures = {}
    for name, listed in checks.items():
        caught = [p for p in listed if p in source_of]
        figures[name] = {
            "off_topic_found": len(caught), "off_topic_recall": rate(len(caught), len(injected)),
            "per_source_recall": {s: rate(sum(source_of.get(p) == s for p in caught),
                                          PER_SOURCE) for s in dict.fromkeys(source_of.values())},
            "garments_listed": len(listed) - len(caught),
            "garments_listed_rate": rate(len(listed) - len(caught), len(garments)),
            "precision": rate(len(caught), len(listed))}
    # What --unknown-threshold would list instead (a person reviews the queue, so a lower
    # line than the refusal threshold can pay).
    score_of = dict(zip([str(p) for p in scan.paths], scan.unknown_scores.tolist(),
                        strict=True))
    sweep = []
    for threshold in (0.5, 0.8, 0.9, 0.95, scan.unknown_threshold):
        listed = {p for p, s in score_of.items() if s >= threshold}
        caught = sum(p in source_of for p in listed)
        sweep.append({"unknown_threshold": threshold,
                      "off_topic_recall": rate(caught, len(injected)),
                      "garments_listed_rate": rate(len(listed) - caught, len(garments))})
    result = {
        "model": scan.model, "runtime": args.runtime,
        "unknown_threshold": scan.unknown_threshold,
        "garment_photos": len(garments), "off_topic_photos": len(injected),
        "checks": figures, "off_topic_check_at_other_thresholds": sweep,
        "queue_counts": queue["counts"],
        "seconds_scan_and_queue": round(seconds, 1),
        "cpu": calibration.cpu_model(), "cores": os.cpu_count(),
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
