"""The FAISS side of a catalog: unit vectors keyed by the items' SQLite rowids.

Two kinds, both wrapped in `IndexIDMap2` so vectors carry the rowid as their id:

- `flat` (`IndexFlatIP`): exact inner-product search; vectors are added and removed
  one batch at a time, nothing is ever re-indexed. Used below `HNSW_THRESHOLD` items.
- `hnsw` (`IndexHNSWFlat`, inner product): a graph index for big catalogs. Graph nodes
  cannot be deleted, so a removed item becomes a tombstone that searches skip; once
  tombstones pass `TOMBSTONE_FRACTION` of the index the catalog rebuilds it.

With unit vectors the inner product is the cosine similarity.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import faiss
import numpy as np

# Above this many items the catalog switches to an HNSW graph (approximate, sub-linear).
HNSW_THRESHOLD = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
# Rebuild an HNSW index once this share of its vectors belongs to removed items.
TOMBSTONE_FRACTION = 0.2


def _ids(keys) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(list(keys) if isinstance(keys, set) else keys,
                                           dtype=np.int64).reshape(-1))


def _batch_selector(keys: np.ndarray) -> faiss.IDSelectorBatch:
    return faiss.IDSelectorBatch(len(keys), faiss.swig_ptr(keys))


class VectorIndex:
    """A FAISS index of unit vectors with int64 ids, plus the ids of removed vectors."""

    def __init__(self, index: faiss.IndexIDMap2, kind: str) -> None:
        self.index = index
        self.kind = kind
        self.tombstones: set[int] = set()

    @classmethod
    def empty(cls, dim: int, kind: str = "flat") -> VectorIndex:
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        elif kind == "flat":
            inner = faiss.IndexFlatIP(dim)
        else:
            raise ValueError(f"unknown index kind {kind!r}")
        return cls(faiss.IndexIDMap2(inner), kind)

    @classmethod
    def kind_for(cls, size: int) -> str:
        return "hnsw" if size >= HNSW_THRESHOLD else "flat"

    @classmethod
    def read(cls, path: Path) -> VectorIndex:
        index = faiss.read_index(str(path))
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"expected an IndexIDMap2, found {type(index).__name__}")
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSW):
            kind = "hnsw"
        elif isinstance(inner, faiss.IndexFlat) and inner.metric_type == faiss.METRIC_INNER_PRODUCT:
            kind = "flat"
        else:
            raise ValueError(f"unexpected index type {type(inner).__name__}")
        return cls(index, kind)

    def write(self, path: Path) -> None:
        """Write to a temporary file beside `path`, flush it to disk, then swap it in."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            faiss.write_index(self.index, str(tmp))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        with contextlib.suppress(OSError):  # make the rename itself durable
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        """Vectors held, tombstones included."""
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        return self.ntotal - len(self.tombstones)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, vectors: np.ndarray, keys) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        self.index.add_with_ids(vectors, _ids(keys))

    def remove(self, keys) -> None:
        keys = _ids(keys)
        if not len(keys):
            return
        if self.kind == "hnsw":
            self.tombstones.update(int(k) for k in keys)
        else:
            self.index.remove_ids(_batch_selector(keys))

    def needs_compaction(self) -> bool:
        return self.kind == "hnsw" and len(self.tombstones) > TOMBSTONE_FRACTION * self.ntotal

    def search(self, queries: np.ndarray, k: int, allowed=None, excluded=()
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, ids) per query row, best first; -1 ids pad short rows.

        `allowed` restricts the search to those ids (a FAISS IDSelectorBatch); `excluded`
        ids and tombstones are never returned.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(int(k), self.ntotal))
        blocked = self.tombstones | {int(x) for x in excluded}
        keep = []  # selectors must outlive the search call
        selector = None
        if allowed is not None:
            allowed = _ids(allowed)
            if blocked:
                allowed = allowed[~np.isin(allowed, _ids(blocked))]
            keep.append(allowed)
            selector = _batch_selector(allowed)
        elif blocked:
            blocked_ids = _ids(blocked)
            inner = _batch_selector(blocked_ids)
            keep += [blocked_ids, inner]
            selector = faiss.IDSelectorNot(inner)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(HNSW_EF_SEARCH, 2 * k)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        sims, ids = self.index.search(queries, k, params=params)
        del keep
        return sims, ids

    def range_search(self, queries: np.ndarray, threshold: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lims, similarities, ids) of every vector with similarity >= threshold."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        # FAISS keeps inner products strictly above the radius.
        return self.index.range_search(queries, float(threshold) - 1e-6)
