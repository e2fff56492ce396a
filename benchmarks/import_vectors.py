"""`catalog import-vectors` of shards into a new catalog: wall time and peak memory; JSON.

    flock /tmp/fashionlens-bench.lock python benchmarks/import_vectors.py
    python benchmarks/import_vectors.py --sizes 100000:20000       # a quicker look

For each ROWS:SHARD_ROWS pair, shards of random unit vectors of the bundled `clothing10`
model's size (266-d; written with its model fingerprint, as `fashionlens embed` would)
with metadata (category, colour, price, status, an extra field) are imported by a new
process into a new catalog with `Catalog.import_shards` (what the CLI runs). That process
samples its resident memory every 50 ms: the peak while the shards stream into SQLite
(one transaction) and the peak while the index is built afterwards are reported apart,
above the process's memory before the import. The claim to check: the streaming phase's
memory follows the shard size, not the catalog size. The index (IVF, 8-bit codes, about
274 bytes a vector at 266-d) is what every process searching the catalog holds, so the
build phase grows with the catalog by design.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("FASHIONLENS_PROGRESS", "0")

import numpy as np  # noqa: E402

from fashionlens.precision import cpu_description  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ["Dress", "Hat", "Longsleeve", "Outwear", "Pants", "Shirt", "Shoes", "Shorts",
              "Skirt", "T-Shirt"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_shards(folder: Path, rows: int, shard_rows: int, seed: int = 0) -> dict:
    """Shards of random unit vectors with `clothing10`'s fingerprint."""
    from fashionlens.search.embeddings import Embedder
    from fashionlens.search.shards import SUCCESS, ShardModel, shard_name, write_shard

    embedder = Embedder("clothing10")  # the committed figures' model
    model = ShardModel(embedder.spec, embedder.fingerprint, embedder.dim)
    del embedder
    if (folder / SUCCESS).is_file():
        return {"spec": model.spec, "fingerprint": model.fingerprint, "dim": model.dim}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for number, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        vectors = rng.normal(size=(n, model.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        picks = rng.integers(0, 1000, size=n)
        records = [{"id": f"v{start + i:07d}", "source": f"s3://shop/photos/{start + i}.jpg",
                    "category": CATEGORIES[p % 10], "colour": ["red", "blue", None][p % 3],
                    "price": float(p % 200), "status": ["available", "sold"][p % 2],
                    "extra": {"brand": f"b{p % 17}"}} for i, p in enumerate(picks)]
        write_shard(folder / shard_name(number), records, vectors, model)
    (folder / SUCCESS).write_bytes(b"")
    return {"spec": model.spec, "fingerprint": model.fingerprint, "dim": model.dim}


def child(catalog: Path, shards: Path) -> None:
    """Import `shards` into a new catalog, measuring; prints one JSON line."""
    from fashionlens.search import Catalog
    from fashionlens.search.shards import shard_files

    files = shard_files(shards)
    import pyarrow.parquet as pq

    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    baseline = rss_mb()
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.perf_counter(), rss_mb()))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    done = {"rows": 0, "at": None}

    def progress(n: int) -> None:
        done["rows"] += n
        if done["rows"] >= total:
            done["at"] = time.perf_counter()

    sampler.start()
    start = time.perf_counter()
    with Catalog(catalog, create=True) as cat:
        result = cat.import_shards(files, progress=progress)
        end = time.perf_counter()
        info = cat.info()
    stop.set()
    sampler.join()
    streamed = done["at"] or end
    stream_peak = max((r for t, r in samples if t <= streamed), default=baseline)
    index_peak = max((r for t, r in samples if t > streamed), default=stream_peak)
    print(json.dumps({
        "rows": total, "added": result["added"], "shards": len(files),
        "wall_s": round(end - start, 1), "streaming_s": round(streamed - start, 1),
        "index_build_s": round(end - streamed, 1),
        "rows_per_s": round(total / (end - start)),
        "rss_before_mb": round(baseline), "peak_rss_streaming_mb": round(stream_peak),
        "peak_rss_streaming_above_start_mb": round(stream_peak - baseline),
        "peak_rss_index_build_mb": round(index_peak),
        "peak_rss_index_build_above_start_mb": round(index_peak - baseline),
        "index": info["index_details"],
        "catalog_sqlite_mb": round((catalog / "catalog.sqlite").stat().st_size / 2**20)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+",
                        default=["1000000:50000", "250000:50000", "1000000:200000"],
                        help="ROWS:SHARD_ROWS pairs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fashionlens-import-bench"))
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results-import-vectors.json")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    runs = []
    for size in args.sizes:
        rows, shard_rows = (int(x) for x in size.split(":"))
        shards = args.work / f"shards-{rows}-{shard_rows}"
        model = write_shards(shards, rows, shard_rows)
        shard_mb = sum(p.stat().st_size for p in shards.glob("*.parquet")) / 2**20
        catalog = args.work / f"catalog-{rows}-{shard_rows}"
        shutil.rmtree(catalog, ignore_errors=True)
        proc = subprocess.run([sys.executable, __file__, "--child", str(catalog), str(shards)],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"import of {shards} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update({"shard_rows": shard_rows,
                    "shard_vectors_mb": round(shard_rows * model["dim"] * 4 / 2**20, 1),
                    "shard_files_mb_total": round(shard_mb)})
        print(json.dumps(row), flush=True)
        runs.append(row)
        shutil.rmtree(catalog, ignore_errors=True)
    report = {
        "benchmark": "catalog import-vectors from Parquet shards (Catalog.import_shards)",
        "cpu": cpu_description(), "load_average_at_end": os.getloadavg(),
        "model": model, "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
