"""Migration: moving a catalog to another model (`Catalog.reembed`).

Resumable and atomic: new vectors are staged a chunk at a time in a side table (an
interrupted run continues where it stopped), then one transaction swaps them in,
records the new model and re-learns the steering directions in the new space; the
index is rebuilt last. Until the swap the catalog stays as it was.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Callable

import numpy as np

from ..errors import FashionLensError
from .embeddings import Embedder
from .filters import column_sql
from .indexing import IndexKeeper
from .steering import Direction, learn_directions
from .store import CatalogStore

TODO_SQL = ("SELECT key, id, image FROM items WHERE key NOT IN "
            "(SELECT key FROM reembed) ORDER BY key")


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
    target = f"{embedder.fingerprint}:{embedder.dim}"
    with store.transaction(changes_items=False) as db:
        db.execute("CREATE TABLE IF NOT EXISTS reembed "
                   "(key INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
        if store.meta("reembed_target") != target:  # a run for another model: restart
            db.execute("DELETE FROM reembed")
            store.set_meta({"reembed_target": target}, db)
    resumed = int(store.db.execute("SELECT count(*) FROM reembed").fetchone()[0])
    todo = store.db.execute(TODO_SQL).fetchall()
    done = 0
    while True:
        _stage(store, embedder, todo, batch_size, chunk, progress)
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


def _stage(store: CatalogStore, embedder: Embedder, rows: list[sqlite3.Row],
           batch_size: int, chunk: int, progress: Callable[[int], None] | None) -> None:
    """Embed the stored photos of `rows` into the `reembed` table, a chunk per
    transaction; raise (changing nothing else) if any photo cannot be read."""
    failed: list[str] = []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        results = embedder.embed([store.path / r["image"] for r in part],
                                 names=[r["id"] for r in part], batch_size=batch_size)
        staged = []
        for row, result in zip(part, results, strict=True):
            if result.ok:
                staged.append((row["key"], result.vector.astype(np.float32).tobytes()))
            else:
                failed.append(f"{row['id']} ({result.error})")
        with store.transaction(changes_items=False) as db:
            db.executemany("INSERT OR REPLACE INTO reembed (key, embedding) VALUES (?, ?)",
                           staged)
        if progress is not None:
            progress(len(part))
    if failed:
        raise FashionLensError(
            f"{store.path}: {len(failed)} stored photo(s) could not be read, so nothing "
            f"was changed: {'; '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}; "
            "remove those items (or fix their photos) and run again to resume")


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
        store.set_meta({"model": embedder.spec, "model_fingerprint": embedder.fingerprint,
                        "dim": str(embedder.dim), "vectors_generation": vectors_generation},
                       db)
        db.execute("DELETE FROM meta WHERE name IN ('reembed_target', 'vectors_only')")
        db.execute("DROP TABLE reembed")
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
