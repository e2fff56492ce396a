"""Scale benchmark: a synthetic 1,000,000-item catalog, built and searched as users would.

    python benchmarks/scale_catalog.py                  # 1M items, the default model's dim
    python benchmarks/scale_catalog.py --n 100000       # a quick run
    python benchmarks/scale_catalog.py --dim 256        # another dimension

Prints one JSON object (and writes it to --out, by default benchmarks/results-scale.json
for a full-size run): build times, memory, p50/p99 latency of single-query searches with
and without a filter that keeps 10 % of the items, recall@10 against exact search, the
flat-search latency curve that sets the exact/IVF switch, and the machine's load.

The vectors. ANN recall on isotropic noise says nothing about real embeddings, so the
catalog is grown from real ones: every usable photo of ../shared/data/clothing and
../shared/data/products is embedded once with `clothing10`'s `Embedder` (cached under
runs/scale-cache/, keyed by the model's fingerprint). 10 % of those photos are held out
for queries. Each catalog vector is `w * a + (1 - w) * b + noise`, where `a` is a random
source photo, `b` another photo of the same category, `w ~ U(0.55, 1)`, and the noise is
Gaussian with, per dimension, `--noise` (0.5) times the real vectors' standard deviation;
when the real vectors are non-negative (pooled features), negative values are clipped to
0; the result is L2-normalised. A query is a held-out photo plus the same noise: a new
photo of an item the catalog has not seen. With `--dim` other than the model's, the real
vectors are first mapped by a random Gaussian projection (which keeps their geometry) and
not clipped.

Metadata: the category of photo `a`, its colour (products) or a random one (clothing),
a random size, a log-normal price and a status (80 % available). The filtered searches
use `status=available` and `price<P`, with P chosen so that they keep 10 % of the items.

Phases: (1) exact-search latency of FAISS flat over 10k..200k vectors, for the switch
size; (2) the catalog build with `Catalog.add_vector_batches` (SQLite in 50k-row
transactions, then one index build from the stored vectors), with the exact top-10 of the
recall queries computed on the same pass; (3) in a fresh process, so its peak RSS is what
a server would hold: open the catalog, search, measure latency and recall; (4) optionally,
an HNSW-SQ8 index over the same vectors for comparison.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fashionlens.precision import cpu_description

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = ROOT / "runs" / "scale-cache"  # runs/ is gitignored
# The model whose vectors the committed figures grew from (the bundled default until
# fashion took its place; its 266-d vectors).
SCALE_MODEL = "clothing10"
SKIP_LABELS = {"Skip", "Not sure"}
COLOURS = ["black", "white", "grey", "blue", "navy", "red", "green", "beige", "brown",
           "pink", "yellow", "purple", "orange"]


def real_photos() -> list[tuple[Path, str, str | None]]:
    """(photo, category, colour or None) for every usable photo of clothing/ and products/."""
    photos: list[tuple[Path, str, str | None]] = []
    with (DATA / "clothing" / "labels.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            path = DATA / "clothing" / "images" / f"{row['image']}.jpg"
            if row["label"] not in SKIP_LABELS and path.is_file():
                photos.append((path, row["label"], None))
    with (DATA / "products" / "styles.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            path = DATA / "products" / "images" / f"{row['id']}.jpg"
            if path.is_file():
                colour = (row["baseColour"] or "").strip().lower() or None
                photos.append((path, row["articleType"] or "Other", colour))
    return photos


def real_embeddings(embedder=None) -> tuple[np.ndarray, list[str], list[str | None]]:
    """Unit vectors of the real photos under `SCALE_MODEL`'s embedder, cached per model."""
    from fashionlens.search import Embedder

    embedder = embedder or Embedder(SCALE_MODEL)
    photos = real_photos()
    tag = hashlib.sha1(f"{embedder.fingerprint}:{len(photos)}".encode()).hexdigest()[:12]
    cache = CACHE / f"real-{tag}-{embedder.dim}.npy"
    if cache.is_file():
        vectors = np.load(cache)
    else:
        results = list(embedder.embed([p for p, _, _ in photos], batch_size=64))
        keep = [i for i, r in enumerate(results) if r.ok]
        vectors = np.stack([results[i].vector for i in keep]).astype(np.float32)
        photos = [photos[i] for i in keep]
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
        (cache.with_suffix(".txt")).write_text("\n".join(str(p) for p, _, _ in photos))
    kept = set(cache.with_suffix(".txt").read_text().splitlines())
    photos = [p for p in photos if str(p[0]) in kept]
    return vectors, [c for _, c, _ in photos], [c for _, _, c in photos]


SIZES = ["XS", "S", "M", "L", "XL"]
STATUS_CHOICES = (["available"] * 8) + ["reserved", "sold"]


class Generator:
    """Synthetic embeddings that look like the real ones (see the module docstring)."""

    def __init__(self, real: np.ndarray, categories: list[str], colours: list[str | None],
                 dim: int, seed: int = 0, noise: float = 0.5, held_out: float = 0.1) -> None:
        rng = np.random.default_rng(seed)
        base = real.astype(np.float32)
        self.projected = dim != base.shape[1]
        # Pooled features are non-negative and the synthetic ones stay so; the vectors of an
        # embedding head are signed.
        self.non_negative = not self.projected and bool((base >= 0).all())
        if self.projected:  # a random Gaussian projection keeps the geometry (JL)
            proj = rng.normal(size=(base.shape[1], dim)).astype(np.float32)
            base = base @ proj / np.float32(np.sqrt(dim))
            base /= np.linalg.norm(base, axis=1, keepdims=True)
        order = rng.permutation(len(base))
        cut = int(round(len(base) * (1 - held_out)))
        self.source, self.held = order[:cut], order[cut:]
        self.base = np.ascontiguousarray(base)
        self.dim = dim
        self.seed = seed
        self.noise = noise
        self.spread = base[self.source].std(axis=0).astype(np.float32)
        self.categories = np.array(categories, dtype=object)
        self.colours = np.array(colours, dtype=object)
        by_category: dict[str, list[int]] = {}
        for i in self.source:
            by_category.setdefault(categories[i], []).append(int(i))
        self.partners = {c: np.array(v) for c, v in by_category.items()}

    def _finish(self, mixed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mixed += rng.standard_normal(mixed.shape, dtype=np.float32) * (self.noise * self.spread)
        if self.non_negative:
            np.maximum(mixed, 0, out=mixed)
        mixed /= np.maximum(np.linalg.norm(mixed, axis=1, keepdims=True), 1e-12)
        return mixed

    def chunk(self, index: int, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Vectors and metadata of chunk `index` (deterministic: any chunk, any order)."""
        rng = np.random.default_rng([self.seed, index])
        first = rng.choice(self.source, size)
        cats = self.categories[first]
        second = np.array([rng.choice(self.partners[c]) for c in cats])
        weight = rng.uniform(0.55, 1.0, size=(size, 1)).astype(np.float32)
        mixed = weight * self.base[first] + (1 - weight) * self.base[second]
        vectors = self._finish(mixed, rng)
        colour = self.colours[first].copy()
        blank = np.array([c is None for c in colour])
        colour[blank] = rng.choice(COLOURS, int(blank.sum()))
        meta = {"category": cats, "colour": colour,
                "size": rng.choice(SIZES, size),
                "price": np.round(rng.lognormal(3.0, 0.7, size), 2),
                "status": rng.choice(STATUS_CHOICES, size)}
        return vectors, meta

    def queries(self, count: int) -> np.ndarray:
        """Perturbed held-out photos: like a new photo of an item not in the catalog.
        Query i is the same whatever the count (each has its own random stream)."""
        rows = []
        for i in range(count):
            rng = np.random.default_rng([self.seed, 10**6, i])
            rows.append(self._finish(self.base[rng.choice(self.held, 1)].copy(), rng))
        return np.concatenate(rows) if rows else np.empty((0, self.dim), np.float32)


CHUNK = 50_000
TARGET_P50_MS = 10.0
FLAT_SIZES = (10_000, 20_000, 50_000, 100_000, 200_000)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss on Linux it is not
    inherited from the parent across fork and exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3)}


def timed(fn, queries: np.ndarray) -> tuple[list, list[float]]:
    results, seconds = [], []
    for q in queries:
        start = time.perf_counter()
        results.append(fn(q))
        seconds.append(time.perf_counter() - start)
    return results, seconds


def recall_at(found: list, truth: np.ndarray, k: int = 10) -> float:
    hits = [len(set(np.asarray(f)[:k].tolist()) & set(t[:k].tolist())) / k
            for f, t in zip(found, truth, strict=True)]
    return round(float(np.mean(hits)), 4)


class TopK:
    """Exact top-k over vectors seen a chunk at a time (brute force, float32)."""

    def __init__(self, queries: np.ndarray, k: int = 10) -> None:
        self.queries = queries
        self.k = k
        self.ids = np.full((len(queries), 0), -1, dtype=np.int64)
        self.sims = np.full((len(queries), 0), -np.inf, dtype=np.float32)

    def update(self, vectors: np.ndarray, ids: np.ndarray, block: int = 200) -> None:
        if not len(ids):
            return
        new_sims, new_ids = [], []
        for start in range(0, len(self.queries), block):  # bounded memory
            rows = slice(start, start + block)
            sims = np.concatenate([self.sims[rows], self.queries[rows] @ vectors.T], axis=1)
            top = np.argpartition(-sims, min(self.k, sims.shape[1] - 1), axis=1)[:, :self.k]
            new_sims.append(np.take_along_axis(sims, top, axis=1))
            old = self.ids[rows]
            picked = np.where(top < old.shape[1],
                              np.take_along_axis(old, np.minimum(top, max(old.shape[1] - 1, 0)),
                                                 axis=1) if old.shape[1] else -1,
                              ids[np.maximum(top - old.shape[1], 0)])
            new_ids.append(picked)
        self.sims = np.concatenate(new_sims)
        self.ids = np.concatenate(new_ids)

    def result(self) -> np.ndarray:
        order = np.argsort(-self.sims, axis=1)
        return np.take_along_axis(self.ids, order, axis=1)


def filter_price(gen: Generator, share: float = 0.10) -> float:
    """The price P for which `status=available, price<P` keeps `share` of the items."""
    _, meta = gen.chunk(0, CHUNK)
    available = meta["price"][meta["status"] == "available"]
    return round(float(np.quantile(available, share * CHUNK / len(available))), 2)


def filter_mask(meta: dict, price: float) -> np.ndarray:
    return (meta["status"] == "available") & (meta["price"] < price)


def flat_scan(gen: Generator, queries: np.ndarray, sizes) -> list[dict]:
    """Single-query latency of exact FAISS flat search at several catalog sizes."""
    import faiss

    index = faiss.IndexFlatIP(gen.dim)
    rows, chunk = [], 0
    for size in sizes:
        while index.ntotal < size:
            vectors, _ = gen.chunk(chunk, min(CHUNK, size - index.ntotal))
            index.add(vectors)
            chunk += 1
        _, seconds = timed(lambda q: index.search(q[None], 10), queries)
        rows.append({"n": size, **percentiles(seconds), "load": load()})
    return rows


def build(args, gen: Generator, workdir: Path, price: float, queries: np.ndarray) -> dict:
    """Build the catalog with the bulk path, computing exact top-10s on the same pass."""
    from fashionlens.search import Catalog, ItemRecord

    truth, truth_filtered = TopK(queries), TopK(queries)
    matched = 0
    generation = 0.0

    def batches():
        nonlocal matched, generation
        for c in range(0, args.n, CHUNK):
            start = time.perf_counter()
            size = min(CHUNK, args.n - c)
            vectors, meta = gen.chunk(c // CHUNK, size)
            records = [ItemRecord(f"s{c + i:07d}", None, category=meta["category"][i],
                                  colour=meta["colour"][i], size=meta["size"][i],
                                  price=float(meta["price"][i]), status=meta["status"][i])
                       for i in range(size)]
            ids = np.arange(c, c + size)
            mask = filter_mask(meta, price)
            matched += int(mask.sum())
            truth.update(vectors, ids)
            truth_filtered.update(vectors[mask], ids[mask])
            generation += time.perf_counter() - start
            print(f"built {c + size:,} of {args.n:,}", file=sys.stderr, flush=True)
            yield records, vectors

    if workdir.exists():
        shutil.rmtree(workdir)
    start = time.perf_counter()
    with Catalog(workdir, create=True, dim=gen.dim) as cat:
        report = cat.add_vector_batches(batches())
        total = time.perf_counter() - start
        info = cat.index.describe()
        rebuild = {k: round(v, 1) for k, v in cat.last_rebuild.items()}
    np.save(workdir / "truth.npy", truth.result())
    np.save(workdir / "truth-filtered.npy", truth_filtered.result())
    return {"items": len(report.added), "failed": len(report.failed),
            "filter_share": round(matched / args.n, 4),
            "seconds_total": round(total, 1),
            "seconds_generating_vectors_and_exact_top10": round(generation, 1),
            "seconds_catalog": round(total - generation, 1),
            "seconds_index_from_stored_vectors": rebuild,
            "index": info,
            "index_file_mb": round((workdir / "index.faiss").stat().st_size / 2**20, 1),
            "sqlite_file_mb": round((workdir / "catalog.sqlite").stat().st_size / 2**20, 1),
            "peak_rss_mb_build_process": peak_rss_mb(), "load_after": load()}


def ground_truth(gen: Generator, n: int, price: float, queries: np.ndarray, workdir: Path
                 ) -> None:
    """Exact top-10s of `queries` over the n generated vectors (for a reused catalog)."""
    truth, truth_filtered = TopK(queries), TopK(queries)
    for c in range(0, n, CHUNK):
        vectors, meta = gen.chunk(c // CHUNK, min(CHUNK, n - c))
        ids = np.arange(c, c + len(vectors))
        mask = filter_mask(meta, price)
        truth.update(vectors, ids)
        truth_filtered.update(vectors[mask], ids[mask])
    np.save(workdir / "truth.npy", truth.result())
    np.save(workdir / "truth-filtered.npy", truth_filtered.result())


def serve(workdir: Path, price: float, count: int) -> dict:
    """Open the catalog in this (fresh) process and measure searches; prints JSON."""
    from fashionlens.search import Catalog

    truth = np.load(workdir / "truth.npy")
    truth_filtered = np.load(workdir / "truth-filtered.npy")
    queries = np.load(workdir / "queries.npy")[:max(count, len(truth))]
    truth, truth_filtered = truth[:len(queries)], truth_filtered[:len(queries)]
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    cat = Catalog(workdir)
    index = cat.index
    opened = time.perf_counter() - start
    filters = ["status=available", f"price<{price}"]
    start = time.perf_counter()
    mask = cat.filter_mask(filters)
    columns_s = time.perf_counter() - start
    out: dict = {"index": index.describe(), "open_s": round(opened, 2),
                 "filter_columns_first_use_s": round(columns_s, 2),
                 "filter_columns_mb": round(cat.planner.filter_columns().nbytes / 2**20, 1),
                 "repaired_on_open": cat.repaired}
    n_truth = len(truth)

    def item_ids(matches) -> list[int]:
        return [int(m.item.id[1:]) for m in matches]

    for name, flt, gt in (("unfiltered", None, truth), ("filtered_10pct", filters,
                                                         truth_filtered)):
        cat.search(vector=queries[0], k=10, filters=flt)  # warm-up
        found, seconds = timed(lambda q, f=flt: item_ids(cat.search(vector=q, k=10,
                                                                    filters=f)), queries)
        row = {"catalog_search": percentiles(seconds),
               "recall_at_10": recall_at(found[:n_truth], gt)}
        # The index alone (8-bit similarities, no re-ranking, no SQLite), for comparison.
        key_to_id = None
        m = None if flt is None else mask
        raw, seconds = timed(lambda q, m=m: index.search(q, 10, mask=m)[1][0], queries)
        key_to_id = {int(r[0]): int(r[1][1:]) for r in cat.store.db.execute(
            "SELECT key, id FROM items WHERE key IN (%s)" % ",".join(  # noqa: UP031
                str(int(k)) for k in np.unique(np.concatenate(raw[:n_truth])) if k >= 0))}
        row["index_only"] = percentiles(seconds)
        row["index_only_recall_at_10"] = recall_at(
            [[key_to_id.get(int(k), -1) for k in r] for r in raw[:n_truth]], gt)
        row["load_after"] = load()
        out[name] = row
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_rss_mb_before_open"] = rss_before
    cat.close()
    return out


def compare_hnsw(gen: Generator, n: int, price: float, queries: np.ndarray) -> dict:
    """HNSW-SQ8 against the catalog's IVF-SQ8 on the first n vectors (index only)."""
    import faiss

    from fashionlens.search.index import VectorIndex

    vectors, metas = [], []
    for c in range(0, n, CHUNK):
        v, meta = gen.chunk(c // CHUNK, min(CHUNK, n - c))
        vectors.append(v)
        metas.append(filter_mask(meta, price))
    x = np.concatenate(vectors)
    del vectors
    allowed = np.concatenate(metas)
    truth, truth_f = TopK(queries), TopK(queries)
    ids = np.arange(n)
    truth.update(x, ids)
    truth_f.update(x[allowed], ids[allowed])
    truth, truth_f = truth.result(), truth_f.result()
    out: dict = {"n": n}

    def measure(search) -> dict:
        row = {}
        for name, mask, gt in (("unfiltered", None, truth), ("filtered_10pct", allowed,
                                                             truth_f)):
            found, seconds = timed(lambda q, m=mask: search(q, m), queries)
            row[name] = {**percentiles(seconds), "recall_at_10": recall_at(found, gt)}
        return row

    start = time.perf_counter()
    hnsw = faiss.IndexHNSWSQ(gen.dim, faiss.ScalarQuantizer.QT_8bit, 32,
                             faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 80
    hnsw.train(x[np.linspace(0, n - 1, min(n, 100_000)).astype(int)])
    hnsw.add(x)
    built = time.perf_counter() - start

    def hnsw_search(q, mask):
        params = faiss.SearchParametersHNSW()
        params.efSearch = 128
        if mask is not None:
            bitmap = np.packbits(mask, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # n: bytes
        return hnsw.search(q[None], 10, params=params)[1][0]

    out["hnsw_sq8_M32_efc80_efs128"] = {"build_s": round(built, 1), **measure(hnsw_search)}
    hnsw = None  # free it before building the IVF index
    start = time.perf_counter()
    ivf = VectorIndex.empty(gen.dim, "ivf", n)
    ivf.train(x)
    ivf.add(x, ids)
    built = time.perf_counter() - start
    out["ivf_sq8_catalog_index"] = {"build_s": round(built, 1), **ivf.describe(),
                                    **measure(lambda q, m: ivf.search(q, 10, mask=m)[1][0])}
    out["load_after"] = load()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=None,
                        help="vector size (default: the default embedder's)")
    parser.add_argument("--queries", type=int, default=2000, help="latency queries")
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--flat-sizes", default=",".join(map(str, FLAT_SIZES)))
    parser.add_argument("--compare-hnsw", type=int, default=0, metavar="N",
                        help="also build HNSW-SQ8 and IVF-SQ8 over the first N vectors")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the built catalog")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a catalog kept by an earlier run with the same --n, "
                             "--dim and --noise (its build figures are reported again)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--serve", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--price", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        print(json.dumps(serve(args.serve, args.price, args.queries)))
        return

    import faiss

    from fashionlens.search import Embedder
    from fashionlens.search.index import exact_limit

    started = time.perf_counter()
    result: dict = {"benchmark": "scale_catalog", "load_start": load()}
    embedder = Embedder(SCALE_MODEL)
    real, categories, colours = real_embeddings(embedder)
    dim = args.dim or embedder.dim
    result.update({"n": args.n, "dim": dim,
                   "dim_source": ("default embedder" if dim == embedder.dim
                                  else "--dim (random projection of the real vectors)"),
                   "model": embedder.spec, "model_fingerprint": embedder.fingerprint})
    del embedder
    gen = Generator(real, categories, colours, dim, noise=args.noise)
    queries = gen.queries(max(args.queries, args.recall_queries))
    price = filter_price(gen)
    result["generator"] = {"real_photos": len(real), "source_photos": len(gen.source),
                           "held_out_photos": len(gen.held), "noise": args.noise,
                           "projected": gen.projected, "categories": len(gen.partners),
                           "filter": ["status=available", f"price<{price}"]}

    sizes = [int(s) for s in args.flat_sizes.split(",") if s]
    result["flat_scan"] = flat_scan(gen, queries[:300], sizes)
    fast = [row["n"] for row in result["flat_scan"] if row["p50_ms"] <= TARGET_P50_MS]
    result["switch"] = {"target_p50_ms": TARGET_P50_MS,
                        "largest_measured_flat_size_meeting_target": max(fast, default=None),
                        "catalog_exact_limit_items": exact_limit(dim)}

    workdir = args.workdir or CACHE / f"catalog-{args.n}-{dim}-{args.noise}"
    saved = workdir / "build.json"
    if args.reuse and saved.is_file():
        result["build"] = {**json.loads(saved.read_text()), "reused_from_earlier_run": True}
        ground_truth(gen, args.n, price, queries[:args.recall_queries], workdir)
    else:
        result["build"] = build(args, gen, workdir, price, queries[:args.recall_queries])
        saved.write_text(json.dumps(result["build"]))
    np.save(workdir / "queries.npy", queries)
    served = subprocess.run(
        [sys.executable, __file__, "--serve", str(workdir), "--price", str(price),
         "--queries", str(args.queries)], capture_output=True, text=True, check=True)
    result["search"] = json.loads(served.stdout.strip().splitlines()[-1])
    if args.compare_hnsw:
        result["candidates"] = compare_hnsw(gen, min(args.compare_hnsw, args.n), price,
                                            queries[:min(500, args.recall_queries)])
    if not args.keep:
        shutil.rmtree(workdir)
    result["targets"] = {
        "p50_ms_le_10": max(result["search"]["unfiltered"]["catalog_search"]["p50_ms"],
                            result["search"]["filtered_10pct"]["catalog_search"]["p50_ms"])
        <= TARGET_P50_MS,
        "recall_at_10_ge_0.95": min(result["search"]["unfiltered"]["recall_at_10"],
                                    result["search"]["filtered_10pct"]["recall_at_10"]) >= 0.95,
        "memory_lt_4gb": result["search"]["peak_rss_mb"] < 4096}
    result["machine"] = {"cpus": os.cpu_count(), "cpu": cpu_description(),
                         "python": platform.python_version(),
                         "faiss": faiss.__version__, "numpy": np.__version__}
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["peak_rss_mb_benchmark_process"] = peak_rss_mb()
    result["load_end"] = load()
    text = json.dumps(result, indent=2)
    print(text)
    out = args.out or (ROOT / "benchmarks" / "results-scale.json"
                       if args.n >= 1_000_000 else None)
    if out:
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
