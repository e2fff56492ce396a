"""How good an embedding is for "similar items": three protocols on labelled photos.

- **pairs** (the seed project's protocol): every item has exactly two photos, here a photo
  and its simulated re-shot view (`data.reshoot`); each of the 2N photos queries the other
  2N-1, and top-1/5/10 accuracy says how often its pair ranks that high.
- **category**: precision@k of same-category neighbours, query photos against a gallery
  (e.g. validation photos against a catalog of the training photos).
- **steering**: the share of the top-k results that carry an attribute as the steering
  weight toward it rises (directions learned on one half of the items, measured on the
  other half, so no item helps to steer toward itself).

The metric functions take vectors, so they serve any embedder; `embed_photos` and the
`*_protocol` functions read photos through an `Embedder`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import load_image
from ..data.reshoot import STRONG, ReshootConfig, reshoot
from ..errors import DataError, ImageError
from ..progress import track
from ..search.embeddings import Embedder, normalise
from ..search.steering import learn_directions, steer

log = logging.getLogger(__name__)

TOP_KS = (1, 5, 10)


def pair_accuracy(first: np.ndarray, second: np.ndarray, ks: Sequence[int] = TOP_KS
                  ) -> dict[str, float]:
    """Top-k accuracy of finding each photo's pair among all other photos.

    `first[i]` and `second[i]` are the two photos of item i; the gallery is all 2N photos
    and a query never matches itself.
    """
    vectors = normalise(np.concatenate([first, second]))
    n = len(first)
    if n < 2:
        raise DataError("pair retrieval needs at least two items")
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    pair = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
    pair_sim = sims[np.arange(2 * n), pair]
    rank = (sims > pair_sim[:, None]).sum(1)  # photos ranked above the pair
    result = {f"top{k}": float((rank < k).mean()) for k in ks}
    result["mean_rank"] = float(rank.mean() + 1)
    result["items"] = n
    return result


def precision_at_k(queries: np.ndarray, query_labels: Sequence[str], gallery: np.ndarray,
                   gallery_labels: Sequence[str], k: int = 10,
                   exclude_self: bool = False) -> dict:
    """Mean share of each query's k nearest gallery photos with the query's label,
    overall and per label. `exclude_self` when queries and gallery are the same photos."""
    queries, gallery = normalise(queries), normalise(gallery)
    query_labels = np.asarray(query_labels, dtype=object)
    gallery_labels = np.asarray(gallery_labels, dtype=object)
    k = min(k, len(gallery) - int(exclude_self))
    sims = queries @ gallery.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    hits = (gallery_labels[top] == query_labels[:, None]).mean(1)
    per_label = {str(label): float(hits[query_labels == label].mean())
                 for label in sorted(set(query_labels))}
    return {f"precision@{k}": float(hits.mean()), "queries": len(queries),
            "gallery": len(gallery), "per_label": per_label}


def steering_curve(vectors: np.ndarray, labels: Sequence[str | None], attribute: str,
                   weights: Sequence[float], *, k: int = 10, seed: int = 0,
                   method: str = "mean") -> dict:
    """Share of top-k results carrying `attribute` as the weight toward it rises.

    Items are split in half at random: the directions are learned from the labels of
    one half; the other half is the catalog, each of its items lacking the attribute
    queries the rest of that half.
    """
    vectors = normalise(vectors)
    labels = np.array(["" if v is None else str(v) for v in labels], dtype=object)
    rng = np.random.default_rng(seed)
    learn = rng.random(len(vectors)) < 0.5
    found = {d.name: d for d in learn_directions(vectors[learn], labels[learn],
                                                 field="attribute", method=method,
                                                 values=[attribute])}
    direction = found[attribute.lower()].vector
    catalog = np.flatnonzero(~learn)
    has = np.char.lower(labels[catalog].astype(str)) == attribute.lower()
    queries = np.flatnonzero(~has)
    gallery = vectors[catalog]
    curve = []
    for weight in weights:
        shares = []
        for q in queries:
            query = steer(gallery[q], {"a": direction}, {"a": float(weight)})
            sims = gallery @ query
            sims[q] = -np.inf
            top = np.argpartition(-sims, k - 1)[:k]
            shares.append(has[top].mean())
        curve.append({"weight": float(weight), "share": float(np.mean(shares))})
    return {"attribute": attribute, "k": k, "method": method, "queries": len(queries),
            "catalog": len(catalog), "catalog_share": float(has.mean()),
            "learned_from": int((labels[learn] != "").sum()), "curve": curve}


# --- photos -> vectors ------------------------------------------------------------------

def _read(path: Path) -> Image.Image | None:
    try:
        return load_image(path)
    except (DataError, ImageError) as exc:
        log.warning("%s: skipped (%s)", path, exc)
        return None


def embed_photos(embedder: Embedder, photos: Sequence, description: str = "embedding"
                 ) -> tuple[np.ndarray, list[int]]:
    """Vectors of the readable photos (paths or PIL images) and their positions."""
    vectors, kept = [], []
    outcomes = embedder.embed(list(photos), batch_size=32)
    for i, outcome in enumerate(track(outcomes, total=len(photos), description=description)):
        if outcome.ok:
            vectors.append(outcome.vector)
            kept.append(i)
        else:
            log.warning("%s: skipped (%s)", outcome.source, outcome.error)
    if not vectors:
        raise DataError("no readable photos to embed")
    return np.stack(vectors), kept


def pairs_protocol(embedder: Embedder, paths: Sequence[Path], *, seed: int = 0,
                   config: ReshootConfig = STRONG) -> dict:
    """Each photo against its re-shot view (drawn with `seed`, so runs repeat)."""
    originals, views = [], []
    for i, path in enumerate(track(paths, description="re-shooting")):
        img = _read(Path(path))
        if img is None:
            continue
        originals.append(img)
        views.append(reshoot(img, np.random.default_rng([seed, 0, i, 0]), config))
    first, _ = embed_photos(embedder, originals, "embedding photos")
    second, _ = embed_photos(embedder, views, "embedding re-shot views")
    return pair_accuracy(first, second)


def category_protocol(embedder: Embedder, queries: Sequence[tuple[Path, str]],
                      gallery: Sequence[tuple[Path, str]], k: int = 10) -> dict:
    """Same-category precision@k of (photo, label) queries against a labelled gallery."""
    gallery_vectors, kept = embed_photos(embedder, [p for p, _ in gallery],
                                         "embedding the gallery")
    query_vectors, kept_q = embed_photos(embedder, [p for p, _ in queries],
                                         "embedding the queries")
    return precision_at_k(query_vectors, [queries[i][1] for i in kept_q], gallery_vectors,
                          [gallery[i][1] for i in kept], k=k)
