"""A shop's catalog for "similar items", kept in one folder.

    catalog/
      catalog.sqlite   items: id, photo, category, colour, size, price, status, extra
                       data, the photo's embedding and timestamps; the source of truth
      index.faiss      the vector index over the embeddings, keyed by the SQLite rowid
      images/          the catalog's own copy of every photo (the user's files are
                       only ever read)

`Catalog` is the public face; the work is done at its seams, each in its own module:

- `store`     the SQLite store (rows, vectors, photos, directions), the write lock,
              crash clean-up and noticing other processes' commits;
- `ingest`    the one way in: a batch of records plus vectors, whether an embedder in
              this process computed them (`add`) or they come from shards written
              elsewhere (`import_shards`, `add_vectors`);
- `indexing`  the index kept in agreement with the store (incremental, repaired on open);
- `backends`  the index backend protocol, its capabilities and the registry (FAISS);
- `query`     query planning: filters, exact or index search, re-ranking, duplicates;
- `migrate`   moving to another model (`reembed`);
- `records`, `sources`  what an item is and how it is checked; CSV and folder readers.

Several processes may use one catalog (a server and CLI commands, two `catalog add`
runs): every write holds `write.lock`, catches up with the others' commits first, and
readers notice commits before each search (see `store`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FashionLensError, ModelError
from ..models.info import bundled_maker_of, fingerprint_of, read_info, tagger_fingerprint_of
from ..models.resolve import DEFAULT_NAME, resolve_model
from . import steering, tags
from .backends import DEFAULT_BACKEND, IndexBackend, get_backend
from .embeddings import Embedder, duplicate_line, normalise
from .filters import PREDICTABLE, canonical_field, column_sql, parse_filters, to_sql, value_sql
from .indexing import TRAIN_SEED, IndexKeeper, weak_below
from .ingest import VECTOR_BATCH_ROWS, Ingestor
from .query import DUPLICATE_THRESHOLD, EXACT_LIMIT, RERANK_FACTOR, RERANK_MIN, QueryPlanner
from .records import (
    MAX_EXTRA_FIELDS,
    MAX_FIELD_NAME_CHARS,
    MAX_ID_CHARS,
    MAX_VALUE_CHARS,
    METADATA_FIELDS,
    ROUTE_SUFFIXES,
    AddOutcome,
    AddReport,
    DuplicatePair,
    Item,
    ItemRecord,
    Match,
    apply_field,
    check_extra,
    check_field_name,
    check_item_id,
    check_record,
    check_status,
    check_under_root,
    check_value,
    now,
    parse_price,
)
from .sources import SourceItems, read_source, records_from_csv, records_from_folder
from .steering import Direction, learn_directions, parse_steering
from .store import (
    CATALOG_DB,
    IMAGES_DIR,
    IN_CHUNK,
    ITEM_COLUMNS,
    LOCK_FILE,
    LOCK_TIMEOUT_S,
    PENDING_FILE,
    SCAN_ROWS,
    SCHEMA_VERSION,
    TAGS_MIXED,
    CatalogStore,
    catalog_contents,
    refuse_lost_database,
)

INDEX_FILE = "index.faiss"
# "More like these": the query is the normalised mean of the liked items' vectors minus
# UNLIKE_WEIGHT times the normalised mean of the unliked ones, normalised again
# (Rocchio's relevance feedback, with its classic negative weight of about a quarter of
# the positive). At most MAX_LIKED ids of each kind.
UNLIKE_WEIGHT = 0.25
MAX_LIKED = 100
# `review_tags`: a prediction this sure that disagrees with the shop's value is listed.
REVIEW_PROBABILITY = 0.9
# `info`: values listed per field (the most frequent first).
INFO_VALUES = 100

__all__ = [
    "CATALOG_DB", "DUPLICATE_THRESHOLD", "EXACT_LIMIT", "IMAGES_DIR", "INDEX_FILE", "IN_CHUNK",
    "LOCK_FILE", "LOCK_TIMEOUT_S", "MAX_EXTRA_FIELDS", "MAX_FIELD_NAME_CHARS", "MAX_ID_CHARS",
    "MAX_VALUE_CHARS", "METADATA_FIELDS", "PENDING_FILE", "RERANK_FACTOR", "RERANK_MIN",
    "ROUTE_SUFFIXES", "SCAN_ROWS", "SCHEMA_VERSION", "TRAIN_SEED", "VECTOR_BATCH_ROWS",
    "AddOutcome", "AddReport", "Catalog", "DuplicatePair", "Item", "ItemRecord", "Match",
    "SourceItems", "check_extra", "check_field_name", "check_item_id", "check_record",
    "check_status", "check_under_root", "check_value", "parse_price", "read_source",
    "records_from_csv", "records_from_folder",
]


class Catalog:
    """A catalog folder: open an existing one, or `create=True` to start one.

    `model` (a model folder, a backbone name, or None for the default) chooses the
    embedder of a new catalog; an existing catalog reuses the one it was built with.
    `embedder` passes a ready Embedder (it must be the model the catalog was built with).
    `dim` makes a new catalog of precomputed vectors of that size without loading any
    model (`add_vectors`; search by vector or item; a photo search then needs a model
    giving vectors of that size).
    `runtime` is what runs the embedders this catalog loads (`inference.backends`:
    torch, onnxruntime, openvino or auto); every backend gives the same fingerprint, so
    vectors embedded with one are searched with another.
    `backend` names the index backend of a new catalog (`backends.register_backend`;
    default FAISS); an existing catalog keeps its own.
    """

    def __init__(self, path: str | Path, *, create: bool = False,
                 model: str | Path | None = None, embedder: Embedder | None = None,
                 dim: int | None = None, lock_timeout: float = LOCK_TIMEOUT_S,
                 runtime: str = "auto", backend: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.runtime = runtime
        # Photos added are tagged by the model's heads in the same forward pass (`tags`).
        self.tagging = True
        db_path = self.path / CATALOG_DB
        fresh = not db_path.is_file()
        if fresh:
            contents = catalog_contents(self.path) if self.path.is_dir() else []
            if contents and ((self.path / IMAGES_DIR).is_dir()
                             or (self.path / INDEX_FILE).is_file()):  # it lost its database
                raise refuse_lost_database(self.path, f"there is no {CATALOG_DB}", contents)
            if not create:
                raise FashionLensError(f"{self.path}: not a catalog (no {CATALOG_DB}); "
                                       "make one with `fashionlens catalog build`")
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise FashionLensError(f"{self.path}: exists and is not an empty folder; "
                                       "choose a new folder for the catalog")
            get_backend(backend)  # an unknown backend fails before any folder is made
            if embedder is None and model is not None:
                # A bad model fails before any folder is made.
                embedder = Embedder(model, runtime=runtime)
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FashionLensError(f"{self.path}: cannot create the catalog folder "
                                       f"({exc.strerror or exc})") from None
        self.store = CatalogStore(self.path, lock_timeout)
        try:
            if fresh and backend not in (None, DEFAULT_BACKEND):
                self.store.set_meta({"index_backend": backend})
            self._model_request = model
            self._embedder: Embedder | None = None
            self.index_keeper = IndexKeeper(self.store,
                                            get_backend(self.store.meta("index_backend")))
            self.planner = QueryPlanner(self.store, self.index_keeper)
            self.ingestor = Ingestor(self.store, self.index_keeper, self.planner)
            self.store.catch_up = self._catch_up
            self._setup(model, embedder, dim)
        except BaseException:
            self.store.close()
            raise

    def _setup(self, model: str | Path | None, embedder: Embedder | None,
               dim: int | None) -> None:
        if dim is not None:
            if self.dim is None:
                self.store.set_meta({"dim": str(int(dim)), "vectors_only": "1"})
            elif self.dim != dim:
                raise FashionLensError(f"{self.path}: the catalog holds {self.dim}-d vectors, "
                                       f"not {dim}-d")
        if embedder is not None:
            self._use_embedder(embedder)
        elif model is not None and self.store.meta("model_fingerprint") is None:
            self._use_embedder(Embedder(model, runtime=self.runtime))
        self.index_keeper.open()
        if self.store.pending_path.exists():  # a writer crashed: clean up if we can
            with self.store.writing(wait=False):
                pass

    def _catch_up(self) -> None:
        """Catch up with commits made by another process (or another Catalog object):
        the index takes the added and removed vectors from SQLite; after a re-embedding
        elsewhere the index and the embedder are loaded afresh."""
        change = self.store.poll()
        if change is None:
            return
        self.planner.invalidate()
        if change == "vectors":
            if self._embedder is not None and \
                    not self._embedder.makes_vectors_of(self.store.meta("model_fingerprint")):
                self._embedder = None
            self.index_keeper.reload()
        else:
            self.index_keeper.sync()

    # -- plumbing

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.store.count()

    def __contains__(self, item_id: str) -> bool:
        return self.store.contains(item_id)

    @property
    def index(self) -> IndexBackend | None:
        """The vector index (None while the catalog is empty)."""
        return self.index_keeper.current()

    @property
    def index_path(self) -> Path:
        return self.index_keeper.path

    @property
    def backend(self) -> str:
        """The name of the catalog's index backend."""
        return self.store.meta("index_backend") or DEFAULT_BACKEND

    @property
    def repaired(self) -> bool:
        """True when opening had to rebuild the index or bring it up to date."""
        return self.index_keeper.repaired

    @property
    def last_rebuild(self) -> dict[str, float]:
        """Seconds spent in the last index rebuild (train_s, add_s, write_s)."""
        return self.index_keeper.last_rebuild

    @property
    def dim(self) -> int | None:
        return self.store.dim

    @property
    def model(self) -> str | None:
        """The model the catalog's vectors come from, as recorded. A catalog built with
        `default` when another model was bundled as the default names that one (by the
        fingerprint of its vectors), so it keeps its model across releases."""
        spec = self.store.meta("model")
        if spec != "default":
            return spec
        maker = bundled_maker_of(self.store.meta("model_fingerprint"))
        return "default" if maker in (None, DEFAULT_NAME) else maker

    def model_fingerprint(self) -> str | None:
        """Which model's vectors the catalog holds now (another process may have moved it
        to another model with `reembed`): a query vector must come from the same one."""
        self._catch_up()
        return self.store.meta("model_fingerprint")

    def holds_vectors_of(self, recorded: str) -> bool:
        """Whether vectors recorded under `recorded` compare with the catalog's: the same
        fingerprint, or two names of the catalog's model (`Embedder.makes_vectors_of`)."""
        stored = self.model_fingerprint()
        if stored == recorded:
            return True
        if stored is None or self.model is None:
            return False
        try:
            embedder = self.embedder()
        except FashionLensError:
            return False
        return embedder.makes_vectors_of(stored) and embedder.makes_vectors_of(recorded)

    def _use_embedder(self, embedder: Embedder) -> None:
        fingerprint = self.store.meta("model_fingerprint")
        if fingerprint is None and self.dim not in (None, embedder.dim):
            raise FashionLensError(
                f"{self.path}: the catalog holds {self.dim}-d vectors and {embedder.spec} "
                f"gives {embedder.dim}-d ones; search it by vector or item, or pass a "
                "model giving vectors of that size")
        if fingerprint is None:
            self.store.set_meta(embedder.vector_model.recorded())
        elif not embedder.makes_vectors_of(fingerprint) or self.dim != embedder.dim:
            raise FashionLensError(
                f"{self.path}: the catalog was built with model {self.model} "
                f"({fingerprint}, {self.dim}-d vectors), not {embedder.spec} "
                f"({embedder.vector_fingerprint}, {embedder.dim}-d); vectors of different models "
                "cannot be compared: use the catalog's model, move the catalog to this one "
                f"(fashionlens catalog reembed --catalog {self.path} --model {embedder.spec}), "
                "or build a new catalog")
        self._embedder = embedder

    def embedder(self) -> Embedder:
        """The catalog's embedder, loaded on first use."""
        self._catch_up()  # another process may have re-embedded the catalog
        if self._embedder is None:
            spec = self.model
            if spec is None and self._model_request is None \
                    and self.store.meta("vectors_only"):
                raise FashionLensError(
                    f"{self.path}: this catalog holds imported vectors and no model is "
                    "recorded for them; search it by item or vector, or pass the model the "
                    "vectors were computed with (--model)")
            if spec is not None and self._model_request is None:
                try:
                    embedder = Embedder.from_spec(spec, runtime=self.runtime)
                except ModelError as exc:
                    raise ModelError(f"{exc} (the model this catalog was built with; if it "
                                     "moved, pass its new location with --model)") from exc
            else:
                embedder = Embedder(self._model_request, runtime=self.runtime)
            self._use_embedder(embedder)
        return self._embedder

    # -- the index

    def rebuild(self, clean_photos: bool = True) -> dict:
        """Re-create the index from the stored embeddings (the backend picks what suits
        the catalog's size; an IVF index is trained on a random sample of the items) and
        delete photos no item uses any more (left by a crash between copying a photo and
        committing its batch)."""
        return self.index_keeper.rebuild(clean_photos)

    # -- changing the model

    def reembed(self, model: str | Path | None = None, *, batch_size: int = 32,
                chunk: int = 512, progress: Callable[[int], None] | None = None) -> dict:
        """Recompute every item's vector with another model (None: the bundled one)
        from the catalog's own copies of the photos, e.g. after training a better
        embedding or upgrading fashionlens. Resumable and atomic (see `migrate`); an
        unreadable photo stops the run before the swap, naming the item."""
        from .migrate import reembed

        embedder = Embedder(model, runtime=self.runtime)
        result = reembed(self.store, self.index_keeper, embedder, batch_size=batch_size,
                         chunk=chunk, progress=progress)
        self._embedder = embedder
        self.planner.invalidate()
        return result

    def retag(self, *, batch_size: int = 32, chunk: int = 512,
              progress: Callable[[int], None] | None = None) -> dict:
        """Tag every item that has a stored photo again with the catalog's model (e.g.
        for a catalog built before tags, or after a model change): resumable and
        atomic like `reembed` (see `migrate`). The shop's values are not touched."""
        from .migrate import retag

        result = retag(self.store, self.embedder(), batch_size=batch_size, chunk=chunk,
                       progress=progress)
        self.planner.invalidate()
        return result

    def review_tags(self, min_probability: float = REVIEW_PROBABILITY) -> list[dict]:
        """Items whose shop value disagrees with a prediction at least this sure (compared
        without case): a listing filed under the wrong category, a colour mistyped. Most
        sure first."""
        if not 0.0 <= min_probability <= 1.0:
            raise FashionLensError(f"min_probability must be in [0, 1], not {min_probability}")
        found = []
        for field in (*PREDICTABLE, *[f for f in tags.predicted_fields(self.store.db)
                                      if f.startswith("extra.")]):
            column = column_sql(field)
            for row in self.store.db.execute(
                    f"SELECT i.id, {column} AS shop, p.task, "
                    f"p.label, p.probability FROM items i JOIN predictions p ON p.key = i.key "
                    f"WHERE p.field = ? AND p.kind = ? AND p.probability >= ? "
                    f"AND {column} IS NOT NULL "
                    f"AND lower({column}) != lower(p.label)",
                    (field, tags.CLASSIFICATION, min_probability)):
                found.append({"id": row["id"], "field": field, "shop": row["shop"],
                              "task": row["task"], "predicted": row["label"],
                              "probability": round(float(row["probability"]), 4)})
        return sorted(found, key=lambda r: (-r["probability"], r["id"], r["field"]))

    # -- adding items

    def add_iter(self, records: Iterable[ItemRecord], batch_size: int = 32,
                 image_root: str | Path | None = None) -> Iterator[AddOutcome]:
        """Add items a batch at a time, yielding one outcome per record, in order.

        Ids already in the catalog are skipped (so re-running an interrupted build
        resumes it); unreadable photos and bad metadata are reported and skipped, as are
        photo paths outside `image_root` when it is given. Each batch is one SQLite
        transaction: an error or interruption mid-batch leaves the catalog as it was
        before that batch. Photos are embedded without holding the write lock; each
        batch's commit holds it. The index file is saved once at the end.
        """
        seen: set[str] = set()
        changed = False
        iterator = iter(records)
        ingest = self.ingestor
        self.index_keeper.deferred = False
        try:
            while batch := list(itertools.islice(iterator, batch_size)):
                outcomes, todo = ingest.plan(batch, seen, image_root)
                if todo:
                    # The vector and the model's tags come from one forward pass.
                    results = self.embedder().embed([batch[i].image for i in todo],
                                                    names=[batch[i].describe() for i in todo],
                                                    batch_size=batch_size, tags=self.tagging)
                    ready, vectors, predicted = [], [], []
                    for i, result in zip(todo, results, strict=True):
                        if result.ok:
                            ready.append(i)
                            vectors.append(result.vector)
                            predicted.append(result.predictions)
                        else:
                            outcomes[i] = AddOutcome(batch[i].id, "failed",
                                                     batch[i].describe(), result.error)
                    if ready:
                        keys = ingest.commit(batch, np.stack(vectors), outcomes, ready,
                                             predicted if self.tagging else None,
                                             tagger=self.embedder().tagger_fingerprint)
                        changed = changed or bool(len(keys))
                yield from outcomes  # type: ignore[misc]
        except BaseException:
            self.index_keeper.abort()
            raise
        finally:
            if changed or self.index_keeper.deferred:
                self.index_keeper.finish(changed)

    def add(self, records: Iterable[ItemRecord], batch_size: int = 32,
            image_root: str | Path | None = None) -> AddReport:
        report = AddReport()
        for outcome in self.add_iter(records, batch_size, image_root):
            report.record(outcome)
        return report

    def add_source(self, source: str | Path, batch_size: int = 32,
                   image_root: str | Path | None = None, **options) -> AddReport:
        """Add every item of a CSV export, a folder of photos or one photo (`read_source`;
        with `image_root`, photo paths must resolve inside that folder)."""
        items = read_source(source, image_root=image_root, **options)
        report = AddReport()
        for problem in items.problems:
            report.record(problem)
        # read_source has already refused photos outside `image_root`, naming their rows.
        for outcome in self.add_iter(items.records, batch_size):
            report.record(outcome)
        return report

    def add_vectors(self, records: Sequence[ItemRecord], vectors: np.ndarray,
                    batch_rows: int = VECTOR_BATCH_ROWS,
                    progress: Callable[[int], None] | None = None) -> AddReport:
        """Add items whose vectors are already computed (`vectors[i]` for `records[i]`,
        in this catalog's embedding space). See `add_vector_batches`."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(records):
            raise FashionLensError(f"expected {len(records)} vectors (one row per record), "
                                   f"got an array of shape {vectors.shape}")
        batches = ((records[i:i + batch_rows], vectors[i:i + batch_rows])
                   for i in range(0, len(records), batch_rows))
        return self.add_vector_batches(batches, progress=progress)

    def add_vector_batches(self, batches: Iterable[tuple[Sequence[ItemRecord], np.ndarray]],
                           progress: Callable[[int], None] | None = None) -> AddReport:
        """Bulk-add items with precomputed vectors, a (records, vectors) batch at a time.

        Each batch is one SQLite transaction (an interruption keeps whole batches; ids
        already present are skipped, so re-running resumes). Vectors are L2-normalised;
        a photo (`record.image`) is copied when given, else the item has none. The index
        takes each batch while it still suits the catalog's size; once the catalog
        outgrows it, the index is built once at the end from the stored vectors (which
        also trains an IVF index on a sample of the whole catalog). `progress` is called
        with the number of records handled after each batch.
        """
        dim = self.dim
        if dim is None:
            dim = self.embedder().dim  # a new catalog: the vectors must be the model's
        report = AddReport()
        for outcome in self.ingestor.add_vector_batches(batches, dim, progress):
            report.record(outcome)
        return report

    def import_shards(self, shards: str | Path | Sequence[str | Path], *,
                      progress: Callable[[int], None] | None = None) -> dict:
        """Import the Parquet shards `fashionlens embed` wrote (a folder or files): one
        streaming, atomic import (all items or none) whose memory is bounded by a shard.
        Every shard's model fingerprint must be the catalog's (a new catalog takes the
        shards' model); an id already in the catalog or repeated is an error naming the
        shard. See `shards.import_shards`."""
        from .shards import import_shards

        return import_shards(self, shards, progress=progress)

    # -- reading and changing items

    def get(self, item_id: str) -> Item:
        return self.store.item(self.store.row(item_id))

    def items(self, filters=None) -> Iterator[Item]:
        where, params = to_sql(parse_filters(filters))
        cursor = self.store.db.execute(
            f"SELECT {ITEM_COLUMNS} FROM items WHERE {where} ORDER BY key", params)
        while rows := cursor.fetchmany(IN_CHUNK):  # predicted tags read a chunk at a time
            predicted = self.store.predicted([row["key"] for row in rows])
            for row in rows:
                yield self.store.item(row, predicted.get(row["key"], {}))

    def vector(self, item_id: str) -> np.ndarray:
        """The stored unit vector of an item."""
        return self.store.stored_vector(item_id)[1].copy()

    def _stored_vector(self, item_id: str) -> tuple[int, np.ndarray]:
        """(key, vector): kept for callers written before `vector`."""
        return self.store.stored_vector(item_id)

    def update(self, item_id: str, values: Mapping[str, Any] | None = None, **fields) -> Item:
        """Change metadata (category, colour, size, price, status, extra.NAME); the photo
        and its vector are untouched, so the index is too. None or '' clears a field.

        Linear in the number of fields, which is bounded (MAX_EXTRA_FIELDS extra fields,
        MAX_FIELD_NAME_CHARS per name, MAX_VALUE_CHARS per value)."""
        given = {**(values or {}), **fields}
        if not given:
            raise FashionLensError("nothing to update")
        if len(given) > len(METADATA_FIELDS) + MAX_EXTRA_FIELDS:
            raise FashionLensError(f"{len(given)} fields in one update; an item has "
                                   f"{len(METADATA_FIELDS)} fields and at most "
                                   f"{MAX_EXTRA_FIELDS} extra fields")
        changes: dict[str, Any] = {}
        for name, value in given.items():
            apply_field(changes, name, value)
        columns: dict[str, Any] = {}
        with self.store.writing():  # read-modify-write of `extra`: no other writer between
            row = self.store.row(item_id)
            extra = json.loads(row["extra"] or "{}")
            before = len(extra)
            extra_changed = False
            for name, value in changes.items():
                if name.startswith("extra."):
                    key = name[len("extra."):]
                    if value is None:
                        extra.pop(key, None)
                    else:
                        extra[key] = value
                    extra_changed = True
                elif name == "status" and value is None:
                    columns["status"] = "available"
                else:
                    columns[name] = value
            if extra_changed:
                if len(extra) > MAX_EXTRA_FIELDS and len(extra) > before:
                    raise FashionLensError(f"extra: the item would have {len(extra)} extra "
                                           f"fields; an item has at most {MAX_EXTRA_FIELDS} "
                                           "extra fields")
                columns["extra"] = json.dumps(extra, ensure_ascii=False, sort_keys=True)
            columns["updated_at"] = now()
            self.store.update_row(row["key"], columns)
            self.planner.columns_changed([row["key"]])
        return self.get(item_id)

    def mark_sold(self, item_id: str) -> Item:
        return self.update(item_id, status="sold")

    def remove(self, item_ids: str | Iterable[str]) -> list[str]:
        """Delete items, their vectors and their stored photos (one transaction)."""
        ids = [item_ids] if isinstance(item_ids, str) else list(item_ids)
        store = self.store
        with store.writing():
            rows = [store.row(item_id) for item_id in ids]  # unknown ids fail before any change
            keys = sorted({row["key"] for row in rows})
            photos = sorted({row["image"] for row in rows if row["image"]})
            # Listed first: a crash after the commit leaves them for the next writer.
            store.write_pending([Path(p).name for p in photos])
            try:
                store.delete_keys(keys)
            except BaseException:
                store.clear_pending()  # nothing was deleted: the photos stay in use
                raise
            for photo in photos:
                with contextlib.suppress(OSError):
                    (self.path / photo).unlink()
            store.clear_pending()
            self.planner.columns_dropped(keys)
            index = self.index_keeper.current()
            if index is not None:
                try:
                    index.remove(keys)
                except BaseException:
                    self.index_keeper.failed()
                    raise
            self.index_keeper.finish(changed=True)
        return ids

    # -- searching

    def search(self, image: str | Path | bytes | Any = None, *, item: str | None = None,
               vector: np.ndarray | None = None, k: int = 10, filters=None,
               steer: Mapping[str, float] | str | None = None,
               like: Sequence[str] | None = None, unlike: Sequence[str] | None = None,
               min_similarity: float | None = None) -> list[Match]:
        """The k items most similar to a photo (path, bytes, PIL image), to an item
        (which is left out of its own results) or to a precomputed `vector`, best
        first, among those matching `filters` (strings such as 'price<30', a list of
        them, or a mapping), with the query moved along learned directions
        (`steer={"striped": 0.5}` or 'striped=0.5, solid=-0.3'; see `learn_directions`).
        Similarities are exact (float vectors), also when an approximate index found
        them.

        `like` (item ids a shopper liked) searches for more like these, `unlike` (only
        with `like`) away from those (see UNLIKE_WEIGHT; an id in both counts as liked);
        the items named are left out of the results. Each match says whether it is below
        the catalog's relevance floor (`weak`, see `indexing.FLOOR_NEIGHBOUR`);
        `min_similarity` drops the matches below it (then fewer than k may come back)."""
        like = list(like or [])
        unlike = list(unlike or [])
        if unlike and not like:
            raise FashionLensError("--unlike needs at least one --like item")
        if sum(x is not None for x in (image, item, vector, like or None)) != 1:
            raise FashionLensError("search by a photo, an item id, a vector or liked items "
                                   "(exactly one)")
        if k < 1:
            raise FashionLensError(f"k must be at least 1, not {k}")
        if min_similarity is not None and not -1.0 <= float(min_similarity) <= 1.0:
            raise FashionLensError(f"min_similarity must be from -1 to 1, not {min_similarity}")
        conditions = parse_filters(filters)
        weights = parse_steering(steer)
        directions = self.store.direction_vectors() if weights else {}
        excluded: list[int] = []
        if like:
            query, excluded = self._liked_query(like, unlike)
        elif item is not None:
            key, query = self.store.stored_vector(item)
            excluded = [key]
        elif vector is not None:
            query = self.planner.query_vector(vector)
        else:
            label = str(image) if isinstance(image, str | Path) else "<query photo>"
            query = self.embedder().embed_one(image, name=label)
        if weights:
            query = steering.steer(query, directions, weights)
        matches = self.planner.search(query, k, conditions, excluded)
        floor = self.relevance_floor()
        for match in matches:
            match.weak = floor is not None and match.similarity < floor
        if min_similarity is not None:
            matches = [m for m in matches if m.similarity >= min_similarity]
        return matches

    def relevance_floor(self) -> float | None:
        """The similarity below which a result is a weak match (measured on this catalog:
        `indexing.FLOOR_NEIGHBOUR`); None for a catalog too small to measure."""
        return weak_below(self.store)

    def _liked_query(self, like: list[str], unlike: list[str]) -> tuple[np.ndarray, list[int]]:
        """The query vector of "more like these" (see UNLIKE_WEIGHT) and the keys of the
        items named (left out of the results)."""
        for name, ids in (("like", like), ("unlike", unlike)):
            if len(ids) > MAX_LIKED:
                raise FashionLensError(f"{len(ids)} --{name} items; at most {MAX_LIKED}")
        unlike = [i for i in unlike if i not in set(like)]  # an item also liked is liked
        keys: list[int] = []

        def mean(ids: list[str]) -> np.ndarray:
            vectors = []
            for item_id in dict.fromkeys(ids):
                key, vector = self.store.stored_vector(item_id)
                keys.append(key)
                vectors.append(vector)
            return np.mean(vectors, axis=0)

        query = normalise(mean(like))
        if unlike:
            query = query - UNLIKE_WEIGHT * normalise(mean(unlike))
        if not np.all(np.isfinite(query)) or not np.any(query):
            raise FashionLensError("the liked items cancel out; like some other items")
        return normalise(query), keys

    def filter_mask(self, filters) -> np.ndarray:
        """Boolean array over item keys: the items matching `filters` (what a filtered
        search ranks)."""
        return self.planner.filter_mask(parse_filters(filters))

    def duplicate_threshold(self) -> float:
        """The near-duplicate line of the model whose vectors the catalog holds (recorded
        when they were made); DUPLICATE_THRESHOLD for imported vectors and for catalogs
        made before models carried their own."""
        self._catch_up()
        return duplicate_line(self.store.meta("duplicate_threshold"))

    def near_duplicates(self, threshold: float | None = None, neighbours: int = 10
                        ) -> list[DuplicatePair]:
        """Pairs of items whose photos are near-identical (cosine similarity >= threshold,
        by default the catalog model's line), most similar first. Exact (range search)
        with a flat index; with IVF each item's `neighbours` nearest are checked
        (similarities from 8-bit codes)."""
        if threshold is None:
            threshold = self.duplicate_threshold()
        return self.planner.near_duplicates(threshold, neighbours)

    # -- steering directions

    def learn_directions(self, field: str, *, method: str = "mean",
                         values: Iterable[str] | None = None, min_count: int = 5,
                         filters=None) -> list[Direction]:
        """Learn one direction per value of a metadata field (category, colour, size,
        status or extra.NAME) from the catalog's own items, and keep them (replacing
        directions of the same name). Returns the directions learned."""
        label_fields = "category, colour, size, status or extra.NAME"
        try:
            name = canonical_field(field, field)
        except FashionLensError:
            raise FashionLensError(f"cannot learn directions from '{field}': no such field; "
                                   f"use a label field ({label_fields})") from None
        if name in ("id", "price"):
            raise FashionLensError(f"cannot learn directions from '{name}': use a label "
                                   f"field ({label_fields})")
        where, params = to_sql(parse_filters(filters))
        labels, chunks = [], []
        cursor = self.store.db.execute(
            f"SELECT key, {column_sql(name)}, embedding FROM items WHERE {where} ORDER BY key",
            params)
        dim = self.dim or 0
        while rows := cursor.fetchmany(SCAN_ROWS):
            labels.extend(r[1] for r in rows)
            chunks.append(self.store.vectors_from_blobs([r[0] for r in rows],
                                                        [r[2] for r in rows], dim))
        if not labels:
            raise FashionLensError(f"{self.path}: no items to learn directions from")
        vectors = np.concatenate(chunks)
        learned = learn_directions(vectors, labels, field=name, method=method,
                                   values=list(values) if values else None,
                                   min_count=min_count)
        if not learned:
            raise FashionLensError(
                f"{self.path}: no value of {name} has {min_count} items carrying it and "
                f"{min_count} labelled items without it")
        with self.store.transaction() as db:
            self.store.store_directions(db, learned)
        return learned

    def directions(self) -> list[str]:
        """Names of the learned steering directions, sorted."""
        return self.store.direction_names()

    def direction_info(self) -> list[dict]:
        return self.store.direction_info()

    def remove_directions(self, names: Iterable[str] | None = None) -> list[str]:
        """Forget the named directions (all of them when `names` is None)."""
        known = set(self.directions())
        wanted = sorted(known) if names is None else list(names)
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise FashionLensError(f"{self.path}: no steering direction named "
                                   f"{', '.join(unknown)}")
        self.store.delete_directions(wanted)
        return wanted

    # -- a summary

    def info(self) -> dict:
        db = self.store.db
        statuses = dict(db.execute(
            "SELECT status, count(*) FROM items GROUP BY status ORDER BY status").fetchall())
        categories = dict(db.execute(
            "SELECT coalesce(category, ''), count(*) FROM items GROUP BY 1 "
            "ORDER BY 2 DESC, 1").fetchall())
        index = self.index_keeper.current()
        return {
            "path": str(self.path),
            "items": len(self),
            "statuses": statuses,
            "categories": categories,
            "values": self.value_counts(),
            "tags": self.tag_summary(),
            "weak_below": self.relevance_floor(),
            "model": self.model,
            "model_fingerprint": self.store.meta("model_fingerprint"),
            "dimension": self.dim,
            "duplicate_threshold": self.duplicate_threshold(),
            "index": index.kind if index else None,
            "index_backend": self.backend,
            "index_vectors": index.ntotal if index else 0,
            "index_details": index.describe() if index else None,
            "tombstones": 0,  # removals delete vectors at once (kept for older readers)
            "directions": self.directions(),
            "created_at": self.store.meta("created_at"),
        }

    def value_counts(self, limit: int = INFO_VALUES) -> dict[str, dict[str, dict[str, int]]]:
        """Items per value of each field the model's tags can fill, by the filter rule
        (`tags`): {field: {value: {"items": n, "predicted": m}}}, m of them from a
        prediction (no shop value); the most frequent `limit` values of each field."""
        db = self.store.db
        extra = {*tags.predicted_fields(db), *tags.predicted_fields(db, tags.MULTILABEL)}
        fields = [*PREDICTABLE, *sorted(f for f in extra if f.startswith("extra."))]
        counts: dict[str, dict[str, dict[str, int]]] = {}
        for field in fields:
            rows = db.execute(
                f"SELECT {value_sql(field)} AS v, count(*), sum({column_sql(field)} IS NULL) "
                f"FROM items GROUP BY v COLLATE NOCASE HAVING v IS NOT NULL "
                f"ORDER BY 2 DESC, 1 LIMIT ?", (limit,)).fetchall()
            if rows:
                counts[field] = {str(r[0]): {"items": int(r[1]), "predicted": int(r[2] or 0)}
                                 for r in rows}
        for field in tags.predicted_fields(db, tags.MULTILABEL):  # tag heads: per tag
            column = column_sql(field)
            found = counts.setdefault(field, {})
            for label, n in db.execute(
                    "SELECT p.label, count(*) FROM predictions p JOIN items ON items.key = "
                    f"p.key WHERE p.field = ? AND p.kind = ? AND p.confident = 1 AND "
                    f"{column} IS NULL GROUP BY p.label ORDER BY 2 DESC, 1 LIMIT ?",
                    (field, tags.MULTILABEL, limit)):
                entry = found.setdefault(str(label), {"items": 0, "predicted": 0})
                entry["items"] += int(n)
                entry["predicted"] += int(n)
        return counts

    def tag_summary(self) -> dict:
        """Which model tagged the items and how many carry tags (`catalog retag` tags the
        rest: photos added before tags, or after a change of model)."""
        db = self.store.db
        tagged = int(db.execute("SELECT count(DISTINCT key) FROM predictions").fetchone()[0])
        photos = int(db.execute("SELECT count(*) FROM items WHERE image != ''").fetchone()[0])
        stored = dict(db.execute("SELECT DISTINCT task, field FROM predictions "
                                 "ORDER BY task"))  # as the tagging model mapped them
        tasks = sorted(stored)
        tagger = self.store.meta("tags_model")
        current = None  # not recorded (tagged by an older version), or no model to ask
        if tagger == TAGS_MIXED:
            current = False
        elif tagger is not None and tagged:
            model = self._tagging_model()
            if model is not None and tagger != model[0] and tagger == model[1]:
                current = None  # recorded by a version that noted the weights alone
            elif model is not None:
                current = tagger == model[0]
        return {"tagged_items": tagged, "items_with_photos": photos, "tasks": tasks,
                "fields": {task: stored[task] for task in tasks},
                "tags_model": tagger, "tags_current": current}

    def _tagging_model(self) -> tuple[str, str] | None:
        """(tagger fingerprint, whole fingerprint) of the model that tags what is added
        now: the loaded embedder's, else the recorded model's, read from its folder (no
        runtime loaded)."""
        if self._embedder is not None:
            return self._embedder.tagger_fingerprint, self._embedder.fingerprint
        spec = self._model_request or self.model
        try:
            folder = resolve_model(spec).folder if spec is not None else None
            if folder is None:
                return None
            info = read_info(folder)
            whole = fingerprint_of(folder, info)
            return tagger_fingerprint_of(folder, info, whole), whole
        except FashionLensError:
            return None
