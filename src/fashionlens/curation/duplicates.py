"""Exact and near-duplicate photos, grouped, and the groups that leak across splits.

Three kinds of evidence make two photos one pair: the same bytes (SHA-256), perceptual
hashes a few bits apart (the same picture re-encoded, resized or lightly cropped), or
embedding vectors at least the model's near-duplicate line alike (as in the catalog:
`ModelInfo.duplicate_threshold`, else `search.embeddings.DUPLICATE_THRESHOLD`), found
with the same exact FAISS range search the catalog uses (`search.index.VectorIndex`). Pairs
join into groups (union-find). A group with photos in both train and validation is leakage: the
validation score then partly measures memory.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..search.embeddings import duplicate_line
from ..search.index import VectorIndex
from .scan import NO_HASH, Scan

# Perceptual-hash bits (of 64) two photos may differ in and still be one picture: a
# 2-5 % crop, a resize to 80-95 % and JPEG quality 70-85 move a clothing photo's pHash by
# up to 10 bits (95th percentile 8). But home photos on plain backgrounds collide too:
# among the 3,068 distinct clothing train photos, 135 pairs sit within 8 bits, 133 of
# them with embedding similarity below 0.9 (median 0.51). So a hash pair counts only
# when the embeddings agree (HASH_CORROBORATION), or, without embeddings, when the
# hashes are nearly equal (PHASH_ALONE: one pair of the 3,068 photos, a real duplicate).
# Measured by benchmarks/review_noise.py and the clothing photos.
PHASH_DISTANCE = 8
HASH_CORROBORATION = 0.85
PHASH_ALONE = 2


@dataclass
class Pair:
    a: int
    b: int
    exact: bool = False
    cosine: float | None = None
    hash_bits: int | None = None

    @property
    def confidence(self) -> float:
        """How sure the pair is one picture: 1 for identical bytes, else the stronger of
        the cosine similarity and the share of equal hash bits."""
        if self.exact:
            return 1.0
        scores = [self.cosine or 0.0]
        if self.hash_bits is not None:
            scores.append(1.0 - self.hash_bits / 64)
        return float(min(1.0, max(scores)))

    def evidence(self) -> str:
        parts = []
        if self.exact:
            parts.append("identical files")
        if self.hash_bits is not None:
            parts.append(f"perceptual hashes {self.hash_bits} of 64 bits apart")
        if self.cosine is not None:
            parts.append(f"embedding similarity {self.cosine:.3f}")
        return ", ".join(parts)


@dataclass
class DuplicateGroup:
    members: list[int]
    pairs: list[Pair] = field(default_factory=list)
    exact: bool = False

    def best_pair(self, i: int) -> Pair:
        """The strongest pair linking member `i` to another member."""
        return max((p for p in self.pairs if i in (p.a, p.b)), key=lambda p: p.confidence)


def _hash_pairs(codes: np.ndarray, ok: np.ndarray, limit: int) -> dict[tuple[int, int], int]:
    """Pairs whose 64-bit hashes differ in at most `limit` bits (chunked all-pairs)."""
    index = np.flatnonzero(ok & (codes != NO_HASH))
    found: dict[tuple[int, int], int] = {}
    values = codes[index]
    for start in range(0, len(index), 512):
        block = values[start:start + 512]
        bits = np.bitwise_count(block[:, None] ^ values[None, :])
        rows, cols = np.nonzero(bits <= limit)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            a, b = int(index[start + r]), int(index[c])
            if a < b:
                found[(a, b)] = int(bits[r, c])
    return found


def _vector_pairs(vectors: np.ndarray, ok: np.ndarray, threshold: float
                  ) -> dict[tuple[int, int], float]:
    """Pairs with cosine similarity >= threshold: an exact range search over unit rows."""
    index_rows = np.flatnonzero(ok & (np.abs(vectors).sum(axis=1) > 0))
    if len(index_rows) < 2:
        return {}
    index = VectorIndex.empty(vectors.shape[1], "flat")
    index.add(vectors[index_rows], index_rows)
    found: dict[tuple[int, int], float] = {}
    for start in range(0, len(index_rows), 1024):
        queries = index_rows[start:start + 1024]
        lims, sims, ids = index.range_search(vectors[queries], threshold)
        for q, a in enumerate(queries.tolist()):
            for j in range(lims[q], lims[q + 1]):
                b = int(ids[j])
                if a < b:
                    found[(a, b)] = min(1.0, float(sims[j]))
    return found


def find_duplicates(scan: Scan, *, threshold: float | None = None,
                    hash_distance: int = PHASH_DISTANCE, use_vectors: bool = True
                    ) -> list[DuplicateGroup]:
    """Groups of photos that are one picture, largest evidence first. `threshold`: the
    vectors' line, by default the scan's model's."""
    if threshold is None:
        threshold = duplicate_line(scan.duplicate_threshold)
    ok = scan.readable
    pairs: dict[tuple[int, int], Pair] = {}
    by_sha: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(scan.sha256):
        if digest:
            by_sha[digest].append(i)
    for same in by_sha.values():
        for b in same[1:]:
            pairs[(same[0], b)] = Pair(same[0], b, exact=True)
    vectors = scan.vectors if use_vectors and scan.vectors is not None and \
        scan.vectors.size else None
    for (a, b), bits in _hash_pairs(scan.phash, ok, hash_distance).items():
        cosine = None
        if vectors is not None and vectors[a].any() and vectors[b].any():
            cosine = min(1.0, float(vectors[a] @ vectors[b]))
            if bits > PHASH_ALONE and cosine < HASH_CORROBORATION:
                continue  # a look-alike hash the embeddings disagree with
        elif bits > PHASH_ALONE and (a, b) not in pairs:
            continue
        pair = pairs.setdefault((a, b), Pair(a, b))
        pair.hash_bits = bits
        pair.cosine = cosine
    if vectors is not None:
        for (a, b), sim in _vector_pairs(vectors, ok, threshold).items():
            pairs.setdefault((a, b), Pair(a, b)).cosine = sim
    parent = list(range(len(scan.paths)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        parent[root(a)] = root(b)
    groups: dict[int, DuplicateGroup] = {}
    for (a, _b), pair in pairs.items():
        group = groups.setdefault(root(a), DuplicateGroup(members=[]))
        group.pairs.append(pair)
        group.exact = group.exact or pair.exact
    for group in groups.values():
        group.members = sorted({i for p in group.pairs for i in (p.a, p.b)})
    return sorted(groups.values(), key=lambda g: (-max(p.confidence for p in g.pairs),
                                                  g.members[0]))


def leaks(group: DuplicateGroup, splits: list[str | None], train: set[str],
          validation: set[str]) -> bool:
    """Whether a group has photos on both sides of the train/validation line."""
    sides = {splits[i] for i in group.members}
    return bool(sides & train) and bool(sides & validation)
