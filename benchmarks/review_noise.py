"""Review-queue benchmark: inject known noise into a copy of clothing's train labels and
measure how well `fashionlens review` finds it; then train on noisy and cleaned labels.

- Noise: 10 % of the train photos get another class at random (uniform over the other
  9), and 3 % are copied with small edits (a 2-5 % crop, a resize to 80-95 %, JPEG
  quality 70-85, brightness +-5 %) into a temporary folder (never into the data). The
  noisy CSV lists the originals by absolute path and the copies.
- The queue is built as `fashionlens review` builds it (same library calls), once per
  embedding model given (`--model`, repeatable).
- Mislabels: the queue's mislabel entries in its order (cleanlab's ranking); precision
  and recall of the first 15 % of the photos' count, and of everything cleanlab flagged.
  A flag on a photo whose label was not flipped counts as wrong, although some are
  real mislabels of the original data.
- Duplicates: an injected copy counts as found when a duplicate entry names it with
  its original. Precision is given twice: strict (every other duplicate entry counts as
  wrong), and against what is there (entries between two original photos, the same
  garment photographed twice by its owner, counted apart and excluded).
- Training: a logistic-regression probe (the project's linear-probe recipe: C 0.5) on
  the same features, fitted on the noisy labels, on the labels cleaned by accepting the
  queue (copies dropped, the first 15 % relabelled to the suggested class), and on the
  true labels; accuracy on the 341 validation photos.

    flock /tmp/fashionlens-bench.lock python benchmarks/review_noise.py \\
        --model efficientnet_lite0 --model clothing10
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402

from fashionlens.curation.dataset import load_curation_set  # noqa: E402
from fashionlens.curation.review import build_queue  # noqa: E402
from fashionlens.curation.scan import scan_photos  # noqa: E402
from fashionlens.data.sources import DataSpec  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "clothing"
RESULTS = Path(__file__).resolve().parent / "results-review-noise.json"
FLIP, DUPLICATE, TOP = 0.10, 0.03, 0.15


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def edited_copy(source: Path, target: Path, rng: random.Random) -> None:
    """A small edit a re-upload would make: crop, resize, brightness, JPEG quality."""
    with Image.open(source) as img:
        img = img.convert("RGB")
        w, h = img.size
        dx, dy = int(w * rng.uniform(0.02, 0.05)), int(h * rng.uniform(0.02, 0.05))
        img = img.crop((dx // 2, dy // 2, w - (dx - dx // 2), h - (dy - dy // 2)))
        scale = rng.uniform(0.80, 0.95)
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))))
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.95, 1.05))
        img.save(target, "JPEG", quality=rng.randint(70, 85))


def make_noisy(folder: Path, seed: int) -> dict:
    """The noisy CSV and what was injected; returns truth for scoring."""
    rng = random.Random(seed)
    with (DATA / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] in ("train", "validation")]
    train = [r for r in rows if r["split"] == "train"]
    classes = sorted({r["label"] for r in train})
    true = {}
    out_rows = []
    flipped_ids = set(rng.sample(range(len(train)), round(FLIP * len(train))))
    copy_ids = rng.sample(range(len(train)), round(DUPLICATE * len(train)))
    (folder / "copies").mkdir(parents=True)
    copies = {}
    for i, r in enumerate(train):
        path = str(DATA / "images" / f"{r['image']}.jpg")
        label = r["label"]
        true[path] = label
        if i in flipped_ids:
            label = rng.choice([c for c in classes if c != label])
        out_rows.append({"image": path, "label": label, "split": "train",
                         "sender_id": r["sender_id"]})
    for i in copy_ids:
        src = Path(out_rows[i]["image"])
        target = folder / "copies" / f"copy-{src.stem}.jpg"
        edited_copy(src, target, rng)
        copies[str(target.resolve())] = str(src)
        true[str(target.resolve())] = true[str(src)]
        out_rows.append({**out_rows[i], "image": str(target.resolve())})
    noisy_csv = folder / "noisy.csv"
    with noisy_csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "label", "split", "sender_id"])
        writer.writeheader()
        writer.writerows(out_rows)
    flipped = {out_rows[i]["image"] for i in flipped_ids}
    val = [(str(DATA / "images" / f"{r['image']}.jpg"), r["label"]) for r in rows
           if r["split"] == "validation"]
    return {"csv": noisy_csv, "flipped": flipped, "copies": copies, "true": true,
            "classes": classes, "validation": val, "train_photos": len(train)}


def pr(found: int, flagged: int, total: int) -> dict:
    return {"flagged": flagged, "correct": found,
            "precision": round(found / flagged, 4) if flagged else None,
            "recall": round(found / total, 4) if total else None}


def probe_accuracy(x: np.ndarray, labels: list[str], xv: np.ndarray, yv: list[str]) -> float:
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=0.5, max_iter=1000).fit(x, labels)
    return round(float(np.mean(probe.predict(xv) == np.array(yv))), 4)


def hash_distances(scan, truth: dict, photos) -> dict:
    """pHash bits between each copy and its original, and each original's nearest other
    original: how far PHASH_DISTANCE sits from both."""
    index = {str(p.path.resolve()): i for i, p in enumerate(photos)}
    codes = scan.phash
    copy_bits = [int(np.bitwise_count(codes[index[c]] ^ codes[index[o]]))
                 for c, o in truth["copies"].items()]
    originals = np.array([index[p] for p in truth["true"] if p not in truth["copies"]])
    vals = codes[originals]
    nearest = []
    for start in range(0, len(vals), 512):
        bits = np.bitwise_count(vals[start:start + 512, None] ^ vals[None, :]).astype(int)
        for r in range(bits.shape[0]):
            bits[r, start + r] = 99
        nearest.extend(bits.min(axis=1).tolist())
    nearest = np.array(nearest)
    return {"copy_to_original_bits_max": max(copy_bits),
            "copy_to_original_bits_p95": float(np.percentile(copy_bits, 95)),
            "original_nearest_other_bits_min": int(nearest.min()),
            "originals_with_another_within_8_bits": int((nearest <= 8).sum())}


def measure(model: str, truth: dict, cache: Path, seed: int) -> dict:
    spec = DataSpec(path=str(truth["csv"]), split_column="split", group_column="sender_id")
    data = load_curation_set(spec, seed=seed)
    t0 = time.perf_counter()
    # One cache key across runs (the CSV lives in a new temporary folder each time).
    scan = scan_photos([p.path for p in data.photos], "review-noise-benchmark", model=model,
                       cache_dir=cache, threads=2)
    t_scan = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = build_queue(data, scan, seed=seed)
    t_queue = time.perf_counter() - t0
    entries = result.queue["entries"]
    n = len(data.photos)
    key = {p.id: str(p.path.resolve()) for p in data.photos}
    # mislabels
    mis = [key[e["photo"]] for e in entries if e["reason"] == "mislabel"]
    flipped = truth["flipped"]
    top = mis[:round(TOP * n)]
    mislabels = {
        "injected": len(flipped), "top_fraction": TOP, "top_size": round(TOP * n),
        "top": pr(sum(p in flipped for p in top), len(top), len(flipped)),
        "all_flagged": pr(sum(p in flipped for p in mis), len(mis), len(flipped)),
    }
    # duplicates: an entry names a copy and its original (as subject or related)
    copies = truth["copies"]
    dup = [e for e in entries if e["reason"] in ("duplicate", "leakage")]
    sources: dict[str, set[str]] = {}
    for c, o in copies.items():
        sources.setdefault(o, set()).add(c)
    found, injected_entries, between_originals = set(), 0, []
    for e in dup:
        subject = key[e["photo"]]
        related = {str(Path(r["path"]).resolve()) for r in e["related"]}
        if subject in copies and copies[subject] in related:
            found.add(subject)
            injected_entries += 1
        elif sources.get(subject, set()) & related:
            found.update(sources[subject] & related)
            injected_entries += 1
        elif not ({subject} | related) & set(copies):
            between_originals.append(e)
    strict = pr(injected_entries, len(dup), len(copies))
    strict["recall"] = round(len(found) / len(copies), 4)
    own = pr(injected_entries, len(dup) - len(between_originals), len(copies))
    own["recall"] = strict["recall"]
    sims = [float(e["why"].split("embedding similarity ")[1].split(")")[0].split(",")[0])
            for e in between_originals if "embedding similarity" in e["why"]]
    duplicates = {
        "injected": len(copies), "strict": strict, "excluding_pairs_of_original_photos": own,
        "pairs_of_original_photos": len(between_originals),
        "pairs_of_original_photos_similarity_min": round(min(sims), 3) if sims else None,
        **hash_distances(scan, truth, data.photos),
    }
    # training: noisy vs cleaned (accepting the queue) vs true labels
    index = {key[p.id]: i for i, p in enumerate(data.photos)}
    noisy = {key[p.id]: p.labels[0] for p in data.photos}
    cleaned = dict(noisy)
    for e in entries:
        if e["reason"] == "duplicate" or e["reason"] == "leakage":
            cleaned.pop(key[e["photo"]], None)
    for e in [e for e in entries if e["reason"] == "mislabel"][:round(TOP * n)]:
        if key[e["photo"]] in cleaned and e["suggested"]:
            cleaned[key[e["photo"]]] = e["suggested"][0]
    val_scan = scan_photos([Path(p) for p, _ in truth["validation"]], str(DATA / "labels.csv"),
                           model=model, cache_dir=cache, threads=2)
    xv, yv = val_scan.vectors, [label for _, label in truth["validation"]]
    vectors = scan.vectors

    def fit(labels: dict[str, str]) -> float:
        paths = list(labels)
        return probe_accuracy(vectors[[index[p] for p in paths]], [labels[p] for p in paths],
                              xv, yv)

    training = {
        "recipe": "LogisticRegression(C=0.5) on the review's embedding vectors (linear probe)",
        "noisy_labels": fit(noisy), "cleaned_by_queue": fit(cleaned),
        "true_labels_no_copies": fit({p: truth["true"][p] for p in noisy if p not in copies}),
        "photos": {"noisy": len(noisy), "cleaned": len(cleaned)},
        "validation_photos": len(yv),
    }
    return {"model": scan.model, "photos": n, "seconds": {"measure_photos": round(t_scan, 1),
                                                          "queue": round(t_queue, 1)},
            "queue_counts": result.queue["counts"], "mislabels": mislabels,
            "duplicates": duplicates, "training": training,
            "targets": {
                "mislabels_recall_ge_0.8_at_precision_ge_0.5_in_top_15pct":
                    mislabels["top"]["recall"] >= 0.8 and mislabels["top"]["precision"] >= 0.5,
                "duplicates_recall_ge_0.95_at_precision_ge_0.9_strict":
                    strict["recall"] >= 0.95 and strict["precision"] >= 0.9,
                "duplicates_recall_ge_0.95_at_precision_ge_0.9_excluding_original_pairs":
                    own["recall"] >= 0.95 and (own["precision"] or 0) >= 0.9}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", help="embedding model (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None,
                        help="scan cache folder (default: a temporary one)")
    args = parser.parse_args()
    models = args.model or ["efficientnet_lite0", "clothing10"]
    with tempfile.TemporaryDirectory(prefix="review-noise-") as tmp:
        folder = Path(tmp)
        truth = make_noisy(folder / "data", args.seed)
        cache = args.cache or folder / "cache"
        runs = {m: measure(m, truth, cache, args.seed) for m in models}
    report = {"benchmark": "review_noise", "data": "clothing train split (3,068 photos) + "
              "validation (341) for the probe's accuracy", "cpu": cpu_model(),
              "threads": 2, "seed": args.seed,
              "noise": {"flipped": FLIP, "duplicated_with_edits": DUPLICATE,
                        "train_photos": truth["train_photos"]},
              "models": runs}
    text = json.dumps(report, indent=1)
    print(text)
    RESULTS.write_text(text + "\n")


if __name__ == "__main__":
    main()
