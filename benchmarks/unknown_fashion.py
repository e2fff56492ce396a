""""Not a garment" with every kind of fashion photo counted as fashion (issue 19): home
photos, studio shots (accessories and footwear included) and people wearing clothes
against cosmetics, free gifts and sports goods, scenes, screenshots and charts.

    python benchmarks/unknown_fashion.py                        # the bundled `fashion`
    python benchmarks/unknown_fashion.py --model products --model clothing10 \\
        --output benchmarks/results-unknown-fashion-baseline.json
    python benchmarks/unknown_fashion.py --model runs/fashion/model --save   # calibrate it

For each model: the figures of the scorer its model.json holds (`stored`, none for an
uncalibrated model) and of one calibrated here with the three kinds (`calibrated`; with
`--save` it is written into model.json, so it becomes the stored one). Both are measured
on the same held-out photos: AUROC of fashion against not fashion, overall and per
negative source (so a scorer that only learned "cosmetics" shows), and the false
rejection of each kind at the threshold.

The photo sets (`build_sets`, rebuilt the same from ../shared/data on any machine) are
written as lists and rendered images under --sets with a `sources.yaml` that
`fashionlens calibrate-unknown MODEL --sources` reads:

- known, fitted on training-split photos, measured on validation-split photos (split
  in a threshold half and a held-out half: by contributor for home photos, by photo
  otherwise): `home` = `clothing` rows of every garment label (not `Not sure`, `Skip`,
  `Other`: looked at, `Skip` and `Other` rows are garments too, so they are neither side);
  `studio` = `products` rows of masterCategory Apparel, Accessories, Footwear; `people` =
  `outfits` photos, split as configs/outfits.yaml splits them (seeded 80/20);
- not fashion, fitted on photos of the training split / seeds, measured on validation /
  other seeds: `products` Personal Care; `products` Free Items, Sporting Goods, Home;
  background-only crops of `outfits` photos (where the pixel mask is `null`); synthetic
  screenshots, charts, shapes and text; and, never fitted on, measured only: rendered
  documents, terrain renders and crops of the photos scikit-learn ships.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from fashionlens.cli import unknown_sources as us  # noqa: E402
from fashionlens.inference import unknown as u  # noqa: E402
from fashionlens.inference.loading import load_runtime  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results-unknown-fashion.json"
SETS = Path(os.environ.get("FASHIONLENS_UNKNOWN_FASHION_SETS",
                           "/tmp/fashionlens-unknown-fashion"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import unknown as generated  # noqa: E402  (benchmarks/unknown.py: textures, charts...)

FASHION = {"Apparel", "Accessories", "Footwear"}
NOT_FASHION_GOODS = {"Free Items", "Sporting Goods", "Home"}
UNSURE = {"Not sure", "Skip", "Other"}
FIT_PER_KIND = 800
STUDIO_MEASURE = 1600
FIT_OTHER = 300
TEST_OTHER = 150
TARGETS = {"auroc": ">= 0.95", "false_rejection_each_kind": "<= 0.03"}


# --- the photo sets ----------------------------------------------------------------


def _sample(items: list, n: int, seed: int) -> list:
    items = sorted(items)
    random.Random(seed).shuffle(items)
    return sorted(items[:n])


def _write_list(path: Path, photos: list) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p}\n" for p in photos))
    return str(path)


def _save(images: list[Image.Image], folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        img.convert("RGB").save(folder / f"{i:04d}.jpg", quality=90)
    return str(folder)


def outfits_split(config: Path) -> tuple[list[str], list[str]]:
    """The outfits photos a run of `config` trains on and validates on (its seeded split)."""
    from fashionlens.config import load_config
    from fashionlens.data.splits import split_train_val
    from fashionlens.training.inputs import read_run_data

    cfg = load_config(config)
    train, val = split_train_val(read_run_data(cfg), cfg.data, cfg.seed, drop_unseen=False)
    return sorted(str(s.path) for s in train.samples), sorted(str(s.path) for s in val.samples)


def background_crops(photos: list[str], per_photo: int, seed: int, limit: int
                     ) -> list[Image.Image]:
    """Square crops of outfits photos where the pixel mask says background (`null`) for
    at least 98 % of the pixels: street, walls, floors, with no person in them."""
    masks = DATA / "outfits" / "masks"
    with (DATA / "outfits" / "mask_labels.csv").open() as fh:
        null = {int(r["value"]) for r in csv.DictReader(fh) if r["name"] == "null"}
    rng = random.Random(seed)
    out: list[Image.Image] = []
    for photo in photos:
        mask_path = masks / f"{Path(photo).stem}.png"
        if not mask_path.is_file():
            continue
        mask = np.isin(np.asarray(Image.open(mask_path)), list(null))
        img = Image.open(photo).convert("RGB")
        if mask.shape != (img.height, img.width):
            continue
        integral = np.pad(mask.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        found = 0
        for _ in range(300):
            side = rng.randrange(64, max(65, min(mask.shape) // 2))
            if side >= min(mask.shape):
                continue
            y, x = rng.randrange(mask.shape[0] - side), rng.randrange(mask.shape[1] - side)
            inside = (integral[y + side, x + side] - integral[y, x + side]
                      - integral[y + side, x] + integral[y, x])
            if inside >= 0.98 * side * side:
                out.append(img.crop((x, y, x + side, y + side)))
                found += 1
                if found >= per_photo:
                    break
        if len(out) >= limit:
            break
    return out


WORDS = ["home", "settings", "profile", "search", "cart", "checkout", "order", "total",
         "price", "account", "login", "password", "email", "sync", "update", "download",
         "share", "photo", "gallery", "message", "reply", "send", "report", "weekly",
         "revenue", "users", "active", "chart", "table", "filter", "export", "help", "about"]


def screenshots(n: int, seed: int) -> list[Image.Image]:
    """App and web-page screenshots: title bars, side menus, text lines, buttons, input
    boxes, table grids, on light or dark themes."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        w, h = rng.choice([(360, 640), (640, 400), (480, 480), (800, 500)])
        dark = rng.random() < 0.3
        ground = (rng.randrange(20, 50),) * 3 if dark else (rng.randrange(235, 256),) * 3
        ink = (230, 230, 230) if dark else (rng.randrange(0, 60),) * 3
        accent = tuple(rng.randrange(256) for _ in range(3))
        img = Image.new("RGB", (w, h), ground)
        draw = ImageDraw.Draw(img)
        bar = rng.randrange(30, 60)
        draw.rectangle((0, 0, w, bar), fill=accent)
        draw.text((12, bar // 4), " ".join(rng.choices(WORDS, k=2)).title(),
                  fill=(255, 255, 255), font_size=bar // 2)
        left = 0
        if w > 400 and rng.random() < 0.6:
            left = rng.randrange(100, 180)
            draw.rectangle((0, bar, left, h), fill=tuple(max(0, c - 15) for c in ground))
            for i in range(rng.randrange(4, 10)):
                draw.text((12, bar + 15 + 28 * i), rng.choice(WORDS), fill=ink, font_size=15)
        y = bar + 15
        while y < h - 30:
            kind = rng.random()
            if kind < 0.5:
                draw.text((left + 15, y), " ".join(rng.choices(WORDS, k=rng.randrange(2, 9))),
                          fill=ink, font_size=rng.choice([12, 14, 16, 20]))
                y += rng.randrange(20, 34)
            elif kind < 0.7:
                bw = rng.randrange(80, 160)
                draw.rounded_rectangle((left + 15, y, left + 15 + bw, y + 32), radius=6,
                                       fill=accent)
                draw.text((left + 25, y + 8), rng.choice(WORDS).upper(), fill=(255, 255, 255),
                          font_size=14)
                y += 46
            elif kind < 0.85:
                draw.rectangle((left + 15, y, w - 15, y + 30), outline=ink, width=1)
                draw.text((left + 22, y + 8), rng.choice(WORDS) + "...", fill=(150, 150, 150),
                          font_size=13)
                y += 44
            else:
                rows, cols = rng.randrange(3, 7), rng.randrange(2, 5)
                cw = (w - left - 30) // cols
                for r in range(rows):
                    for c in range(cols):
                        x0, y0 = left + 15 + c * cw, y + r * 24
                        draw.rectangle((x0, y0, x0 + cw, y0 + 24), outline=ink)
                        draw.text((x0 + 4, y0 + 5), str(rng.randrange(1000)) if c else
                                  rng.choice(WORDS), fill=ink, font_size=12)
                y += rows * 24 + 14
        out.append(img)
    return out


def documents(n: int, seed: int) -> list[Image.Image]:
    """Pages of text: paragraphs, headings and a ruled table (a scanned receipt or a
    letter): never fitted on."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        img = Image.new("RGB", (420, 560), (rng.randrange(225, 256),) * 3)
        draw = ImageDraw.Draw(img)
        y = 30
        draw.text((30, y), " ".join(rng.choices(WORDS, k=3)).upper(), fill=(0, 0, 0),
                  font_size=24)
        y += 50
        while y < 520:
            if rng.random() < 0.8:
                draw.text((30, y), " ".join(rng.choices(WORDS, k=rng.randrange(5, 9))),
                          fill=(20, 20, 20), font_size=13)
                y += 20
            else:
                draw.line((30, y + 6, 390, y + 6), fill=(90, 90, 90))
                y += 16
        out.append(img)
    return out


def build_sets(folder: Path, outfits_config: Path) -> Path:
    """Write the photo lists, the rendered photos and `sources.yaml` under `folder`;
    return the YAML's path. The same data and seeds give the same sets."""
    folder.mkdir(parents=True, exist_ok=True)
    lists, images = folder / "lists", folder / "images"
    with (DATA / "clothing" / "labels.csv").open() as fh:
        clothing = list(csv.DictReader(fh))
    with (DATA / "products" / "styles.csv").open() as fh:
        products = list(csv.DictReader(fh))

    def product_photos(categories: set[str], split: str) -> list[str]:
        return [str(DATA / "products" / "images" / f"{r['id']}.jpg") for r in products
                if r["masterCategory"] in categories and r["split"] == split]

    home_train = [str(DATA / "clothing" / "images" / f"{r['image']}.jpg") for r in clothing
                  if r["split"] == "train" and r["label"] not in UNSURE]
    people_train, people_val = outfits_split(outfits_config)
    known = {
        "home": {"fit": _write_list(lists / "home-fit.txt",
                                    _sample(home_train, FIT_PER_KIND, 1)),
                 "measure": {"csv": str(DATA / "clothing" / "labels.csv"),
                             "image_column": "image", "image_dir": "images",
                             "image_extension": ".jpg", "where": {"split": "validation"},
                             "exclude": {"label": sorted(UNSURE)},
                             "group_column": "sender_id"}},
        "studio": {"fit": _write_list(lists / "studio-fit.txt", _sample(
                       product_photos(FASHION, "train"), FIT_PER_KIND, 2)),
                   "measure": _write_list(lists / "studio-measure.txt", _sample(
                       product_photos(FASHION, "validation"), STUDIO_MEASURE, 3))},
        "people": {"fit": _write_list(lists / "people-fit.txt",
                                      _sample(people_train, FIT_PER_KIND, 4)),
                   "measure": _write_list(lists / "people-measure.txt", people_val)},
    }
    other = {
        "products_personal_care": {
            "fit": _write_list(lists / "personal-care-fit.txt", _sample(
                product_photos({"Personal Care"}, "train"), FIT_OTHER, 5)),
            "test": _write_list(lists / "personal-care-test.txt",
                                product_photos({"Personal Care"}, "validation"))},
        "products_free_sporting_home": {
            "fit": _write_list(lists / "goods-fit.txt",
                               product_photos(NOT_FASHION_GOODS, "train")),
            "test": _write_list(lists / "goods-test.txt",
                                product_photos(NOT_FASHION_GOODS, "validation"))},
        "outfits_background": {
            "fit": _save(background_crops(people_train, 1, 6, FIT_OTHER),
                         images / "outfits_background" / "fit"),
            "test": _save(background_crops(people_val, 2, 7, TEST_OTHER),
                          images / "outfits_background" / "test")},
        "screenshots": {"fit": _save(screenshots(FIT_OTHER // 2, 10),
                                     images / "screenshots" / "fit"),
                        "test": _save(screenshots(TEST_OTHER, 11),
                                      images / "screenshots" / "test")},
    }
    for name, seeds in (("charts", (20, 21)), ("shapes_text", (22, 23)),
                        ("textures", (24, 25))):
        make = {"charts": generated.charts, "shapes_text": generated.shapes,
                "textures": generated.textures}[name]
        other[name] = {"fit": _save(make(FIT_OTHER // 2, seeds[0]), images / name / "fit"),
                       "test": _save(make(TEST_OTHER // 2, seeds[1]), images / name / "test")}
    other["documents"] = {"test": _save(documents(TEST_OTHER // 2, 30),
                                        images / "documents" / "test")}
    other["terrain"] = {"test": _save(generated.terrain(TEST_OTHER // 2, 31),
                                      images / "terrain" / "test")}
    other["photo_crops"] = {"test": _save(generated.photo_crops(TEST_OTHER // 2, 32),
                                          images / "photo_crops" / "test")}
    path = folder / "sources.yaml"
    path.write_text("# Made by benchmarks/unknown_fashion.py (build_sets); "
                    "read by `fashionlens calibrate-unknown MODEL --sources`.\n"
                    + yaml.safe_dump({"known": known, "other": other}, sort_keys=False))
    return path


# --- measuring ---------------------------------------------------------------------


def cached_outputs(rt, head: str, cache: Path):
    def outputs_of(name: str, photos: us.Photos) -> u.Outputs:
        return generated.outputs_of(rt, head, name, list(photos.paths),
                                    [str(p) for p in photos.paths], cache)
    return outputs_of


def figures(spec: u.UnknownSpec, sets: dict) -> dict:
    """A scorer on the held-out photos: AUROC overall, per kind and per negative source;
    false rejection per kind and share refused per source at its threshold."""
    test = u.pooled(sets["in_test"])
    overall = u.evaluate_spec(spec, test, sets["out_test"])
    kinds = {k: u.evaluate_spec(spec, o, sets["out_test"]) for k, o in sets["in_test"].items()}
    return {
        "threshold": overall["threshold"],
        "auroc": overall["auroc"],
        "false_rejection": {k: f["false_rejection"] for k, f in kinds.items()},
        "worst_false_rejection": max(f["false_rejection"] for f in kinds.values()),
        "auroc_per_kind": {k: f["auroc"] for k, f in kinds.items()},
        "auroc_per_source": {n: f["auroc"] for n, f in overall["per_source"].items()},
        "refused_per_source": {n: f["rejected"] for n, f in overall["per_source"].items()},
        "refused_not_fashion": overall["rejected_out_of_distribution"],
    }


def measure(model: str, runtime: str, sources: us.Sources, cache: Path, save: bool,
            max_false_rejection: float) -> dict:
    rt = load_runtime(model, runtime)
    head = u.scored_head(rt.info)
    sets = us.gather_kinds(sources, cached_outputs(rt, head, cache))
    stored = u.scorer_for(rt.info)
    result = {"model": rt.info.name or str(rt.folder), "folder": str(rt.folder),
              "runtime": rt.backend, "head": head,
              "photos": {"fit": {"garments": len(sets["in_fit"]),
                                 **{n: len(o) for n, o in sets["out_fit"].items()}},
                         "threshold": {k: len(o) for k, o in sets["in_threshold"].items()},
                         "held_out": {**{k: len(o) for k, o in sets["in_test"].items()},
                                      **{n: len(o) for n, o in sets["out_test"].items()}}},
              "stored": None if stored is None else {
                  "method": stored.spec.method, **figures(stored.spec, sets)}}
    spec, report = us.calibrate_kinds(sets, head, max_false_rejection=max_false_rejection)
    result["calibrated"] = {
        "method": report["chosen"], "max_false_rejection_on_threshold_set":
        max_false_rejection, "threshold_decided_by": spec.calibration["threshold_decided_by"],
        **figures(spec, sets),
        "methods": {n: {k: v for k, v in m.items() if k != "features"}
                    for n, m in report["methods"].items()}}
    result["never_fitted_sources"] = report["never_fitted"]
    if save:
        u.save_spec(rt.folder, spec)
        result["saved_to"] = str(Path(rt.folder) / "model.json")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append",
                        help="a model name or folder (repeatable; default: fashion)")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--sets", type=Path, default=SETS,
                        help="where the photo lists, rendered photos and sources.yaml go")
    parser.add_argument("--outfits-config", type=Path, default=ROOT / "configs" / "outfits.yaml",
                        help="the run config whose seeded split says which outfits photos "
                             "are training and which validation")
    parser.add_argument("--max-false-rejection", type=float, default=0.02,
                        help="per kind, on the threshold half")
    parser.add_argument("--save", action="store_true",
                        help="write the scorer calibrated here into the model's model.json")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    from fashionlens.precision import cpu_description

    sources = us.read_sources(build_sets(args.sets, args.outfits_config))
    models = {}
    for model in args.model or ["fashion"]:
        models[model] = measure(model, args.runtime, sources, args.sets / "cache", args.save,
                                args.max_false_rejection)
    result = {"benchmark": "unknown_fashion (not a garment, three kinds of photo)",
              "cpu": cpu_description()["model"], "targets": TARGETS,
              "sources": str(args.sets / "sources.yaml"), "models": models,
              "seconds": round(time.perf_counter() - started, 1)}
    text = json.dumps(result, indent=1)
    if args.output:
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
