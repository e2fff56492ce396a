"""The FAISS side of a catalog: unit vectors keyed by the items' SQLite rowids.

Two kinds:

- `flat` (`IndexIDMap2` over `IndexFlatIP`): exact inner-product search over float32
  vectors. Vectors are added and removed a batch at a time; nothing is re-indexed.
- `ivf` (`IndexIVFScalarQuantizer`, inner product, 8-bit codes): for big catalogs. A
  coarse k-means splits the vectors into `nlist` lists and a search scans the `nprobe`
  lists nearest the query, so its cost is about nprobe/nlist of a full scan; each
  vector is held as one byte per dimension (a quarter of float32), which is what keeps
  a 1,000,000 x 1280 catalog under 4 GB. The index carries the rowids itself, and
  `remove_ids` deletes codes in place, so removals need no tombstones. A filter is a
  bitmap of allowed rowids that the list scan checks before computing a similarity.

Why IVF and not HNSW: on this project's 2-core reference machine, building an HNSW graph
over 1M vectors of 1280 dimensions takes far longer than k-means plus one assignment pass
(see benchmarks/results-scale-1280.json, `candidates`), and an HNSW search behind a 10 % filter
walks a graph whose neighbours are mostly filtered out, whereas IVF simply probes more
lists. With unit vectors the inner product is the cosine similarity.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path

# faiss's loader logs (INFO) every CPU-specific build it tries and cannot load, with the
# ModuleNotFoundError, on every import: noise in every catalog and search command.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from .capabilities import IndexCapabilities  # noqa: E402

# Exact (flat) search costs one pass over n x dim float32 values per query, on one core.
# Measured on the 2-core reference machine with realistic 1280-d vectors
# (benchmarks/results-scale-1280.json, `flat_scan`, load average 1.1-1.5): p50 2.5 ms at 10k
# items, 4.8 ms at 20k, 11.8 ms at 50k, 23.6 ms at 100k, 46 ms at 200k, i.e. about 5
# million values per ms. Under heavy load from other jobs (load average 5-6) the same
# scans took 20-24 ms already at 10k. The switch is set where a quiet machine needs about
# 6 ms, leaving room for the catalog's own work (filter mask, SQLite rows) and for load:
# 32 million values = 25,000 items at 1280-d, 120,000 at clothing10's 266-d (where
# 100k items measured p50 6.5 ms: benchmarks/results-scale.json). A catalog switches to IVF
# at that size and back to flat below half of it (hysteresis, so a catalog at the
# boundary does not flip with every write).
EXACT_SCAN_VALUES = 32_000_000
# Never use IVF below this many items: too few to train a useful coarse quantizer.
IVF_MIN_ITEMS = 2_000
# Lists probed per query, and how the probes grow behind a filter keeping a share f of
# the items: nprobe / f**IVF_FILTER_EXPONENT lists (capped at nlist); a filtered list
# scan only computes similarities for allowed ids, so it costs less per list. Measured on
# the synthetic 1M x 1280 catalog (nlist 2048, re-ranking 30 candidates; load average
# about 4.5): nprobe 16 gave recall@10 0.969, 24 gave 0.988, 32 gave 0.994 (p50 3.5 ms);
# with the 10 % filter, exponent 0.5 kept recall 1.000 at p50 5.6 ms, where 0.75 probed
# 1.7x more lists for no gain.
IVF_NPROBE = 32
IVF_FILTER_EXPONENT = 0.5
# k-means: training points per list and iterations (enough for 8-bit codes; more only
# costs build time).
IVF_TRAIN_PER_LIST = 48
IVF_TRAIN_ITERATIONS = 10
# Rebuild an IVF index when it holds this many times the vectors it was planned for.
IVF_GROWTH_LIMIT = 4.0


def exact_limit(dim: int) -> int:
    """Catalog size (items) up to which exact search meets the latency target."""
    return max(IVF_MIN_ITEMS, EXACT_SCAN_VALUES // max(1, dim))


def nlist_for(size: int) -> int:
    """Lists for an IVF index over `size` vectors: a power of two near 2 sqrt(size),
    with at least IVF_TRAIN_PER_LIST training points per list, at most 4096."""
    target = 2.0 * math.sqrt(max(size, 1))
    nlist = 2 ** round(math.log2(max(target, 1.0)))
    nlist = min(nlist, 4096, max(1, size // IVF_TRAIN_PER_LIST))
    return max(1, 2 ** int(math.log2(nlist)))


def _ids(keys) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(list(keys) if isinstance(keys, set) else keys,
                                           dtype=np.int64).reshape(-1))


def _batch_selector(keys: np.ndarray) -> faiss.IDSelectorBatch:
    return faiss.IDSelectorBatch(len(keys), faiss.swig_ptr(keys))


def bitmap_of(mask: np.ndarray) -> np.ndarray:
    """The bytes of a FAISS IDSelectorBitmap for a boolean array indexed by id."""
    return np.packbits(np.asarray(mask, dtype=bool), bitorder="little")


class VectorIndex:
    """A FAISS index of unit vectors with int64 ids (the items' rowids): the `faiss`
    index backend (`backends.IndexBackend`)."""

    def __init__(self, index: faiss.Index, kind: str) -> None:
        self.index = index
        self.kind = kind
        if kind == "ivf":
            self._ivf = faiss.extract_index_ivf(index)

    @property
    def capabilities(self) -> IndexCapabilities:
        """Flat: exact inner products and range search; IVF: 8-bit code similarities
        (the catalog re-ranks a shortlist with the float vectors)."""
        if self.kind == "flat":
            return IndexCapabilities(exact=True, filtered=True, range_search=True)
        return IndexCapabilities(exact=False, filtered=True, range_search=False)

    # -- making, reading, writing

    @classmethod
    def empty(cls, dim: int, kind: str = "flat", size: int = 0) -> VectorIndex:
        """An empty index; an `ivf` one still needs `train` with about `size` vectors."""
        if kind == "flat":
            return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), kind)
        if kind == "ivf":
            nlist = nlist_for(size)
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist,
                                                  faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
            index.own_fields = True
            quantizer.this.disown()
            index.cp.niter = IVF_TRAIN_ITERATIONS
            index.cp.max_points_per_centroid = IVF_TRAIN_PER_LIST * 4
            index.nprobe = min(IVF_NPROBE, nlist)
            return cls(index, kind)
        raise ValueError(f"unknown index kind {kind!r}")

    @classmethod
    def kind_for(cls, size: int, dim: int, current: str | None = None) -> str:
        """`flat` while exact search is fast enough for `size` items, else `ivf`; an
        existing IVF index stays IVF down to half the switch size."""
        limit = exact_limit(dim)
        if current == "ivf":
            return "ivf" if size >= limit // 2 else "flat"
        return "ivf" if size >= limit else "flat"

    @classmethod
    def build(cls, dim: int, chunks, size: int, kind: str | None = None,
              train_vectors: np.ndarray | None = None) -> VectorIndex:
        """An index over `size` vectors given as an iterable of (keys, vectors) chunks.

        An IVF index is trained first on `train_vectors`, or on an evenly spaced sample
        taken from the first chunks when none are given.
        """
        kind = kind or cls.kind_for(size, dim)
        index = cls.empty(dim, kind, size)
        chunks = iter(chunks)
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        if kind == "ivf":
            if train_vectors is None:
                wanted = min(size, index.train_size)
                held = 0
                for keys, vectors in chunks:
                    pending.append((keys, vectors))
                    held += len(keys)
                    if held >= wanted:
                        break
                train_vectors = np.concatenate([v for _, v in pending]) if pending else None
            if train_vectors is None or not len(train_vectors):
                return cls.empty(dim, "flat")
            index.train(train_vectors)
        for keys, vectors in pending:
            index.add(vectors, keys)
        for keys, vectors in chunks:
            index.add(vectors, keys)
        return index

    @classmethod
    def read(cls, path: Path) -> VectorIndex:
        index = faiss.read_index(str(path))
        if isinstance(index, faiss.IndexIDMap2):
            inner = faiss.downcast_index(index.index)
            if isinstance(inner, faiss.IndexFlat) \
                    and inner.metric_type == faiss.METRIC_INNER_PRODUCT:
                return cls(index, "flat")
            raise ValueError(f"unexpected index type {type(inner).__name__}")
        if isinstance(index, faiss.IndexIVFScalarQuantizer) \
                and index.metric_type == faiss.METRIC_INNER_PRODUCT:
            return cls(index, "ivf")
        raise ValueError(f"unexpected index type {type(index).__name__}")

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

    # -- what it holds

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def live(self) -> int:
        """Vectors that searches can return (all of them: removals are never deferred)."""
        return self.ntotal

    @property
    def nlist(self) -> int:
        return int(self._ivf.nlist) if self.kind == "ivf" else 0

    @property
    def train_size(self) -> int:
        """Vectors to train an empty IVF index on."""
        return IVF_TRAIN_PER_LIST * self.nlist if self.kind == "ivf" else 0

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def describe(self) -> dict:
        """Kind and parameters, for `info` and benchmarks."""
        if self.kind == "flat":
            return {"kind": "flat", "type": "IndexIDMap2(IndexFlatIP)", "vectors": self.ntotal,
                    "bytes_per_vector": 4 * self.dim + 8}
        return {"kind": "ivf", "type": "IndexIVFScalarQuantizer(QT_8bit, inner product)",
                "vectors": self.ntotal, "nlist": self.nlist, "nprobe": min(IVF_NPROBE, self.nlist),
                "bytes_per_vector": int(self._ivf.code_size) + 8}

    def ids(self) -> np.ndarray:
        if self.kind == "flat":
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)
        lists = self._ivf.invlists
        parts = []
        for list_no in range(self._ivf.nlist):
            size = lists.list_size(list_no)
            if size:
                ptr = lists.get_ids(list_no)
                parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                lists.release_ids(list_no, ptr)
        return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, np.int64)

    def needs_rebuild(self, size: int) -> bool:
        """True when `size` items call for another kind, or have outgrown the lists."""
        if self.kind_for(size, self.dim, self.kind) != self.kind:
            return True
        return self.kind == "ivf" and nlist_for(size) >= IVF_GROWTH_LIMIT * self.nlist

    # -- changing it

    def train(self, vectors: np.ndarray) -> None:
        """Learn the IVF lists and the 8-bit code ranges from sample vectors."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(vectors) > self.train_size > 0:
            pick = np.linspace(0, len(vectors) - 1, self.train_size).astype(np.int64)
            vectors = vectors[pick]
        self.index.train(vectors)

    def add(self, vectors: np.ndarray, keys) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if len(vectors):
            self.index.add_with_ids(vectors, _ids(keys))

    def remove(self, keys) -> None:
        keys = _ids(keys)
        if len(keys):
            self.index.remove_ids(_batch_selector(keys))

    # -- searching

    def search(self, queries: np.ndarray, k: int, mask: np.ndarray | None = None,
               excluded=(), share: float | None = None, exhaustive: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, ids) per query row, best first; -1 ids pad short rows.

        `mask` is a boolean array indexed by id: only ids where it is True are returned
        (ids past its end are not). `share` is the part of the index the mask allows
        (computed when not given); an IVF search probes more lists the smaller it is.
        `exhaustive` makes an IVF search probe every list (complete, still approximate
        in its 8-bit similarities). `excluded` ids are never returned.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        excluded = _ids(excluded)
        if self.ntotal == 0:
            return (np.full((len(queries), k), -np.inf, dtype=np.float32),
                    np.full((len(queries), k), -1, dtype=np.int64))
        fetch = max(1, min(int(k) + len(excluded), self.ntotal))
        keep = []  # the selector and its bitmap must outlive the search call
        if self.kind == "ivf":
            params = faiss.SearchParametersIVF()
            nprobe = min(IVF_NPROBE, self.nlist)  # the constant, not the value in the file
            if mask is not None and share is None:
                share = float(np.count_nonzero(mask)) / max(1, self.ntotal)
            if share is not None and share < 1.0:
                nprobe = math.ceil(nprobe / max(share, 1e-9) ** IVF_FILTER_EXPONENT)
            params.nprobe = self.nlist if exhaustive else max(1, min(nprobe, self.nlist))
        else:
            params = faiss.SearchParameters()
        if mask is not None:
            bitmap = bitmap_of(mask)
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # n: bytes
            keep += [bitmap, selector]
            params.sel = selector
        sims, ids = self.index.search(queries, fetch, params=params)
        del keep
        if len(excluded):
            drop = np.isin(ids, excluded)
            sims = np.where(drop, -np.inf, sims)
            ids = np.where(drop, -1, ids)
            order = np.argsort(drop, axis=1, kind="stable")
            sims = np.take_along_axis(sims, order, axis=1)
            ids = np.take_along_axis(ids, order, axis=1)
        k = min(int(k), sims.shape[1])
        return sims[:, :k], ids[:, :k]

    def range_search(self, queries: np.ndarray, threshold: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lims, similarities, ids) of every vector with similarity >= threshold."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        # FAISS keeps inner products strictly above the radius.
        return self.index.range_search(queries, float(threshold) - 1e-6)
