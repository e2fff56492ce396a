"""The catalog's SQLite store: items (metadata, vectors, photo names), meta, steering
directions, and the machinery every write goes through.

    catalog/
      catalog.sqlite        items, meta (model, fingerprint, dim, generation), directions
      images/               the catalog's own copy of every photo
      write.lock            held by every write (filelock), across processes
      pending-photos.json   photos a write is creating or deleting, until it commits

Every write holds `write.lock` for its SQLite commit, its photo files and the index file
it saves; on taking it, a crashed writer's photos are cleaned up and the owner's
`catch_up` hook runs, so what the owner writes reflects the others' commits. Each
committed write bumps a generation counter in `meta`; `poll` tells whether another
connection committed since (one PRAGMA, and one small SELECT when something did).
Readers take no lock (WAL).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import filelock
import numpy as np

from ..errors import CatalogBusyError, FashionLensError, ItemExistsError, UnknownItemError
from . import tags
from .records import Item, ItemRecord, now
from .schema import SCHEMA_VERSION, upgrade
from .steering import Direction

log = logging.getLogger("fashionlens.search.catalog")

CATALOG_DB = "catalog.sqlite"
IMAGES_DIR = "images"
# Several processes may open one catalog (a server and CLI commands). Every write holds
# this lock file (SQLite commit, photo files, index file), waiting at most
# LOCK_TIMEOUT_S for another writer; readers never take it.
LOCK_FILE = "write.lock"
LOCK_TIMEOUT_S = 120.0
# While a writer creates or deletes photos it lists them here; the next writer to take the
# lock after a crash deletes the listed photos that no item references.
PENDING_FILE = "pending-photos.json"
# Values per `IN (...)` list in one statement (SQLite caps the number of placeholders).
IN_CHUNK = 500
# Stored embeddings are read this many rows at a time when scanning.
SCAN_ROWS = 8192

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    source TEXT,
    category TEXT,
    colour TEXT,
    size TEXT,
    price REAL,
    status TEXT NOT NULL DEFAULT 'available',
    extra TEXT NOT NULL DEFAULT '{}',
    embedding BLOB NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_category ON items (category COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS items_status ON items (status);
CREATE INDEX IF NOT EXISTS items_price ON items (price);
CREATE INDEX IF NOT EXISTS items_filter ON items (category, colour, size, price, status);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS directions (
    name TEXT PRIMARY KEY,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    method TEXT NOT NULL,
    positives INTEGER NOT NULL,
    negatives INTEGER NOT NULL,
    vector BLOB NOT NULL,
    created_at TEXT NOT NULL
);
"""
ITEM_COLUMNS = ("key, id, image, source, category, colour, size, price, status, extra, "
                 "created_at, updated_at")

def _image_name(item_id: str, suffix: str) -> str:
    """A file name for a photo, unique to this write (random part): a writer that loses
    a race for an id, or rolls back, only ever deletes files it created itself."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", item_id).strip("._")[:80] or "item"
    return f"{slug}-{secrets.token_hex(5)}{suffix.lower()}"


def _suffix_of(record: ItemRecord) -> str:
    if isinstance(record.image, bytes | bytearray):
        from PIL import Image

        with contextlib.suppress(Exception), Image.open(io.BytesIO(record.image)) as img:
            fmt = (img.format or "").lower()
            return {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}" if fmt else ".img")
        return ".img"
    return Path(record.image).suffix.lower() or ".img"


def source_of(record: ItemRecord) -> str | None:
    """Where an item's photo was copied from (None for bytes or no photo); a record's
    `source` (e.g. the URI a shard was embedded from) when it has no photo to copy."""
    if isinstance(record.image, str | Path) and record.image:
        return str(record.image)
    return getattr(record, "source", None) or None


def has_photo(record: ItemRecord) -> bool:
    return record.image is not None and not (isinstance(record.image, str)
                                             and record.image == "")


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""  # pragma: no cover


def catalog_contents(path: Path) -> list[str]:
    """What a catalog folder holds besides its database (and its WAL, lock and pending
    files): the index file(s) and the photos, described for a message. Empty when there
    is nothing a user could lose."""
    found = []
    skip = {CATALOG_DB, f"{CATALOG_DB}-wal", f"{CATALOG_DB}-shm", f"{CATALOG_DB}-journal",
            LOCK_FILE, PENDING_FILE}
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.name in skip:
            continue
        with contextlib.suppress(OSError):
            if entry.name == IMAGES_DIR and entry.is_dir():
                photos = sum(1 for f in entry.iterdir() if f.is_file())
                if photos:
                    found.append(f"{IMAGES_DIR}/ ({photos} photo file(s))")
            elif entry.is_file():
                found.append(f"{entry.name} ({_size(entry.stat().st_size)})")
            elif entry.is_dir():
                found.append(f"{entry.name}/")
    return found


def refuse_lost_database(path: Path, problem: str, contents: list[str]) -> FashionLensError:
    """The error for a catalog whose database is missing, empty or unreadable while its
    index or photos are there: nothing is re-created or deleted."""
    return FashionLensError(
        f"{path}: {problem}, but the folder holds {', '.join(contents)}; refusing to open "
        f"it (a new {CATALOG_DB} would drop that index and orphan those photos). Nothing "
        f"was changed: restore {CATALOG_DB} from a backup, or move the folder aside and "
        "build the catalog again")


# `tags_model` when the items' tags come from more than one version of the model's heads
TAGS_MIXED = "mixed"


class CatalogStore:
    """One catalog folder's database, write lock and photo files.

    `catch_up` is called whenever this process takes the write lock (after crashed
    writers' photos are cleaned up): the owner brings its in-memory state (index, filter
    columns) up to date there, so that what it writes under the lock is current.

    A database without the catalog's tables (an emptied or foreign file) is only given
    them when the folder holds nothing else (no index, no photos): otherwise opening is
    refused and nothing is changed.
    """

    def __init__(self, path: Path, lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        self.path = path
        self.lock_timeout = float(lock_timeout)
        self.catch_up: Callable[[], None] = lambda: None
        self._lock = filelock.FileLock(self.path / LOCK_FILE, thread_local=False,
                                       preserve_lock_file=True)
        self._lock_depth = 0
        db_path = self.path / CATALOG_DB
        try:
            self.db = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
        except sqlite3.DatabaseError as exc:
            contents = catalog_contents(self.path)
            if contents:
                raise refuse_lost_database(self.path, f"{CATALOG_DB} cannot be opened ({exc})",
                                           contents) from None
            raise FashionLensError(f"{db_path}: cannot open the catalog database ({exc})"
                                   ) from None
        try:
            self.db.row_factory = sqlite3.Row
            tables = {r[0] for r in self.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "items" not in tables or "meta" not in tables:
                contents = catalog_contents(self.path)
                if contents:
                    size = db_path.stat().st_size if db_path.exists() else 0
                    problem = (f"{CATALOG_DB} is empty (0 bytes)" if not size else
                               f"{CATALOG_DB} holds no catalog tables")
                    raise refuse_lost_database(self.path, problem, contents)
            (self.path / IMAGES_DIR).mkdir(exist_ok=True)
            # WAL: readers (a server's searches) and the one writer never block each other.
            with contextlib.suppress(sqlite3.OperationalError):
                self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
            # What the owner's in-memory state reflects (see `poll`): read before the
            # index so that a commit made meanwhile is noticed at the next use.
            self.data_version = self.db.execute("PRAGMA data_version").fetchone()[0]
            self.generation, self.vectors_generation = self._generations()
            version = self.meta("schema_version")
            if version is not None and not version.isdigit():
                raise FashionLensError(f"{db_path}: the catalog's meta field "
                                       f"'schema_version' is {version!r}, not a number (the "
                                       "database is damaged; restore it from a backup)")
            if version is None:
                self.set_meta({"schema_version": "1", "created_at": now()})
            elif int(version) > SCHEMA_VERSION:
                raise FashionLensError(f"{db_path}: made by a newer fashionlens "
                                       f"(schema {version}); upgrade fashionlens")
            if int(version or 1) < SCHEMA_VERSION:
                upgrade(self)
        except sqlite3.DatabaseError as exc:
            self.db.close()
            contents = catalog_contents(self.path)
            if contents:
                raise refuse_lost_database(self.path, f"{CATALOG_DB} is not a readable "
                                           f"database ({exc})", contents) from None
            raise FashionLensError(f"{db_path}: not a readable catalog database ({exc})") from exc
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()
        if self._lock.is_locked:
            self._lock.release(force=True)

    # -- meta

    def meta(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, values: dict[str, str], db: sqlite3.Connection | None = None) -> None:
        """Set meta values, in the caller's transaction `db` or in one of their own."""
        if db is not None:
            db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                           list(values.items()))
            return
        with self.transaction() as conn:
            self.set_meta(values, conn)

    def note_tagger(self, db: sqlite3.Connection, tagger: str) -> None:
        """Record, in the caller's transaction and before its tags are stored, whose heads
        tag the items (`tags_model`, `models.info.tagger_fingerprint_of`): the first, and
        TAGS_MIXED once another adds tags beside its (the same vectors from a model whose
        heads were refit). A catalog tagged before this was recorded stays unknown."""
        row = db.execute("SELECT value FROM meta WHERE name = 'tags_model'").fetchone()
        if row is None:
            if db.execute("SELECT 1 FROM predictions LIMIT 1").fetchone() is None:
                self.set_meta({"tags_model": tagger}, db)
        elif row[0] != tagger:
            self.set_meta({"tags_model": TAGS_MIXED}, db)

    @property
    def dim(self) -> int | None:
        value = self.meta("dim")
        if not value:
            return None
        try:
            dim = int(value)
        except ValueError:
            dim = 0
        if dim < 1:
            raise FashionLensError(f"{self.path / CATALOG_DB}: the catalog's meta field 'dim' "
                                   f"is {value!r}, not a positive whole number (the "
                                   "database is damaged; restore it from a backup)")
        return dim

    def vectors_from_blobs(self, keys: Sequence[int], blobs: Sequence[bytes], dim: int
                           ) -> np.ndarray:
        """Stored embeddings as an array, or an error naming the first damaged one."""
        want = 4 * dim
        for key, blob in zip(keys, blobs, strict=True):
            if len(blob) != want:
                row = self.db.execute("SELECT id FROM items WHERE key = ?", (int(key),)
                                      ).fetchone()
                name = f"item '{row[0]}'" if row else f"the item with key {int(key)}"
                raise FashionLensError(
                    f"{self.path / CATALOG_DB}: {name}: its stored embedding has {len(blob)} "
                    f"bytes, not {want} ({dim} float32 values: the catalog's 'dim'); the "
                    "database is damaged: remove the item (`fashionlens catalog remove`) "
                    "and add it again, or restore the database from a backup")
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)

    # -- transactions and the write lock

    @contextlib.contextmanager
    def transaction(self, changes_items: bool = True) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction under the write lock: all of it is committed, or none.

        It bumps the catalog's generation (unless `changes_items` is False, e.g. for
        staged vectors), which tells other open catalogs to catch up."""
        with self.writing():
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # only a writer ignoring the lock file
                raise CatalogBusyError(self.path, 30.0) from exc
            try:
                yield self.db
                if changes_items:
                    self.db.execute(
                        "INSERT INTO meta (name, value) VALUES ('generation', '1') "
                        "ON CONFLICT (name) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            if changes_items:
                self.generation = self.meta("generation")

    def _acquire(self, wait: bool) -> bool:
        """Take the write lock; False when `wait` is False and another process holds it."""
        try:
            self._lock.acquire(timeout=0)
            return True
        except filelock.Timeout:
            if not wait:
                return False
        except OSError as exc:  # e.g. a read-only catalog folder
            if not wait:
                return False
            raise FashionLensError(f"{self.path}: cannot take the catalog's write lock "
                                   f"({exc})") from exc
        log.warning("%s: catalog is busy (another process is writing); waiting...", self.path)
        try:
            self._lock.acquire(timeout=self.lock_timeout)
        except filelock.Timeout:
            raise CatalogBusyError(self.path, self.lock_timeout) from None
        return True

    @contextlib.contextmanager
    def writing(self, wait: bool = True) -> Iterator[bool]:
        """Hold the write lock (re-entrant) for a whole change: the SQLite commit, the
        photo files and the index file. On taking it, a crashed writer's photos are
        cleaned up and the owner catches up with what others committed. Yields False
        when `wait` is False and the lock is held elsewhere (then nothing may be
        written)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield True
            finally:
                self._lock_depth -= 1
            return
        if not self._acquire(wait):
            yield False
            return
        self._lock_depth = 1
        try:
            self.recover_pending()
            self.catch_up()
            yield True
        finally:
            self._lock_depth = 0
            self._lock.release()

    def _generations(self) -> tuple[str | None, str | None]:
        rows = dict(self.db.execute(
            "SELECT name, value FROM meta WHERE name IN ('generation', 'vectors_generation')"
        ).fetchall())
        return rows.get("generation"), rows.get("vectors_generation")

    def poll(self) -> str | None:
        """What another connection committed since the last poll: None (nothing, or only
        staged vectors), 'items' (items added, removed or changed) or 'vectors' (the
        catalog was re-embedded: every vector changed)."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version == self.data_version:
            return None
        self.data_version = version
        generation, vectors = self._generations()
        if generation == self.generation:
            return None  # e.g. staged vectors of a re-embedding: no item changed
        self.generation = generation
        if vectors != self.vectors_generation:
            self.vectors_generation = vectors
            return "vectors"
        return "items"

    # -- photos a write is creating or deleting

    @property
    def pending_path(self) -> Path:
        return self.path / PENDING_FILE

    def write_pending(self, names: list[str]) -> None:
        """List photos about to be created or deleted (under the lock), before touching
        them: if this process dies half-way, the next writer knows what to check."""
        if not names:
            return
        path = self.pending_path
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"photos": names}))
        os.replace(tmp, path)

    def clear_pending(self) -> None:
        self.pending_path.unlink(missing_ok=True)

    def recover_pending(self) -> int:
        """Delete the photos a crashed writer listed that no item references (we hold the
        lock, so no live writer is between copying them and committing)."""
        path = self.pending_path
        if not path.exists():
            return 0
        try:
            names = json.loads(path.read_text())["photos"]
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        names = [n for n in names if isinstance(n, str) and n and "/" not in n
                 and "\\" not in n and not n.startswith(".")]
        used = {r[0] for r in self.select_in("SELECT image FROM items WHERE image IN "
                                             "({marks})", [f"{IMAGES_DIR}/{n}" for n in names])}
        removed = 0
        folder = self.path / IMAGES_DIR
        for name in names:
            if f"{IMAGES_DIR}/{name}" in used:
                continue
            for candidate in (folder / name, folder / f".{name}.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    candidate.unlink()
                    removed += 1
        path.unlink(missing_ok=True)
        if removed:
            log.info("%s: removed %d photo file(s) left by an interrupted write",
                     self.path, removed)
        return removed

    def _store_photo(self, record: ItemRecord, name: str) -> None:
        """Copy the photo into images/NAME (write to a temp file, then rename)."""
        target = self.path / IMAGES_DIR / name
        tmp = target.with_name(f".{name}.tmp")
        try:
            if isinstance(record.image, bytes | bytearray):
                tmp.write_bytes(record.image)
            else:
                shutil.copyfile(record.image, tmp)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise FashionLensError(f"{target}: cannot store the photo ({exc})") from exc

    @contextlib.contextmanager
    def new_photos(self, records: Sequence[ItemRecord]) -> Iterator[list[str | None]]:
        """Copy the records' photos in (None for a record without one) under names new
        to this write, listed in the pending file first; on failure exactly the files
        this write created are deleted. The caller holds the write lock and commits
        inside the block."""
        folder = self.path / IMAGES_DIR
        names: list[str | None] = []
        for record in records:
            name = None
            if has_photo(record):
                name = _image_name(record.id, _suffix_of(record))
                while (folder / name).exists() or name in names:
                    name = _image_name(record.id, _suffix_of(record))
            names.append(name)
        listed = [n for n in names if n]
        self.write_pending(listed)
        created: list[str] = []
        try:
            for record, name in zip(records, names, strict=True):
                if name:
                    created.append(name)
                    self._store_photo(record, name)
            yield [f"{IMAGES_DIR}/{n}" if n else None for n in names]
        except BaseException:
            for name in created:
                (folder / name).unlink(missing_ok=True)
            raise
        finally:
            if listed:
                self.clear_pending()

    def unused_photos(self) -> list[Path]:
        """Files in images/ that no item references (the caller holds the write lock)."""
        used = {r[0] for r in self.db.execute("SELECT image FROM items")}
        return [photo for photo in (self.path / IMAGES_DIR).iterdir()
                if f"{IMAGES_DIR}/{photo.name}" not in used and photo.is_file()]

    # -- reading items and vectors

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM items").fetchone()[0])

    def contains(self, item_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone() \
            is not None

    def keys(self, where: str = "1", params: Sequence = ()) -> np.ndarray:
        """Item keys (rowids) in order, read without building a Row per item."""
        cursor = self.db.cursor()
        cursor.row_factory = None
        cursor.execute(f"SELECT key FROM items WHERE {where} ORDER BY key", params)
        return np.fromiter((r[0] for r in cursor), dtype=np.int64)

    def select_in(self, sql: str, values: Sequence) -> Iterator[sqlite3.Row]:
        """The rows of `sql` for every value of `values`: its `{marks}` becomes an IN list
        of at most IN_CHUNK placeholders per statement (SQLite caps their number)."""
        for start in range(0, len(values), IN_CHUNK):
            part = list(values[start:start + IN_CHUNK])
            yield from self.db.execute(sql.replace("{marks}", ", ".join("?" * len(part))),
                                       part)

    def existing(self, ids: list[str]) -> set[str]:
        """Which of `ids` the catalog holds."""
        return {r[0] for r in self.select_in("SELECT id FROM items WHERE id IN ({marks})", ids)}

    def scan(self, where: str = "1", params: Iterable = (), rows: int | None = None
             ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys, vectors) of the stored embeddings matching `where`, a chunk at a time."""
        rows = rows or SCAN_ROWS
        dim = self.dim
        cursor = self.db.execute(
            f"SELECT key, embedding FROM items WHERE {where} ORDER BY key", list(params))
        while chunk := cursor.fetchmany(rows):
            keys = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=len(chunk))
            yield keys, self.vectors_from_blobs(keys, [r[1] for r in chunk], dim)

    def vectors_for(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors): the stored float vectors of those of `keys` that the catalog
        still holds, in the order given. Another process may remove items at any moment
        (readers take no lock), so a key read a moment ago may be gone: it is left out,
        and the reader's next poll sees the removal."""
        keys = np.asarray(keys, dtype=np.int64)
        found: dict[int, bytes] = dict(self.select_in(
            "SELECT key, embedding FROM items WHERE key IN ({marks})", [int(k) for k in keys]))
        if len(found) != len(keys):
            keys = np.fromiter((k for k in keys if int(k) in found), dtype=np.int64)
        dim = self.dim or 0
        return keys, self.vectors_from_blobs(keys, [found[int(k)] for k in keys], dim)

    def stored_vector(self, item_id: str) -> tuple[int, np.ndarray]:
        """(key, vector) of an item."""
        row = self.db.execute("SELECT key, embedding FROM items WHERE id = ?",
                              (item_id,)).fetchone()
        if row is None:
            raise UnknownItemError(self.path, item_id)
        dim = self.dim
        if dim is None:
            return int(row[0]), np.frombuffer(row[1], dtype=np.float32)
        return int(row[0]), self.vectors_from_blobs([row[0]], [row[1]], dim)[0]

    def row(self, item_id: str) -> sqlite3.Row:
        row = self.db.execute(f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?",
                              (item_id,)).fetchone()
        if row is None:
            raise UnknownItemError(self.path, item_id)
        return row

    def item(self, row: sqlite3.Row, predicted: dict | None = None) -> Item:
        """An item from its row; its predicted tags read here unless given."""
        image = self.path / row["image"] if row["image"] else None
        if predicted is None:
            predicted = self.predicted([row["key"]]).get(row["key"], {})
        return Item(id=row["id"], image=image, category=row["category"],
                    colour=row["colour"], size=row["size"], price=row["price"],
                    status=row["status"], extra=json.loads(row["extra"] or "{}"),
                    source=row["source"], created_at=row["created_at"],
                    updated_at=row["updated_at"], key=row["key"], predicted=predicted)

    def items_by_key(self, keys: Sequence[int]) -> dict[int, Item]:
        keys = [int(k) for k in keys]
        predicted = self.predicted(keys)
        return {row["key"]: self.item(row, predicted.get(row["key"], {}))
                for row in self.select_in(
                    f"SELECT {ITEM_COLUMNS} FROM items WHERE key IN ({{marks}})", keys)}

    # -- predicted tags (`tags`)

    def predicted(self, keys: Sequence[int]) -> dict[int, dict]:
        """The `predicted` object (`tags.as_json`) of each of `keys` that has any."""
        rows: dict[int, list] = {}
        for row in self.select_in("SELECT key, task, label, probability, kind FROM "
                                  "predictions WHERE key IN ({marks})", [int(k) for k in keys]):
            rows.setdefault(row["key"], []).append(row)
        return {key: tags.as_json(found) for key, found in rows.items()}

    @staticmethod
    def store_predictions(db: sqlite3.Connection, rows: Sequence[tuple],
                          table: str = "predictions") -> None:
        """Insert `tags.rows_for` rows inside the caller's transaction."""
        db.executemany(f"INSERT OR REPLACE INTO {table} (key, task, label, probability, kind, "
                       "field, confident) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    # -- writing items

    def taken(self, exc: sqlite3.IntegrityError, ids: list[str]) -> ItemExistsError:
        """The error for an insert that hit the UNIQUE id constraint (only possible when
        a writer ignores the lock file): which ids exist now."""
        if "items.id" not in str(exc):
            raise exc
        return ItemExistsError(self.path, sorted(self.existing(ids)) or ids)

    def insert_items(self, db: sqlite3.Connection, records: Sequence[ItemRecord],
                     vectors: np.ndarray, images: Sequence[str | None]) -> np.ndarray:
        """Insert checked records with their unit vectors, inside the caller's transaction
        (under the write lock); returns their new keys, in order."""
        stamp = now()
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'").fetchone()
        last = int(row[0]) if row else 0
        try:
            db.executemany(
                "INSERT INTO items (id, image, source, category, colour, size, price, "
                "status, extra, embedding, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((r.id, image or "", source_of(r), r.category, r.colour, r.size, r.price,
                  r.status or "available",
                  json.dumps(r.extra or {}, ensure_ascii=False, sort_keys=True),
                  np.ascontiguousarray(vectors[j], dtype=np.float32).tobytes(), stamp, stamp)
                 for j, (r, image) in enumerate(zip(records, images, strict=True))))
        except sqlite3.IntegrityError as exc:
            raise self.taken(exc, [r.id for r in records]) from None
        cursor = db.cursor()
        cursor.row_factory = None
        rows = cursor.execute("SELECT key, id FROM items WHERE key > ? ORDER BY key",
                              (last,)).fetchall()
        if len(rows) != len(records) or any(got != r.id for (_, got), r
                                            in zip(rows, records, strict=True)):
            raise FashionLensError(f"{self.path}: another writer changed the catalog during "
                                   "an insert; run it again to resume")
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def update_row(self, key: int, columns: dict) -> None:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with self.transaction() as db:
            db.execute(f"UPDATE items SET {assignments} WHERE key = ?", [*columns.values(), key])

    def delete_keys(self, keys: Sequence[int]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM items WHERE key = ?", [(int(k),) for k in keys])
            db.executemany("DELETE FROM predictions WHERE key = ?", [(int(k),) for k in keys])

    # -- steering directions

    @staticmethod
    def store_directions(db: sqlite3.Connection, directions: Iterable[Direction]) -> None:
        """Write directions (replacing those of the same name) inside the caller's
        transaction."""
        stamp = now()
        db.executemany(
            "INSERT OR REPLACE INTO directions (name, field, value, method, positives, "
            "negatives, vector, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(d.name, d.field, d.value, d.method, d.positives, d.negatives,
              d.vector.astype(np.float32).tobytes(), stamp) for d in directions])

    def direction_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM directions ORDER BY name")]

    def direction_info(self) -> list[dict]:
        return [dict(r) for r in self.db.execute(
            "SELECT name, field, value, method, positives, negatives, created_at "
            "FROM directions ORDER BY name")]

    def delete_directions(self, names: Sequence[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM directions WHERE name = ?", [(n,) for n in names])

    def direction_vectors(self) -> dict[str, np.ndarray]:
        rows = self.db.execute("SELECT name, vector FROM directions").fetchall()
        return {r[0]: np.frombuffer(r[1], dtype=np.float32) for r in rows}
