"""Keeping a catalog's vector index in agreement with its SQLite store.

The store is the source of truth; the index file is replaced atomically after the
database commits. If a crash leaves the two disagreeing, opening the catalog brings the
index up to date from the embeddings stored in SQLite (or rebuilds it when the file is
missing, unreadable or unsuited to the catalog's size). Another process's commits are
taken in incrementally: keys are never reused, so new items are those past the index's
largest key.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .backends import IndexBackend, IndexFactory
from .store import CatalogStore

log = logging.getLogger("fashionlens.search.catalog")

# Training vectors for an index that wants training (IVF) are a random sample of the
# catalog, drawn with this seed (so a rebuild of the same catalog gives the same index).
TRAIN_SEED = 0
# The relevance floor: a search result less similar to its query than WEAK_BELOW is a
# weak match (`"weak": true`). It is measured on the catalog itself whenever its index is
# built, and again when the number of items has changed by more than FLOOR_REMEASURE
# since: for a random sample of FLOOR_SAMPLE items (seed FLOOR_SEED), the similarity of
# each to its FLOOR_NEIGHBOUR-th nearest other item; the floor is the FLOOR_PERCENTILE-th
# percentile of those. A result below it is further from the query than 95 % of the
# catalog's items are from their tenth nearest neighbour: below what the catalog's own
# density supports for "looks alike". Stored in the catalog's meta as `weak_below`
# (with `floor_items`, the count it was measured at); a catalog of fewer than
# FLOOR_MIN_ITEMS items has none.
FLOOR_SAMPLE = 500
FLOOR_NEIGHBOUR = 10
FLOOR_PERCENTILE = 5.0
FLOOR_SEED = 0
FLOOR_REMEASURE = 0.1
FLOOR_MIN_ITEMS = 3
# Up to this many items the neighbours are found exactly over the stored vectors (numpy);
# past it, with the index.
FLOOR_EXACT_ITEMS = 20_000


class IndexKeeper:
    """The in-memory index of one open catalog, its file, and their repair."""

    def __init__(self, store: CatalogStore, factory: IndexFactory) -> None:
        self.store = store
        self.factory = factory
        self.index: IndexBackend | None = None
        self.stale = False  # the in-memory index missed a change: reload before use
        self.deferred = False  # a bulk load rebuilds the index at its end
        self.repaired = False  # True when opening had to rebuild or catch up the index
        self.last_rebuild: dict[str, float] = {}  # seconds spent in the last rebuild

    @property
    def path(self) -> Path:
        return self.store.path / self.factory.file_name

    def current(self) -> IndexBackend | None:
        """The index, after catching up with other writers (None: the catalog is empty)."""
        self.store.catch_up()
        if self.stale:
            self.reload()
        return self.index

    def failed(self) -> None:
        """An index update failed after the database changed: reload it before next use."""
        self.stale = True

    def reload(self) -> None:
        self.index, self.stale = None, False
        self.open()

    def sync(self) -> None:
        """Bring the in-memory index into agreement with the items in SQLite."""
        if self.deferred:
            return
        index = self.index
        if index is None or self.stale:
            self.reload()
            return
        ids = index.ids()
        missing = self.store.keys("key > ?", (int(ids.max()) if len(ids) else 0,))
        count = self.store.count()
        extra = np.empty(0, dtype=np.int64)
        if count != len(ids) + len(missing):  # removals: compare all keys
            keys = self.store.keys()
            missing = np.setdiff1d(keys, ids, assume_unique=True)
            extra = np.setdiff1d(ids, keys, assume_unique=True)
        if not len(missing) and not len(extra):
            return
        if index.needs_rebuild(count):
            self.reload()
            return
        try:
            index.remove(extra)
            if len(missing):  # those removed since `keys` was read are left out
                found, vectors = self.store.vectors_for(missing)
                index.add(vectors, found)
        except BaseException:
            self.failed()
            raise

    def open(self) -> None:
        """Read the index file and bring it into agreement with the database.

        A file behind the database (another process is between batches, or one crashed
        before saving) takes the missing and removed vectors from SQLite; a missing,
        unreadable or mismatched one is rebuilt. A repaired index is saved when no other
        process is writing (that writer saves its own, up to date, when it is done)."""
        keys = self.store.keys()
        self.index = None
        path = self.path
        reason = None
        index = None
        dim = self.store.dim
        if not path.is_file():
            if not len(keys):
                return
            reason = "the index file is missing"
        else:
            try:
                index = self.factory.read(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable index is rebuilt
                reason = f"the index file cannot be read ({exc})"
            else:
                ids = index.ids()
                if dim is not None and index.dim != dim:
                    reason = f"the index holds {index.dim}-d vectors, the items {dim}-d"
                elif len(ids) != len(np.unique(ids)):
                    reason = "the index holds some vectors twice"
                elif index.needs_rebuild(len(keys)):
                    reason = f"the index does not suit {len(keys)} items"
                if reason is not None:
                    index = None
        if index is not None:
            missing = np.setdiff1d(keys, ids)
            extra = np.setdiff1d(ids, keys)
            if not len(missing) and not len(extra):
                self.index = index
                return
            log.info("%s: the index file is behind the database (%d items not indexed, %d "
                     "removed); catching up from the stored embeddings", self.store.path,
                     len(missing), len(extra))
            index.remove(extra)
            if len(missing):  # those removed since `keys` was read are left out
                found, vectors = self.store.vectors_for(missing)
                index.add(vectors, found)
            self.index = index
        else:
            log.warning("%s: %s; rebuilding the index from the %d stored embeddings",
                        self.store.path, reason, len(keys))
            self.index = self.build(keys)
        self.repaired = True
        with self.store.writing(wait=False) as locked:
            if locked:  # taking the lock caught up with any commit made meanwhile
                self.save()

    def save(self) -> None:
        """Write the index file (the caller holds the write lock)."""
        if self.index is not None:
            self.index.write(self.path)
        elif not self.store.count():
            self.path.unlink(missing_ok=True)

    def forget(self) -> None:
        """Drop the index and its file (a re-embedding replaces every vector)."""
        self.index = None
        self.path.unlink(missing_ok=True)

    def build(self, keys: np.ndarray) -> IndexBackend | None:
        """A new index over the stored embeddings of `keys` (the backend picks what suits
        their number; an index that wants training is trained on a random sample)."""
        count = len(keys)
        dim = self.store.dim
        self.index = None  # free the old one before building the new one
        timings: dict[str, float] = {}
        self.last_rebuild = timings
        if dim is None or not count:
            return None
        index = self.factory.empty(dim, count)
        start = time.perf_counter()
        if index.train_size:
            rng = np.random.default_rng(TRAIN_SEED)
            sample = np.sort(rng.choice(keys, min(count, index.train_size), replace=False))
            index.train(self.store.vectors_for(sample)[1])
        timings["train_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for chunk_keys, vectors in self.store.scan():
            index.add(vectors, chunk_keys)
        timings["add_s"] = time.perf_counter() - start
        return index

    def rebuild(self, clean_photos: bool = True) -> dict:
        """Re-create the index from the stored embeddings and delete photos no item uses
        any more (left by a crash between copying a photo and committing its batch)."""
        with self.store.writing():
            keys = self.store.keys()
            self.index = self.build(keys)
            self.stale = False
            start = time.perf_counter()
            if self.index is None:
                self.path.unlink(missing_ok=True)
            else:
                self.index.write(self.path)
                self.last_rebuild["write_s"] = time.perf_counter() - start
            self.measure_floor(force=True)
            removed = 0
            if clean_photos:  # under the lock: no writer is between copy and commit
                for photo in self.store.unused_photos():
                    photo.unlink()
                    removed += 1
        return {"items": len(keys), "index": self.index.kind if self.index else None,
                "orphan_photos_removed": removed}

    def takes(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        """Add a committed batch to the in-memory index, or leave the index to be rebuilt
        at the end of the run (`finish`) once it no longer suits the catalog's size (it
        is then dropped, to free its memory)."""
        if self.deferred:
            return
        index = self.current()
        size = (index.ntotal if index is not None else 0) + len(keys)
        if index is None:
            fresh = self.factory.empty(self.store.dim, size)
            if not fresh.train_size:
                index = self.index = fresh
        if index is None or index.needs_rebuild(size) or not index.capabilities.incremental:
            self.index = None
            self.deferred = True
            return
        try:
            index.add(vectors, keys)
        except BaseException:
            self.failed()
            raise

    def add_from_store(self, after_key: int) -> None:
        """Add the stored vectors of the items past `after_key`, a chunk at a time (a
        bulk import that the index can take incrementally)."""
        index = self.index
        try:
            for keys, vectors in self.store.scan("key > ?", (after_key,)):
                index.add(vectors, keys)
        except BaseException:
            self.failed()
            raise

    def abort(self) -> None:
        """A run stopped half-way: a deferred index is reloaded (and repaired) on use."""
        if self.deferred:
            self.deferred = False
            self.failed()

    def finish(self, changed: bool) -> None:
        """The end of a run of writes: rebuild a deferred index, else save the index file,
        or rebuild it when the catalog outgrew it. Under the write lock, after catching
        up with other writers, so the file written reflects the database."""
        if self.deferred:
            self.deferred = False
            self.rebuild(clean_photos=False)
            return
        if not changed:
            return
        with self.store.writing():
            if self.stale or self.index is None:
                return  # the index file is left as it was; the next open repairs it
            size = self.index.ntotal
            if self.index.needs_rebuild(size):
                log.info("%s: %d items, rebuilding the index (%s)", self.store.path, size,
                         self.factory.suits(size, self.index.dim))
                self.rebuild(clean_photos=False)
            else:
                self.save()
                self.measure_floor()

    def _exact_neighbours(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, keys) of each query among the stored vectors."""
        best_sims = np.full((len(queries), 0), -np.inf, dtype=np.float32)
        best_keys = np.zeros((len(queries), 0), dtype=np.int64)
        for keys, vectors in self.store.scan():
            sims = np.concatenate([best_sims, queries @ vectors.T], axis=1)
            all_keys = np.concatenate([best_keys, np.broadcast_to(keys, (len(queries),
                                                                         len(keys)))], axis=1)
            top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
            best_sims = np.take_along_axis(sims, top, axis=1)
            best_keys = np.take_along_axis(all_keys, top, axis=1)
        return best_sims, best_keys

    def measure_floor(self, force: bool = False) -> float | None:
        """Measure and store the relevance floor (see WEAK_BELOW's constants) when the
        index was just built (`force`) or the catalog's size moved by more than
        FLOOR_REMEASURE since it was last measured; returns the floor in force."""
        store = self.store
        count = store.count()
        measured = store.meta("floor_items")
        if not force and measured is not None and measured.isdigit() and \
                abs(count - int(measured)) <= FLOOR_REMEASURE * max(1, int(measured)):
            return weak_below(store)
        floor = None
        index = self.index
        if index is not None and count >= FLOOR_MIN_ITEMS:
            keys = np.sort(index.ids())
            rng = np.random.default_rng(FLOOR_SEED)
            sample = np.sort(rng.choice(keys, min(len(keys), FLOOR_SAMPLE), replace=False))
            found, vectors = store.vectors_for(sample)
            neighbour = min(FLOOR_NEIGHBOUR, len(keys) - 1)
            if count <= FLOOR_EXACT_ITEMS:  # exact, over the stored vectors
                sims, ids = self._exact_neighbours(vectors, neighbour + 1)
            else:
                sims, ids = index.search(vectors, neighbour + 1)
            values = []
            for row, key in enumerate(found):
                others = sims[row][(ids[row] != key) & (ids[row] >= 0)]
                if len(others) >= neighbour:
                    values.append(float(others[neighbour - 1]))
            if values:
                floor = float(np.percentile(values, FLOOR_PERCENTILE))
        with store.transaction(changes_items=False) as db:
            if floor is None:
                db.execute("DELETE FROM meta WHERE name = 'weak_below'")
            else:
                store.set_meta({"weak_below": f"{floor:.6f}"}, db)
            store.set_meta({"floor_items": str(count)}, db)
        return floor


def weak_below(store: CatalogStore) -> float | None:
    """The catalog's relevance floor (`IndexKeeper.measure_floor`), None when unmeasured."""
    value = store.meta("weak_below")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
