"""Query planning: filters, exact or index search, re-ranking, near-duplicates.

Searches pre-filter the candidate items on an in-memory copy of the metadata columns
(`FilterColumns`; SQL only for `id` and `extra.*` filters), then rank only those:
exactly with numpy over the stored float vectors when they are few, otherwise with the
index behind an id bitmap; a search that finds fewer than k is completed exhaustively,
so a filter never returns fewer than k results when k items match. An index whose
similarities are not exact (capability `exact`) returns a longer shortlist, re-ranked
with the stored float vectors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import FashionLensError
from .backends import IndexBackend
from .embeddings import DUPLICATE_THRESHOLD, normalise
from .filters import COLUMNS_SQL, Filter, FilterColumns, to_sql
from .indexing import IndexKeeper
from .records import DuplicatePair, Item, Match
from .store import ITEM_COLUMNS, SCAN_ROWS, CatalogStore

# Candidate sets (after filtering) up to this size are ranked exactly with numpy over
# their stored float vectors (read from SQLite: about 2 ms per 1,000 at 1280-d).
EXACT_LIMIT = 2048
# An approximate index returns max(RERANK_MIN, RERANK_FACTOR * k) candidates, which are
# re-ranked with the stored float vectors: on the synthetic 1M x 1280 catalog IVF's 8-bit
# codes alone give recall@10 0.95, a 30-row re-rank 0.994 (20 rows: same recall within
# noise; the rows are read with the results' metadata in one query).
RERANK_FACTOR = 3
RERANK_MIN = 30


class QueryPlanner:
    """Ranks a catalog's items for a query vector."""

    def __init__(self, store: CatalogStore, keeper: IndexKeeper) -> None:
        self.store = store
        self.keeper = keeper
        self.columns: FilterColumns | None = None  # built on the first filtered search

    # -- the in-memory filter columns

    def invalidate(self) -> None:
        self.columns = None

    def filter_columns(self) -> FilterColumns:
        """The metadata columns in memory, (re)read after another connection changed items."""
        self.store.catch_up()
        if self.columns is None:
            columns = FilterColumns()
            cursor = self.store.db.execute(f"SELECT key, {COLUMNS_SQL} FROM items")
            while rows := cursor.fetchmany(100_000):
                columns.set_rows(rows)
            self.columns = columns
        return self.columns

    def columns_changed(self, keys: Iterable[int]) -> None:
        """Re-read the metadata of `keys` into the columns (when they are in memory)."""
        if self.columns is None:
            return
        self.columns.set_rows(self.store.select_in(
            f"SELECT key, {COLUMNS_SQL} FROM items WHERE key IN ({{marks}})",
            [int(k) for k in keys]))

    def columns_dropped(self, keys: Iterable[int]) -> None:
        if self.columns is not None:
            self.columns.drop(list(keys))

    def filter_mask(self, conditions: list[Filter]) -> np.ndarray:
        """Boolean array over keys: the items matching every condition."""
        mask = self.filter_columns().mask(conditions)
        rest = [f for f in conditions if not FilterColumns.handles(f)]
        if rest:  # `id` and `extra.*` filters: SQL
            where, params = to_sql(rest)
            keys = np.fromiter((r[0] for r in self.store.db.execute(
                f"SELECT key FROM items WHERE {where}", params)), dtype=np.int64)
            matched = np.zeros(len(mask), dtype=bool)
            matched[keys[keys < len(mask)]] = True
            mask &= matched
        return mask

    # -- ranking

    def query_vector(self, vector: Any) -> np.ndarray:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        dim = self.store.dim
        if dim is not None and query.shape != (dim,):
            raise FashionLensError(f"the query vector has {query.size} values; this "
                                   f"catalog holds {dim}-d vectors")
        if not np.all(np.isfinite(query)) or not np.any(query):
            raise FashionLensError("the query vector is zero or not finite")
        return normalise(query)

    def exact(self, query: np.ndarray, keys: np.ndarray, k: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (keys, similarities) over the stored float vectors of `keys`."""
        best_keys = np.empty(0, dtype=np.int64)
        best_sims = np.empty(0, dtype=np.float32)
        for start in range(0, len(keys), SCAN_ROWS):
            # Items another process removed meanwhile are left out.
            part, vectors = self.store.vectors_for(keys[start:start + SCAN_ROWS])
            part_keys = np.concatenate([best_keys, part])
            sims = np.concatenate([best_sims, vectors @ query])
            if len(sims) > k:
                top = np.argpartition(-sims, k - 1)[:k]
                part_keys, sims = part_keys[top], sims[top]
            best_keys, best_sims = part_keys, sims
        order = np.lexsort((best_keys, -best_sims))
        return best_keys[order], best_sims[order]

    def search(self, query: np.ndarray, k: int, conditions: list[Filter],
               excluded: list[int]) -> list[Match]:
        """Top-k matches (exact similarities) among the items matching `conditions`."""
        index = self.keeper.current()
        if index is None:
            return []
        return self.rank(index, query, k, conditions, excluded)

    def rank(self, index: IndexBackend, query: np.ndarray, k: int,
             conditions: list[Filter], excluded: list[int]) -> list[Match]:
        mask = None
        if conditions:
            mask = self.filter_mask(conditions)
            for key in excluded:
                if key < len(mask):
                    mask[key] = False
            count = int(np.count_nonzero(mask))
        else:
            count = index.ntotal - len(excluded)
        k = min(k, count)
        if k <= 0:
            return []
        if mask is not None and (count <= EXACT_LIMIT or not index.capabilities.filtered):
            return self.matches(*self.exact(query, np.flatnonzero(mask), k))
        share = count / max(1, index.ntotal)
        exact = index.capabilities.exact
        # An approximate index: take a longer shortlist, re-rank it exactly.
        fetch = k if exact else max(RERANK_MIN, RERANK_FACTOR * k)
        sims, keys = index.search(query, fetch, mask=mask, excluded=excluded, share=share)
        sims, keys = sims[0][keys[0] >= 0], keys[0][keys[0] >= 0]
        if len(keys) < min(fetch, count) and not exact:
            # The probed part held too few matching items: search all of it.
            sims, keys = index.search(query, fetch, mask=mask, excluded=excluded,
                                      exhaustive=True)
            sims, keys = sims[0][keys[0] >= 0], keys[0][keys[0] >= 0]
        if len(keys) < k:  # only if the index misses items: rank every match exactly
            candidates = (np.flatnonzero(mask) if mask is not None
                          else np.setdiff1d(self.store.keys(), excluded))
            return self.matches(*self.exact(query, candidates, k))
        if exact:
            return self.matches(keys[:k], sims[:k])
        return self.reranked(query, keys, k)

    def reranked(self, query: np.ndarray, keys: np.ndarray, k: int) -> list[Match]:
        """The best k of a shortlist by exact similarity, reading each shortlisted row
        (metadata and vector) in one query."""
        marks = ", ".join("?" * len(keys))
        rows = self.store.db.execute(f"SELECT {ITEM_COLUMNS}, embedding FROM items "
                                     f"WHERE key IN ({marks})", [int(x) for x in keys]).fetchall()
        vectors = self.store.vectors_from_blobs([r["key"] for r in rows],
                                                [r["embedding"] for r in rows], len(query))
        sims = vectors @ query
        order = np.lexsort((np.array([r["key"] for r in rows]), -sims))[:k]
        return [Match(self.store.item(rows[i]), float(np.clip(sims[i], -1.0, 1.0)))
                for i in order]

    def matches(self, keys: np.ndarray, sims: np.ndarray) -> list[Match]:
        key_list = [int(k) for k in keys]
        items: dict[int, Item] = self.store.items_by_key(key_list)
        return [Match(items[k], float(np.clip(s, -1.0, 1.0)))
                for k, s in zip(key_list, sims, strict=True) if k in items]

    # -- near-duplicates

    def near_duplicates(self, threshold: float = DUPLICATE_THRESHOLD, neighbours: int = 10
                        ) -> list[DuplicatePair]:
        """Pairs of items whose photos are near-identical (cosine similarity >= threshold),
        most similar first: exact with an index that range-searches, else each item's
        `neighbours` nearest are checked."""
        if not 0.0 < threshold <= 1.0:
            raise FashionLensError(f"threshold must be in (0, 1], not {threshold}")
        index = self.keeper.current()
        if index is None or self.store.count() < 2:
            return []
        best: dict[tuple[int, int], float] = {}

        def keep(a: int, b: int, sim: float) -> None:
            if a != b and b >= 0 and sim >= threshold:
                pair = (min(a, b), max(a, b))
                best[pair] = max(best.get(pair, -1.0), sim)

        for keys, vectors in self.store.scan(rows=1024):
            if index.capabilities.range_search:
                lims, sims, ids = index.range_search(vectors, threshold)
                for q, key in enumerate(keys):
                    for j in range(lims[q], lims[q + 1]):
                        keep(int(key), int(ids[j]), float(sims[j]))
            else:
                sims, ids = index.search(vectors, neighbours + 1)
                for q, key in enumerate(keys):
                    for sim, other in zip(sims[q], ids[q], strict=True):
                        keep(int(key), int(other), float(sim))
        if not best:
            return []
        involved = sorted({k for pair in best for k in pair})
        items = self.store.items_by_key(involved)
        pairs = [DuplicatePair(items[a], items[b], min(sim, 1.0))
                 for (a, b), sim in best.items() if a in items and b in items]
        pairs = [p if p.a.id <= p.b.id else DuplicatePair(p.b, p.a, p.similarity)
                 for p in pairs]
        return sorted(pairs, key=lambda p: (-p.similarity, p.a.id, p.b.id))
