""""Not a garment" benchmark: how well `unknown_score` tells garments the model knows from
everything else, per method, on photos nobody tuned to; JSON to stdout and
`benchmarks/results-unknown.json`.

    python benchmarks/unknown.py                    # bundled clothing10, runtime auto
    python benchmarks/unknown.py --save             # ... and write the scorer to model.json

Photos (all read in place from ../shared/data, or made here):

- garments the model knows: `clothing` rows whose label is one of its classes. `train`
  rows (the model trained on them) give the class prototypes and the garment side of the
  logistic fit; the photos it never trained on (`validation`, and `extra` rows of a known
  class) are split by contributor (`sender_id` hash) into a threshold half (the threshold
  refuses at most 2 % of them) and a held-out half, on which the figures are reported
  (the target figure reads the `validation` rows of that half);
- other photos, one source each: `clothing` rows labelled `Not sure` / `Skip` / `Other`;
  `products` shots of watches, fragrance and cosmetics, jewellery, bags / wallets /
  belts, eyewear, home / sports / gift items (a fixed sample per source); scenes made here
  (noise, gradients and cloud textures; drawn shapes and text; matplotlib charts;
  terrain renders of matplotlib's sample elevation data; crops of the photos
  scikit-learn ships). Each fitted source is split in halves by photo (fit / held out);
  the sources in HELD_OUT_SOURCES are never fitted on: the held-out mix holds kinds of
  photos the scorer has not seen. Leave-one-source-out repeats the fit without each
  source in turn and scores that source.

`products` shots of known garment types (studio t-shirts, trousers, dresses, shoes) are
garments too: half of them join the garment side of the fit (else a studio background
alone would read as "not a garment", as every other `products` source has one), the other
half is reported apart (share refused).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from fashionlens.inference import unknown as u  # noqa: E402
from fashionlens.inference.loading import load_runtime  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results-unknown.json"
CACHE = Path(os.environ.get("FASHIONLENS_UNKNOWN_CACHE", "/tmp/fashionlens-unknown-cache"))

PRODUCT_SOURCES = {
    "products_watches": {"Watches"},
    "products_fragrance_cosmetics": {"Fragrance", "Perfumes", "Lips", "Nails", "Makeup",
                                     "Skin Care", "Skin", "Eyes", "Hair", "Bath and Body",
                                     "Beauty Accessories"},
    "products_jewellery": {"Jewellery", "Cufflinks"},
    "products_bags_wallets_belts": {"Bags", "Wallets", "Belts"},
    "products_eyewear": {"Eyewear"},
    "products_home_sports_gifts": {"Home Furnishing", "Sports Equipment", "Water Bottle",
                                   "Umbrellas", "Free Gifts", "Vouchers",
                                   "Sports Accessories", "Wristbands"},
}
PRODUCT_GARMENTS = {"Topwear", "Bottomwear", "Dress", "Shoes"}
PER_SOURCE = 150
# Never fitted on: the held-out mix holds kinds of photos the scorer never saw.
HELD_OUT_SOURCES = ("products_eyewear", "rendered_terrain", "photo_crops")
UNSURE = {"Not sure", "Skip", "Other"}


# --- photos ----------------------------------------------------------------------------


def clothing_rows(classes: list[str]) -> dict[str, list[dict]]:
    with (DATA / "clothing" / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["path"] = str(DATA / "clothing" / "images" / f"{r['image']}.jpg")
    known = set(classes)
    return {
        "train": [r for r in rows if r["split"] == "train" and r["label"] in known],
        "unseen": [r for r in rows if r["split"] in ("validation", "extra")
                   and r["label"] in known],
        "unsure": [r for r in rows if r["label"] in UNSURE],
    }


def product_paths(seed: int = 0) -> dict[str, list[str]]:
    with (DATA / "products" / "styles.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    rng = random.Random(seed)
    found: dict[str, list[str]] = {}
    for name, subs in {**PRODUCT_SOURCES, "products_garments": PRODUCT_GARMENTS}.items():
        paths = sorted(str(DATA / "products" / "images" / f"{r['id']}.jpg") for r in rows
                       if r["subCategory"] in subs)
        rng.shuffle(paths)
        found[name] = paths[:PER_SOURCE]
    return found


def _noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    small = rng.random((scale, scale, 3))
    return np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255


def textures(n: int, seed: int = 1) -> list[Image.Image]:
    """Noise, gradients, low-frequency 'clouds' and their mixtures."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = 320
        kind = i % 4
        if kind == 0:
            a = rng.random((size, size, 3)) if rng.random() < .5 else \
                np.repeat(rng.random((size, size, 1)), 3, -1)
        elif kind == 1:
            y, x = np.mgrid[0:1:size * 1j, 0:1:size * 1j]
            c0, c1 = rng.random(3), rng.random(3)
            t = (np.cos(rng.random() * np.pi) * x + np.sin(rng.random() * np.pi) * y)
            t = (t - t.min()) / (np.ptp(t) + 1e-9)
            a = c0 * (1 - t[..., None]) + c1 * t[..., None]
        elif kind == 2:
            a = _noise(rng, size, int(rng.integers(3, 12)))
        else:
            a = 0.6 * _noise(rng, size, int(rng.integers(2, 6))) + \
                0.4 * _noise(rng, size, int(rng.integers(20, 60)))
        out.append(Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)))
    return out


def shapes(n: int, seed: int = 2) -> list[Image.Image]:
    """Random circles, boxes, polygons, lines and words on plain or noisy grounds."""
    rng = random.Random(seed)
    words = ["SALE", "hello", "42", "open", "map", "Tuesday", "ok", "data", "zone 3"]
    out = []
    for _ in range(n):
        img = Image.new("RGB", (320, 320), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randrange(2, 12)):
            colour = tuple(rng.randrange(256) for _ in range(3))
            box = sorted(rng.randrange(320) for _ in range(2)), sorted(rng.randrange(320)
                                                                       for _ in range(2))
            xy = (box[0][0], box[1][0], box[0][1] + 5, box[1][1] + 5)
            kind = rng.randrange(5)
            if kind == 0:
                draw.ellipse(xy, fill=colour)
            elif kind == 1:
                draw.rectangle(xy, fill=colour)
            elif kind == 2:
                draw.polygon([(rng.randrange(320), rng.randrange(320)) for _ in range(5)],
                             fill=colour)
            elif kind == 3:
                draw.line([(rng.randrange(320), rng.randrange(320)) for _ in range(4)],
                          fill=colour, width=rng.randrange(1, 12))
            else:
                draw.text((rng.randrange(250), rng.randrange(300)), rng.choice(words),
                          fill=colour, font_size=rng.randrange(14, 60))
        if rng.random() < .3:
            img = img.filter(ImageFilter.GaussianBlur(rng.random() * 3))
        out.append(img)
    return out


def _figure_image(fig) -> Image.Image:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def charts(n: int, seed: int = 3) -> list[Image.Image]:
    """Line, bar, scatter, pie and image charts drawn by matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        fig, ax = plt.subplots(figsize=(4, 4))
        kind = i % 5
        if kind == 0:
            for _ in range(int(rng.integers(1, 4))):
                ax.plot(np.cumsum(rng.normal(size=100)))
        elif kind == 1:
            ax.bar(range(8), rng.random(8), color=rng.random((8, 3)))
        elif kind == 2:
            ax.scatter(*rng.normal(size=(2, 200)), c=rng.random(200), s=20)
        elif kind == 3:
            ax.pie(rng.random(5) + .1)
        else:
            ax.imshow(rng.normal(size=(20, 20)).cumsum(0), cmap=rng.choice(
                ["viridis", "magma", "coolwarm", "gray"]))
        out.append(_figure_image(fig))
    return out


def terrain(n: int, seed: int = 4) -> list[Image.Image]:
    """Shaded relief of matplotlib's sample elevation data, in several colour maps and
    crops: aerial-landscape-like scenes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import cbook
    from matplotlib.colors import LightSource

    rng = np.random.default_rng(seed)
    grids = []
    for name, field in (("jacksboro_fault_dem.npz", "elevation"), ("topobathy.npz", "topo")):
        with np.load(cbook.get_sample_data(name, asfileobj=False)) as data:
            grids.append(np.asarray(data[field], dtype=float))
    cmaps = [matplotlib.colormaps[c] for c in ("terrain", "gist_earth", "copper", "YlGn",
                                                "ocean")]
    out = []
    for i in range(n):
        z = grids[i % len(grids)]
        h, w = z.shape
        side = int(rng.integers(min(h, w) // 3, min(h, w)))
        y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = z[y0:y0 + side, x0:x0 + side]
        ls = LightSource(azdeg=float(rng.uniform(0, 360)), altdeg=float(rng.uniform(20, 60)))
        rgb = ls.shade(crop, cmap=cmaps[i % len(cmaps)], blend_mode="overlay",
                       vert_exag=float(rng.uniform(0.05, 2)))
        out.append(Image.fromarray((rgb[..., :3] * 255).astype(np.uint8)).resize((320, 320)))
    return out


def photo_crops(n: int, seed: int = 5) -> list[Image.Image]:
    """Random crops of the two photos scikit-learn ships (a temple, a flower)."""
    from sklearn.datasets import load_sample_images

    rng = random.Random(seed)
    images = [Image.fromarray(a) for a in load_sample_images().images]
    out = []
    for i in range(n):
        img = images[i % len(images)]
        side = rng.randrange(120, min(img.size))
        x, y = rng.randrange(img.width - side), rng.randrange(img.height - side)
        crop = img.crop((x, y, x + side, y + side))
        out.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < .5
                   else crop)
    return out


GENERATED = {"generated_textures": textures, "generated_shapes": shapes,
             "rendered_charts": charts, "rendered_terrain": terrain,
             "photo_crops": photo_crops}


# --- running the model, cached ------------------------------------------------------


def outputs_of(rt, head: str, name: str, sources: list, names: list[str],
               cache: Path | None = None) -> u.Outputs:
    """The runtime's outputs of a set of photos, cached per model, runtime and photos (in
    `cache`, default CACHE; benchmarks/unknown_fashion.py keeps its own)."""
    cache = CACHE if cache is None else cache
    key = hashlib.sha256(json.dumps([rt.fingerprint, rt.backend, head, names]).encode()
                         ).hexdigest()[:16]
    path = cache / f"{name}-{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            vectors = data["vectors"] if data["vectors"].size else None
            return u.Outputs(data["probabilities"], vectors, [str(p) for p in data["paths"]])
    result, failed = u.collect_outputs(rt, sources, head, names=names)
    if failed:
        print(f"{name}: {len(failed)} unreadable, e.g. {failed[0]}", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, probabilities=result.probabilities,
             vectors=result.vectors if result.vectors is not None else np.zeros(0),
             paths=np.asarray(result.paths))
    return result


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("Model name")), "unknown")


def by_rows(outputs: u.Outputs, rows: list[dict], keep) -> u.Outputs:
    """The outputs of the rows `keep(row)` selects (outputs are in the rows' order,
    unreadable photos left out)."""
    chosen = {r["path"] for r in rows if keep(r)}
    return outputs.take([i for i, p in enumerate(outputs.paths) if p in chosen])


def gather(rt, head: str, rows: dict[str, list[dict]]) -> dict:
    """Every photo set the benchmark reads, as one runtime's outputs, split the same way
    for any runtime (by stable hashes of contributor ids and paths)."""
    def from_rows(name: str, chosen: list[dict]) -> u.Outputs:
        return outputs_of(rt, head, name, [r["path"] for r in chosen],
                          [r["path"] for r in chosen])

    train = from_rows("clothing_train", rows["train"])
    unseen = from_rows("clothing_unseen", rows["unseen"])
    others: dict[str, u.Outputs] = {"clothing_not_sure_skip_other":
                                    from_rows("clothing_unsure", rows["unsure"])}
    for name, paths in product_paths().items():
        others[name] = outputs_of(rt, head, name, paths, paths)
    for name, make in GENERATED.items():
        images = make(PER_SOURCE)
        others[name] = outputs_of(rt, head, name, images,
                                  [f"{name}/{i}" for i in range(len(images))])
    studio_fit, studio_test = u.split_parts(others.pop("products_garments"), 2)

    # Garments never trained on: by contributor, a threshold half and a held-out half.
    sender = {r["path"]: r["sender_id"] for r in rows["unseen"]}
    split = {r["path"]: r["split"] for r in rows["unseen"]}
    in_threshold, in_test = u.split_parts(unseen, 2, [sender[p] for p in unseen.paths])
    validation_test = in_test.take([i for i, p in enumerate(in_test.paths)
                                    if split[p] == "validation"])
    halves = {n: u.split_parts(o, 2) for n, o in others.items() if n not in HELD_OUT_SOURCES}
    return {"train": train, "in_fit": u.concat([train, studio_fit]),
            "in_threshold": in_threshold, "in_test": in_test,
            "validation_test": validation_test, "others": others, "halves": halves,
            "out_fit": {n: h[0] for n, h in halves.items()},
            "out_test": {**{n: h[1] for n, h in halves.items()},
                         **{n: others[n] for n in HELD_OUT_SOURCES}},
            "studio_fit": studio_fit, "studio_test": studio_test}


def figures(spec: u.UnknownSpec, sets: dict) -> dict:
    """The headline figures of a scorer on one runtime's held-out sets."""
    scorer = u.UnknownScorer(spec)
    held_out = u.evaluate_spec(spec, sets["in_test"], sets["out_test"])
    studio = sets["studio_test"]
    return {"held_out_auroc": held_out["auroc"],
            "held_out_false_rejection": held_out["false_rejection"],
            "validation_false_rejection": u.evaluate_spec(spec, sets["validation_test"],
                                                          {})["false_rejection"],
            "held_out_rejected_other": held_out["rejected_out_of_distribution"],
            "studio_garment_shots_refused": round(float(scorer.decide(scorer.score(
                studio.probabilities, studio.vectors)).mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clothing10")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--other-runtime", default="onnxruntime",
                        help="also score the held-out sets with this runtime's outputs")
    parser.add_argument("--max-false-rejection", type=float, default=0.02)
    parser.add_argument("--save", action="store_true",
                        help="write the chosen scorer and threshold into the model's "
                             "model.json")
    args = parser.parse_args()
    started = time.perf_counter()

    rt = load_runtime(args.model, args.runtime)
    head = u.scored_head(rt.info)
    rows = clothing_rows(rt.info.classes)
    sets = gather(rt, head, rows)
    train, in_fit, in_threshold = sets["train"], sets["in_fit"], sets["in_threshold"]
    in_test, validation_test = sets["in_test"], sets["validation_test"]
    others, halves = sets["others"], sets["halves"]
    out_fit, out_test, studio_test = sets["out_fit"], sets["out_test"], sets["studio_test"]

    spec, report = u.fit_scorer(train, in_fit, out_fit, in_threshold, head, in_test, out_test,
                                max_false_rejection=args.max_false_rejection)
    scorer = u.UnknownScorer(spec)
    held_out = report["held_out"]
    unseen_sources = u.evaluate_spec(spec, in_test, {n: others[n] for n in HELD_OUT_SOURCES})
    validation = u.evaluate_spec(spec, validation_test, {})

    # The same scorer on what another runtime gives (fp32 ONNX Runtime, or OpenVINO int8
    # when calibrated on fp32): the score reads the search vector, which int8 moves.
    other_name = args.other_runtime
    other = other_sets = None
    if other_name and other_name != rt.backend:
        other_rt = load_runtime(args.model, other_name)
        other_sets = gather(other_rt, head, rows)
        a_out, b_out = sets["in_test"], other_sets["in_test"]
        sa = scorer.score(a_out.probabilities, a_out.vectors)
        sb = scorer.score(b_out.probabilities, b_out.vectors)
        other = {"runtime": other_rt.backend, **figures(spec, other_sets),
                 "garments_max_abs_score_diff": round(float(np.abs(sa - sb).max()), 5)
                 if a_out.paths == b_out.paths else None}

    # Every method on the held-out mix, and leave-one-source-out: fitted without a source,
    # scored on it (and on the held-out garments).
    methods = {}
    for method in u.METHODS:
        m_spec, _ = u.fit_scorer(train, in_fit, out_fit, in_threshold, head, method=method,
                                 max_false_rejection=args.max_false_rejection)
        on_mix = u.evaluate_spec(m_spec, in_test, out_test)
        loso = {}
        for left in others:
            rest = {n: (halves[n][0] if n in halves else others[n]) for n in others
                    if n != left}
            l_spec, _ = u.fit_scorer(train, in_fit, rest, in_threshold, head, method=method,
                                     max_false_rejection=args.max_false_rejection)
            result = u.evaluate_spec(l_spec, in_test, {left: others[left]})
            loso[left] = {"auroc": result["auroc"],
                          "rejected": result["per_source"][left]["rejected"]}
        methods[method] = {
            "held_out_auroc": on_mix["auroc"],
            "held_out_false_rejection": on_mix["false_rejection"],
            "validation_false_rejection": u.evaluate_spec(m_spec, validation_test,
                                                          {})["false_rejection"],
            "held_out_rejected_other": on_mix["rejected_out_of_distribution"],
            "threshold": round(m_spec.threshold, 6),
            "leave_one_source_out_mean_auroc": round(float(np.mean(
                [v["auroc"] for v in loso.values()])), 4),
            "leave_one_source_out_min_auroc": round(float(np.min(
                [v["auroc"] for v in loso.values()])), 4),
            "leave_one_source_out": loso,
        }
        if other_sets is not None:
            methods[method]["on_other_runtime"] = figures(m_spec, other_sets)

    studio = scorer.score(studio_test.probabilities, studio_test.vectors)
    result = {
        "benchmark": "unknown (not a garment)",
        "model": rt.info.name or str(rt.folder),
        "runtime": rt.backend,
        "cpu": cpu_model(),
        "chosen_method": report["chosen"],
        "chosen_by": spec.calibration["chosen_by"],
        "threshold": round(spec.threshold, 6),
        "targets": {"held_out_auroc": ">= 0.95", "validation_false_rejection": "<= 0.03"},
        "held_out_auroc": held_out["auroc"],
        "validation_false_rejection": validation["false_rejection"],
        "held_out": held_out,
        "never_fitted_sources": unseen_sources,
        "validation_held_out_photos": validation["garment_photos"],
        "threshold_set": spec.calibration["threshold_set"],
        "photos": {"train_garments": len(train),
                   "studio_garments_fit": len(sets["studio_fit"]),
                   "unseen_garments_threshold": len(in_threshold),
                   "unseen_garments_held_out": len(in_test),
                   **{n: len(o) for n, o in others.items()}},
        "never_fitted": list(HELD_OUT_SOURCES),
        "methods": methods,
        "studio_garment_shots_refused": {"photos": len(studio),
                                         "refused": round(float(scorer.decide(studio).mean()),
                                                          4)},
        "same_scorer_on_other_runtime": other,
        "saved_to_model": bool(args.save),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.save:
        u.save_spec(rt.folder, spec)
    text = json.dumps(result, indent=1)
    RESULTS.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
