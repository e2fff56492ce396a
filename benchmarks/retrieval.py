"""Search-quality benchmark on ../shared/data; prints one JSON object.

- pairs: each clothing validation photo and its simulated re-shot view (`data.reshoot`,
  fixed seed); every photo queries the other 2N-1; top-1/5/10 of finding its pair.
- category: same-category precision@10, clothing validation photos querying a gallery of
  the clothing training photos.
- steering: on products, pattern labels from productDisplayName keywords; directions
  learned on one half of the products, the share of top-10 results with the pattern
  measured on the other half as the steering weight rises.

    python benchmarks/retrieval.py --model clothing10 --model efficientnet_lite0
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

from fashionlens.evaluation.retrieval import (  # noqa: E402
    category_protocol,
    embed_photos,
    pairs_protocol,
    steering_curve,
)
from fashionlens.search import Embedder  # noqa: E402
from fashionlens.search.steering import pattern_of  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5]
PATTERNS = ["striped", "checked", "printed", "solid"]


def clothing(split: str) -> list[tuple[Path, str]]:
    root = DATA / "clothing"
    with (root / "labels.csv").open() as fh:
        return [(root / "images" / f"{r['image']}.jpg", r["label"])
                for r in csv.DictReader(fh) if r["split"] == split]


# The steering protocol compares every catalog item with every other (quadratic): on the
# 30,000 products the data set now holds it ran for over half an hour per model, so it
# reads the first rows only, about as many as the set had when the benchmark was written.
STEERING_PRODUCTS = 2000


def products(limit: int = STEERING_PRODUCTS) -> list[tuple[Path, str | None]]:
    root = DATA / "products"
    with (root / "styles.csv").open() as fh:
        rows = list(csv.DictReader(fh))[:limit]
    return [(root / "images" / f"{r['id']}.jpg", pattern_of(r["productDisplayName"]))
            for r in rows]


def measure(model: str) -> dict:
    started = time.perf_counter()
    embedder = Embedder(model)
    train, val = clothing("train"), clothing("validation")
    result: dict = {"model": embedder.spec, "dimension": embedder.dim}
    result["pairs"] = pairs_protocol(embedder, [p for p, _ in val], seed=0)
    category = category_protocol(embedder, val, train, k=10)
    result["category"] = {k: v for k, v in category.items() if k != "per_label"}
    result["category"]["per_label"] = {k: round(v, 4) for k, v in category["per_label"].items()}
    shop = products()
    vectors, kept_p = embed_photos(embedder, [p for p, _ in shop])
    labels = [shop[i][1] for i in kept_p]
    result["steering"] = [steering_curve(vectors, labels, pattern, WEIGHTS, k=10, seed=0)
                          for pattern in PATTERNS]
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help="model folder, bundled name, or backbone name (repeatable; "
                             "default: clothing10)")
    args = parser.parse_args()
    results = [measure(m) for m in args.model or ["clothing10"]]
    print(json.dumps({"data": str(DATA), "load_average": os.getloadavg(),
                      "results": results}, indent=1))


if __name__ == "__main__":
    main()
