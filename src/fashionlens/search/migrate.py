"""Migrations: moving a catalog to another model (`Catalog.reembed`) and tagging its
items again (`Catalog.retag`).

(The schema itself is upgraded by `schema.upgrade` when a catalog is opened: schema 2
adds the `predictions` table of `tags`.)

`reembed` and `retag` are resumable and atomic: new vectors (and the model's tags, from
the same forward pass) are staged a chunk at a time in side tables (an interrupted run
continues where it stopped), then one transaction swaps them in (a re-embedding also
records the new model and re-learns the steering directions in the new space; the index
is rebuilt last). Until the swap the catalog stays as it was.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Callable

import numpy as np

from ..errors import FashionLensError
from . import tags
from .embeddings import Embedder
from .filters import column_sql
from .indexing import IndexKeeper
from .schema import PREDICTIONS_SCHEMA
from .steering import Direction, learn_directions
from .store import CatalogStore

TODO_SQL = ("SELECT key, id, image FROM items WHERE key NOT IN "
            "(SELECT key FROM reembed) ORDER BY key")
RETAG_TODO_SQL = ("SELECT key, id, image FROM items WHERE image != '' AND key NOT IN "
                  "(SELECT key FROM retag_done) ORDER BY key")
# Staged tags: the predictions table's columns, in a side table until the swap.
STAGED_SCHEMA = PREDICTIONS_SCHEMA.split(";")[0].replace("predictions", "{table}")


def _stage_tags(db: sqlite3.Connection, table: str, staged: list[tuple]) -> None:
    CatalogStore.store_predictions(db, staged, table)


def _swap_tags(db: sqlite3.Connection, table: str, keys_sql: str) -> None:
    """Replace the predictions of the items `keys_sql` selects by the staged ones."""
    db.execute(f"DELETE FROM predictions WHERE key IN ({keys_sql})")
    db.execute(f"INSERT OR REPLACE INTO predictions SELECT * FROM {table} "
               "WHERE key IN (SELECT key FROM items)")
    db.execute(f"DROP TABLE {table}")


def retag(store: CatalogStore, embedder: Embedder, *, batch_size: int = 32,
          chunk: int = 512, progress: Callable[[int], None] | None = None) -> dict:
    """Tag every item that has a photo again with `embedder`'s heads (the catalog's
    model, e.g. after `reembed` or for a catalog built before tags): staged, then
    swapped in at once (see the module); returns what was done."""
    target = embedder.tagger_fingerprint
    with store.transaction(changes_items=False) as db:
        db.execute(STAGED_SCHEMA.format(table="retag_tags"))
        db.execute("CREATE TABLE IF NOT EXISTS retag_done (key INTEGER PRIMARY KEY)")
        if store.meta("retag_target") != target:  # a run for another model: restart
            db.execute("DELETE FROM retag_tags")
            db.execute("DELETE FROM retag_done")
            store.set_meta({"retag_target": target}, db)
    resumed = int(store.db.execute("SELECT count(*) FROM retag_done").fetchone()[0])
    todo = store.db.execute(RETAG_TODO_SQL).fetchall()
    done = 0
    while True:
        _embed_stored(store, embedder, todo, batch_size, chunk, progress, _stage_retag,
                      unchanged="no tag was changed")
        done += len(todo)
        with store.writing():
            todo = store.db.execute(RETAG_TODO_SQL).fetchall()
            if todo:  # items another process added meanwhile are tagged before the swap
                continue
            with store.transaction() as db:
                _swap_tags(db, "retag_tags", "SELECT key FROM retag_done")
                db.execute("DROP TABLE retag_done")
                db.execute("DELETE FROM meta WHERE name = 'retag_target'")
                store.set_meta({"tags_model": target}, db)
            break
    tagged = int(store.db.execute("SELECT count(DISTINCT key) FROM predictions").fetchone()[0])
    return {"items": done + resumed, "resumed": resumed, "model": embedder.spec,
            "tasks": [h.name for h in embedder.heads], "tagged": tagged}


def reembed(store: CatalogStore, keeper: IndexKeeper, embedder: Embedder, *,
            batch_size: int = 32, chunk: int = 512,
            progress: Callable[[int], None] | None = None) -> dict:
    """Stage every item's new vector, swap them in and rebuild the index (see the
    module); returns what was done."""
    vectorless = [r[0] for r in store.db.execute(
        "SELECT id FROM items WHERE image = '' ORDER BY key LIMIT 6")]
    if vectorless:
        raise FashionLensError(
            f"{store.path}: items without a photo (imported vectors, e.g. "
            f"{', '.join(vectorless[:5])}) cannot be re-embedded; remove them first")
    target = f"{embedder.vector_fingerprint}:{embedder.dim}"
    with store.transaction(changes_items=False) as db:
        db.execute("CREATE TABLE IF NOT EXISTS reembed "
                   "(key INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
        db.execute(STAGED_SCHEMA.format(table="reembed_tags"))
        if store.meta("reembed_target") != target:  # a run for another model: restart
            db.execute("DELETE FROM reembed")
            db.execute("DELETE FROM reembed_tags")
            store.set_meta({"reembed_target": target}, db)
    resumed = int(store.db.execute("SELECT count(*) FROM reembed").fetchone()[0])
    todo = store.db.execute(TODO_SQL).fetchall()
    done = 0
    while True:
        _embed_stored(store, embedder, todo, batch_size, chunk, progress, _stage_reembed,
                      unchanged="nothing was changed")
        done += len(todo)
        with store.writing():
            # Items another process added meanwhile are embedded before the swap.
            todo = store.db.execute(TODO_SQL).fetchall()
            if todo:
                continue
            _swap(store, keeper, embedder)
            rebuilt = keeper.rebuild(clean_photos=False)
            break
    return {"items": done + resumed, "resumed": resumed, "model": embedder.spec,
            "dim": embedder.dim, "index": rebuilt["index"],
            "directions": store.direction_names()}


def _embed_stored(store: CatalogStore, embedder: Embedder, rows: list[sqlite3.Row],
                  batch_size: int, chunk: int, progress: Callable[[int], None] | None,
                  write: Callable[[sqlite3.Connection, list], None], unchanged: str) -> None:
    """Run the stored photos of `rows` through `embedder` (vector and tags in one pass), a
    chunk per transaction in which `write(db, [(row, result), ...])` stages what was read;
    raise, saying `unchanged`, if any photo cannot be read (the staged rows stay for a
    resumed run)."""
    failed: list[str] = []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        results = embedder.embed([store.path / r["image"] for r in part],
                                 names=[r["id"] for r in part], batch_size=batch_size,
                                 tags=True)
        read = []
        for row, result in zip(part, results, strict=True):
            if result.ok:
                read.append((row, result))
            else:
                failed.append(f"{row['id']} ({result.error})")
        with store.transaction(changes_items=False) as db:
            write(db, read)
        if progress is not None:
            progress(len(part))
    if failed:
        raise FashionLensError(
            f"{store.path}: {len(failed)} stored photo(s) could not be read, so {unchanged}: "
            f"{'; '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}; "
            "remove those items (or fix their photos) and run again to resume")


def _stage_retag(db: sqlite3.Connection, read: list) -> None:
    staged = [r for row, result in read
              for r in tags.rows_for(row["key"], result.predictions or [])]
    _stage_tags(db, "retag_tags", staged)
    db.executemany("INSERT OR REPLACE INTO retag_done (key) VALUES (?)",
                   [(row["key"],) for row, _ in read])


def _stage_reembed(db: sqlite3.Connection, read: list) -> None:
    db.executemany("INSERT OR REPLACE INTO reembed (key, embedding) VALUES (?, ?)",
                   [(row["key"], result.vector.astype(np.float32).tobytes())
                    for row, result in read])
    _stage_tags(db, "reembed_tags", [r for row, result in read
                                     for r in tags.rows_for(row["key"],
                                                            result.predictions or [])])


def _swap(store: CatalogStore, keeper: IndexKeeper, embedder: Embedder) -> None:
    """Swap the staged vectors in (the caller holds the write lock and has staged
    every item), record the model and re-learn the steering directions."""
    directions = _relearned_directions(store, embedder.dim)
    # The index goes first: a crash before the swap then rebuilds it from the old
    # vectors, and one after the swap from the new ones (never a mix).
    keeper.forget()
    with store.transaction() as db:
        db.execute("UPDATE items SET embedding = (SELECT embedding FROM reembed "
                   "WHERE reembed.key = items.key)")
        db.execute("DELETE FROM directions")
        store.store_directions(db, directions)
        vectors_generation = secrets.token_hex(8)  # tells other readers to reload
        store.set_meta({**embedder.vector_model.recorded(),
                        "vectors_generation": vectors_generation}, db)
        db.execute("DELETE FROM meta WHERE name IN ('reembed_target', 'vectors_only')")
        db.execute("DROP TABLE reembed")
        # The new model's tags (from the same forward passes) replace the old model's.
        _swap_tags(db, "reembed_tags", "SELECT key FROM items")
        store.set_meta({"tags_model": embedder.tagger_fingerprint}, db)
    store.vectors_generation = vectors_generation


def _relearned_directions(store: CatalogStore, dim: int) -> list[Direction]:
    """The stored directions learned again (same field, method and values) from the
    staged vectors; a value that no longer has enough items is dropped."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for row in store.db.execute("SELECT field, value, method FROM directions"):
        wanted.setdefault((row["field"], row["method"]), []).append(row["value"])
    learned: list[Direction] = []
    for (name, method), values in sorted(wanted.items()):
        rows = store.db.execute(
            f"SELECT {column_sql(name)}, reembed.embedding FROM items "
            "JOIN reembed ON reembed.key = items.key ORDER BY items.key").fetchall()
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        with contextlib.suppress(FashionLensError):
            # The labels are the ones the directions were learned from, which already
            # passed the caller's min_count: keep every value that still has items.
            learned.extend(learn_directions(vectors.reshape(len(rows), dim),
                                            [r[0] for r in rows], field=name,
                                            method=method, values=values, min_count=1))
    return learned
