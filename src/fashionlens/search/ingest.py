"""One way into a catalog: a batch of records plus their vectors.

Whether the vectors were just computed from the records' photos by an embedder in this
process (`Catalog.add`) or come from shards written elsewhere (`Catalog.import_shards`,
`Catalog.add_vectors`), a batch goes through the same steps: each record is checked
(`records.triage`: id, metadata bounds, id already present or repeated), zero or
non-finite vectors are refused, vectors are L2-normalised, photos (if any) are copied
in under names unique to this write, the rows are inserted in one SQLite transaction
under the write lock, and the index takes the batch (or is rebuilt once at the end of a
run when the catalog outgrew it).

`import_batches` runs many batches in ONE transaction (all or nothing) while reading
them one at a time: its memory is bounded by a batch, not by the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError, FashionLensError
from . import tags
from .embeddings import normalise
from .indexing import IndexKeeper
from .query import QueryPlanner
from .records import AddOutcome, ItemRecord, triage, utf8_text
from .store import CatalogStore, has_photo

# `add_vectors` commits this many items per SQLite transaction.
VECTOR_BATCH_ROWS = 50_000


class Ingestor:
    """Adds batches of (records, vectors) to a catalog."""

    def __init__(self, store: CatalogStore, keeper: IndexKeeper, planner: QueryPlanner
                 ) -> None:
        self.store = store
        self.keeper = keeper
        self.planner = planner

    def plan(self, records: Sequence[ItemRecord], seen: set[str],
             image_root: str | Path | None = None
             ) -> tuple[list[AddOutcome | None], list[int]]:
        """A first look (outside the lock, so that known ids are not embedded again):
        an outcome for each record that will not be added, and the indices of the rest
        (their ids join `seen`)."""
        outcomes: list[AddOutcome | None] = [None] * len(records)
        present = self.store.existing([r.id for r in records
                                       if isinstance(r.id, str) and utf8_text(r.id)])
        todo: list[int] = []
        for i, record in enumerate(records):
            status, problem = triage(record, present, seen, image_root)
            if status == "add":
                seen.add(record.id)
                todo.append(i)
            else:
                outcomes[i] = AddOutcome(str(record.id), status, record.describe(), problem)
        return outcomes, todo

    def commit(self, records: Sequence[ItemRecord], vectors: np.ndarray,
               outcomes: list[AddOutcome | None], todo: Sequence[int],
               predictions: Sequence[list | None] | None = None, tagger: str | None = None
               ) -> np.ndarray:
        """Add `records[i]` with `vectors[j]` for the j-th i of `todo` (planned records),
        filling in their outcomes: ids another process added since the plan are left as
        they are ('exists', `raced`: this record's photo and fields are not stored), bad
        vectors fail. `predictions[j]`: the model's tags for that record (`tags`), stored
        in the same transaction, with `tagger` (`Embedder.tagger_fingerprint`) noted as
        their source (`CatalogStore.note_tagger`). Returns the new keys."""
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.empty(0)
        with self.store.writing():  # the commit and the index update together
            taken = self.store.existing([records[i].id for i in todo])
            chosen: list[int] = []
            rows: list[int] = []
            for j, i in enumerate(todo):
                if records[i].id in taken:  # another process added it since the plan
                    outcomes[i] = AddOutcome(records[i].id, "exists", records[i].describe(),
                                             raced=True)
                elif not np.isfinite(norms[j]) or norms[j] == 0:
                    outcomes[i] = AddOutcome(records[i].id, "failed", records[i].describe(),
                                             "the vector is zero or not finite")
                else:
                    chosen.append(i)
                    rows.append(j)
            if not chosen:
                return np.empty(0, dtype=np.int64)
            picked = [records[i] for i in chosen]
            unit = normalise(vectors[rows])
            with self.store.new_photos(picked) as images, self.store.transaction() as db:
                keys = self.store.insert_items(db, picked, unit, images)
                if predictions is not None:
                    if tagger:
                        self.store.note_tagger(db, tagger)
                    self.store.store_predictions(db, [
                        row for key, j in zip(keys, rows, strict=True)
                        for row in tags.rows_for(key, predictions[j] or [])])
            self.planner.columns_changed(keys)
            self.keeper.takes(unit, keys)
        for i in chosen:
            outcomes[i] = AddOutcome(records[i].id, "added", records[i].describe())
        return keys

    def add_vector_batches(self, batches: Iterable[tuple[Sequence[ItemRecord], np.ndarray]],
                           dim: int, progress: Callable[[int], None] | None = None
                           ) -> Iterable[AddOutcome]:
        """Yield the outcomes of bulk-adding (records, vectors) batches, one transaction
        per batch (an interruption keeps whole batches; ids already present are
        skipped, so re-running resumes)."""
        seen: set[str] = set()
        changed = False
        self.keeper.deferred = False
        try:
            for records, vectors in batches:
                records = list(records)
                vectors = np.asarray(vectors, dtype=np.float32)
                if vectors.ndim != 2 or vectors.shape != (len(records), dim):
                    raise FashionLensError(
                        f"expected {len(records)} vectors of dimension {dim}, got an array "
                        f"of shape {vectors.shape}")
                outcomes, todo = self.plan(records, seen)
                keys = self.commit(records, vectors[todo], outcomes, todo)
                changed = changed or bool(len(keys))
                yield from outcomes  # type: ignore[misc]
                if progress is not None:
                    progress(len(records))
        except BaseException:
            self.keeper.abort()
            raise
        self.keeper.finish(changed)

    def import_batches(self, batches: Iterable[tuple[Sequence[ItemRecord], np.ndarray, str]],
                       dim: int, before: Callable[[], None] | None = None,
                       progress: Callable[[int], None] | None = None) -> int:
        """Add every (records, vectors, where) batch in one transaction, or none: an id
        already in the catalog or repeated, a bad record or vector, raises DataError
        naming `where` (e.g. the shard file) and rolls everything back. Batches are
        read one at a time (memory bounded by a batch); `before` runs under the lock,
        inside the transaction, before the first batch. Returns the items added."""
        with self.store.writing():
            last = int(self.store.db.execute("SELECT coalesce(max(key), 0) FROM items")
                       .fetchone()[0])
            added = 0
            with self.store.transaction() as db:
                if before is not None:
                    before()
                for records, vectors, where in batches:
                    records = list(records)
                    vectors = np.asarray(vectors, dtype=np.float32)
                    if vectors.ndim != 2 or vectors.shape != (len(records), dim):
                        raise DataError(f"{where}: expected {len(records)} vectors of "
                                        f"dimension {dim}, found shape {vectors.shape}")
                    self._check_import(records, vectors, where)
                    images = [None] * len(records)
                    if any(has_photo(r) for r in records):
                        raise DataError(f"{where}: imported items carry no photo")
                    self.store.insert_items(db, records, normalise(vectors), images)
                    added += len(records)
                    if progress is not None:
                        progress(len(records))
            self.planner.invalidate()
            if added:
                index = self.keeper.current()
                size = self.store.count()
                if index is None or index.needs_rebuild(size) \
                        or not index.capabilities.incremental:
                    self.keeper.rebuild(clean_photos=False)
                else:
                    self.keeper.add_from_store(last)
                    self.keeper.save()
                    self.keeper.measure_floor()
        return added

    def _check_import(self, records: list[ItemRecord], vectors: np.ndarray, where: str) -> None:
        """Refuse a batch with a bad record, a bad vector or an id that clashes."""
        seen: set[str] = set()
        ids = [r.id for r in records if isinstance(r.id, str)]
        present = self.store.existing(ids)  # includes the batches inserted before
        if present:
            shown = ", ".join(sorted(present)[:5])
            raise DataError(f"{where}: {len(present)} id(s) already in the catalog "
                            f"{self.store.path} or in an earlier shard ({shown}"
                            f"{' ...' if len(present) > 5 else ''}); nothing was imported")
        norms = np.linalg.norm(vectors, axis=1)
        for i, record in enumerate(records):
            status, problem = triage(record, set(), seen, None)
            if status == "failed" and problem and "listed twice" in problem:
                raise DataError(f"{where}: id '{record.id}' appears twice; nothing was "
                                "imported")
            if status != "add":
                raise DataError(f"{where}: item '{record.id}': {problem}; nothing was "
                                "imported")
            if not np.isfinite(norms[i]) or norms[i] == 0:
                raise DataError(f"{where}: item '{record.id}': the vector is zero or not "
                                "finite; nothing was imported")
            seen.add(record.id)
