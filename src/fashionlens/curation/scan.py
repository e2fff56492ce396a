"""What can be measured of each photo file, computed once and cached.

Per photo: its SHA-256 (exact duplicates), pixel size and file format, a 64-bit
perceptual hash (near-duplicates that survive re-encoding and resizing), a unit
embedding vector (near-duplicates, outliers, the mislabel probe), the model's "not a
garment" score when the model is calibrated (off-topic photos), or why it cannot be
read. Decoding and running the model is the slow part, so results are cached per
dataset and model under the user's cache folder, keyed by each file's path, size and
modification time: a re-run only looks at photos that changed. The photos themselves
are only read.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_file
from ..data.images import load_image
from ..errors import ImageError

log = logging.getLogger(__name__)

CACHE_ENV = "FASHIONLENS_CACHE"
NO_HASH = np.uint64(0)
CHUNK = 64


def default_cache_dir() -> Path:
    """$FASHIONLENS_CACHE, else $XDG_CACHE_HOME/fashionlens, else ~/.cache/fashionlens."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "curation"
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root).expanduser() / "fashionlens" / "curation"


@dataclass
class Scan:
    """Per-photo measurements, rows in the order of the photos given."""

    paths: list[Path]
    sha256: list[str]
    phash: np.ndarray  # uint64; 0 where unreadable or imagehash is not installed
    width: np.ndarray
    height: np.ndarray
    formats: list[str]
    errors: list[str | None]
    vectors: np.ndarray | None  # (N, D) float32 unit rows; zeros where unreadable
    model: str | None
    cached: int = 0
    # "Not a garment" scores (`inference.unknown`), NaN where unreadable; None when the
    # model is not calibrated. The threshold is the model's.
    unknown_scores: np.ndarray | None = None
    unknown_threshold: float | None = None
    # The model's near-duplicate line (`Embedder.duplicate_threshold`); None without a model.
    duplicate_threshold: float | None = None

    @property
    def readable(self) -> np.ndarray:
        return np.array([e is None for e in self.errors], dtype=bool)

    @property
    def has_phash(self) -> bool:
        return bool(np.any(self.phash != NO_HASH))


def _phash(img) -> np.uint64:
    """64-bit DCT perceptual hash (imagehash.phash) as an integer; 0 without imagehash."""
    try:
        import imagehash
    except ModuleNotFoundError:
        return NO_HASH
    bits = imagehash.phash(img, hash_size=8).hash.flatten()
    return np.uint64(int("".join("1" if b else "0" for b in bits), 2))


def _file_facts(path: Path) -> tuple[str, np.uint64, int, int, str, str | None, bytes | None]:
    """(sha256, phash, width, height, format, error, bytes) of one file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return "", NO_HASH, 0, 0, "", f"cannot be read ({exc.strerror or exc})", None
    digest = hashlib.sha256(data).hexdigest()
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as header:
            fmt = header.format or "?"
            width, height = header.size
        img = load_image(data, draft_size=64, name=str(path))
        code = _phash(img)
        img.close()
    except ImageError as exc:
        return digest, NO_HASH, 0, 0, "", exc.reason, None
    except Exception as exc:  # PIL raises many kinds for broken files
        return digest, NO_HASH, 0, 0, "", f"not a readable image ({exc})", None
    return digest, code, width, height, fmt, None, data


def _cache_file(cache_dir: Path, source: str, model: str | None) -> Path:
    """`model`: what the vectors and scores depend on (weights, and the unknown scorer)."""
    key = hashlib.sha256(f"{Path(source).resolve()}|{model}".encode()).hexdigest()[:20]
    return cache_dir / f"scan-{key}.npz"


def _stamp(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _read_cache(file: Path) -> dict[str, dict]:
    if not file.is_file():
        return {}
    try:
        with np.load(file, allow_pickle=False) as npz:
            # each npz[name] reads and inflates the whole array again: once per name
            data = {name: npz[name] for name in npz.files}
        vectors = data["vectors"]
        unknown = data.get("unknown", np.zeros(0, np.float32))
        rows = {
            str(k): {"stamp": str(data["stamps"][i]), "sha256": str(data["sha256"][i]),
                     "phash": np.uint64(data["phash"][i]), "width": int(data["width"][i]),
                     "height": int(data["height"][i]), "format": str(data["formats"][i]),
                     "error": str(data["errors"][i]) or None,
                     "vector": vectors[i] if vectors.size else None,
                     "unknown": float(unknown[i]) if unknown.size else None}
            for i, k in enumerate(data["keys"])}
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ignoring the unreadable cache %s (%s)", file, exc)
        return {}
    return rows


def _write_cache(file: Path, scan: Scan, stamps: list[str]) -> None:
    """Atomically (`atomic.atomic_file`): a crash never leaves half a cache."""
    with atomic_file(file) as fh:
        np.savez(fh, keys=np.array([str(p.resolve()) for p in scan.paths]),
                 stamps=np.array(stamps), sha256=np.array(scan.sha256),
                 phash=scan.phash, width=scan.width, height=scan.height,
                 formats=np.array(scan.formats),
                 errors=np.array([e or "" for e in scan.errors]),
                 vectors=scan.vectors if scan.vectors is not None
                 else np.zeros((0, 0), np.float32),
                 unknown=scan.unknown_scores if scan.unknown_scores is not None
                 else np.zeros(0, np.float32))


def scan_photos(paths: Sequence[Path], source: str, *, model: str | None = "default",
                runtime: str = "auto", cache_dir: Path | None = None, threads: int = 2,
                progress: Callable[[int, int], None] | None = None) -> Scan:
    """Measure every photo; `model=None` skips embeddings (file facts and hashes only).

    `source` names the dataset in the cache key; `progress(done, total)` is called as
    photos are measured."""
    cache_dir = cache_dir or default_cache_dir()
    embedder = None
    if model is not None:  # loaded first: the cache is keyed by the weights' fingerprint
        from ..search.embeddings import Embedder

        embedder = Embedder(model, runtime=runtime, threads=threads)
    scorer = embedder.unknown if embedder is not None else None
    key = embedder.fingerprint if embedder else None
    if scorer is not None:  # recalibrating changes the scores, not the weights
        spec = json.dumps(scorer.spec.to_dict(), sort_keys=True).encode()
        key = f"{key}|unknown:{hashlib.sha256(spec).hexdigest()[:16]}"
    file = _cache_file(cache_dir, source, key)
    cache = _read_cache(file)
    stamps = [_stamp(p) for p in paths]
    n = len(paths)
    sha = [""] * n
    phash = np.zeros(n, np.uint64)
    width = np.zeros(n, np.int64)
    height = np.zeros(n, np.int64)
    formats = [""] * n
    errors: list[str | None] = [None] * n
    vectors: np.ndarray | None = None
    todo: list[int] = []
    cached_vectors: dict[int, np.ndarray] = {}
    scores = np.full(n, np.nan, np.float32)
    for i, path in enumerate(paths):
        row = cache.get(str(path.resolve()))
        if row is not None and row["stamp"] == stamps[i] and (
                model is None or row["vector"] is not None or row["error"]):
            sha[i], phash[i], width[i], height[i] = (row["sha256"], row["phash"],
                                                     row["width"], row["height"])
            formats[i], errors[i] = row["format"], row["error"]
            if row["vector"] is not None and row["error"] is None:
                cached_vectors[i] = row["vector"]
                if row["unknown"] is not None:
                    scores[i] = row["unknown"]
        else:
            todo.append(i)
    new_vectors: dict[int, np.ndarray] = {}
    done = n - len(todo)
    if progress:
        progress(done, n)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            facts = list(pool.map(lambda i: _file_facts(paths[i]), chunk))
            blobs = []
            for i, (digest, code, w, h, fmt, error, data) in zip(chunk, facts, strict=True):
                sha[i], phash[i], width[i], height[i], formats[i], errors[i] = (
                    digest, code, w, h, fmt, error)
                if data is not None:
                    blobs.append((i, data))
            if embedder is not None and blobs:
                outcomes = embedder.embed([b for _, b in blobs],
                                          names=[str(paths[i]) for i, _ in blobs],
                                          unknown=scorer is not None)
                for (i, _), outcome in zip(blobs, outcomes, strict=True):
                    if outcome.ok:
                        new_vectors[i] = outcome.vector
                        if outcome.unknown_score is not None:
                            scores[i] = outcome.unknown_score
                    else:
                        errors[i] = outcome.error
            done += len(chunk)
            if progress:
                progress(done, n)
    if model is not None:
        found = {**cached_vectors, **new_vectors}
        dim = next((len(v) for v in found.values()), 0)
        vectors = np.zeros((n, dim), np.float32)
        for i, v in found.items():
            vectors[i] = v
    scan = Scan(paths=list(paths), sha256=sha, phash=phash, width=width, height=height,
                formats=formats, errors=errors, vectors=vectors,
                model=embedder.spec if embedder is not None else None,
                cached=n - len(todo),
                unknown_scores=scores if scorer is not None else None,
                unknown_threshold=scorer.threshold if scorer is not None else None,
                duplicate_threshold=embedder.duplicate_threshold if embedder else None)
    if todo:
        try:
            _write_cache(file, scan, stamps)
        except OSError as exc:
            log.warning("could not write the cache %s (%s); the next run measures again",
                        file, exc)
    return scan
