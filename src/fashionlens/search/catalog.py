"""A shop's catalog for "similar items", kept in one folder.

    catalog/
      catalog.sqlite   items: id, photo, category, colour, size, price, status, extra
                       data, the photo's embedding and timestamps; the source of truth
      index.faiss      the FAISS index over the embeddings, keyed by the SQLite rowid
      images/          the catalog's own copy of every photo (the user's files are
                       only ever read)

Changes are incremental: adding a batch appends its vectors to the index, removing an
item removes its vector, and metadata changes touch SQLite (and the in-memory filter
columns) only. Each batch of additions is one SQLite transaction; the index file is
replaced atomically after the database commits. If a crash leaves the two disagreeing,
opening the catalog brings the index up to date from the embeddings stored in SQLite
(or rebuilds it when the file is missing or unreadable).

Several processes may use one catalog (a server and CLI commands, two `catalog add` runs).
Every write holds `write.lock` (filelock) for its SQLite commit, its photo files and the
index file it saves, and first catches up with the others' commits; readers take no lock.
Each committed write bumps a generation counter in `meta`: before each search an open
Catalog checks `PRAGMA data_version` (and then that counter) and, when another process
wrote, takes the added and removed vectors from SQLite into its in-memory index (or
reloads it after a re-embedding). Photos get file names unique to the write that copies
them, listed in `pending-photos.json` until it commits: the next writer deletes those
that no item references if that process died, and a losing or failing writer only ever
deletes files it created.

The index is exact (flat) while that is fast enough and an IVF index with 8-bit codes
past the size measured in `index.py`. Items with precomputed vectors and no photo can be
bulk-loaded with `add_vectors` (big transactions, one index build at the end).

Searches pre-filter the candidate items on an in-memory copy of the metadata columns
(`FilterColumns`; SQL only for `id` and `extra.*` filters), then rank only those:
exactly with numpy over the stored float vectors when they are few, otherwise with a
FAISS bitmap selector; a search that finds fewer than k is completed exhaustively, so a
filter never returns fewer than k results when k items match.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import math
import os
import re
import secrets
import shutil
import sqlite3
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock
import numpy as np

from ..data.images import is_image_file
from ..data.sources import read_csv_rows, resolve_image_path
from ..errors import (
    CatalogBusyError,
    DataError,
    FashionLensError,
    ItemExistsError,
    ModelError,
    UnknownItemError,
)
from . import steering
from .embeddings import Embedder, normalise
from .filters import (
    ALIASES,
    COLUMN_FIELDS,
    STATUSES,
    Filter,
    FilterColumns,
    FilterError,
    canonical_field,
    column_sql,
    parse_filters,
    to_sql,
)
from .index import VectorIndex
from .steering import Direction, learn_directions, parse_steering

log = logging.getLogger(__name__)

CATALOG_DB = "catalog.sqlite"
INDEX_FILE = "index.faiss"
IMAGES_DIR = "images"
SCHEMA_VERSION = 1
# Candidate sets (after filtering) up to this size are ranked exactly with numpy over
# their stored float vectors (read from SQLite: about 2 ms per 1,000 at 1280-d).
EXACT_LIMIT = 2048
# An IVF search returns max(RERANK_MIN, RERANK_FACTOR * k) candidates ranked by their 8-bit
# codes, which the catalog re-ranks with the stored float vectors: on the synthetic 1M x
# 1280 catalog the codes alone give recall@10 0.95, a 30-row re-rank 0.994 (20 rows: same
# recall within noise; the rows are read with the results' metadata in one query).
RERANK_FACTOR = 3
RERANK_MIN = 30
# Near-duplicate threshold (cosine similarity), measured with the bundled model on the
# clothing photos: a lightly edited copy (4 % crop, 80 % size, JPEG quality 70) of 300
# photos scored >= 0.93 against its original for 97.7 % of them (median 0.971), while no
# copy scored >= 0.93 against any other of the 3,409 photos (best other: p99 0.896,
# max 0.901). Among distinct photos, the pairs >= 0.93 were the same garment
# photographed twice; between 0.90 and 0.93 they mix such pairs with look-alikes.
DUPLICATE_THRESHOLD = 0.93
# Stored embeddings are read this many rows at a time when scanning.
SCAN_ROWS = 8192
# `add_vectors` commits this many items per SQLite transaction.
VECTOR_BATCH_ROWS = 50_000
# Training vectors for an IVF index are a random sample of the catalog, drawn with this seed
# (so a rebuild of the same catalog gives the same index).
TRAIN_SEED = 0
METADATA_FIELDS = ("category", "colour", "size", "price", "status")
# What one item may carry. Every entry point (CLI, HTTP API, Python) goes through these
# checks, so one request cannot make the catalog re-serialise megabytes per field or hold
# its write lock for minutes; ids are ones any HTTP client can send back in a URL.
MAX_ID_CHARS = 200
MAX_EXTRA_FIELDS = 64
MAX_FIELD_NAME_CHARS = 64
MAX_VALUE_CHARS = 1000
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
_ITEM_COLUMNS = ("key, id, image, source, category, colour, size, price, status, extra, "
                 "created_at, updated_at")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- what goes in and what comes out ------------------------------------------------


@dataclass
class ItemRecord:
    """One item to add: an id, its photo (path or bytes) and its metadata.

    Items added with `Catalog.add_vectors` may have no photo (`image=None`).
    """

    id: str
    image: str | Path | bytes | None = None
    category: str | None = None
    colour: str | None = None
    size: str | None = None
    price: float | None = None
    status: str = "available"
    extra: dict = field(default_factory=dict)
    label: str = ""  # names the item in messages (e.g. "labels.csv, line 4")

    def describe(self) -> str:
        if self.label:
            return self.label
        return str(self.image) if isinstance(self.image, str | Path) else self.id


@dataclass
class Item:
    """An item as stored in the catalog (`image` is None for an item added as a vector
    without a photo)."""

    id: str
    image: Path | None
    category: str | None = None
    colour: str | None = None
    size: str | None = None
    price: float | None = None
    status: str = "available"
    extra: dict = field(default_factory=dict)
    source: str | None = None
    created_at: str = ""
    updated_at: str = ""
    key: int = 0

    def to_dict(self) -> dict:
        return {"id": self.id, "image": None if self.image is None else str(self.image),
                "category": self.category,
                "colour": self.colour, "size": self.size, "price": self.price,
                "status": self.status, "extra": self.extra, "source": self.source,
                "created_at": self.created_at, "updated_at": self.updated_at}


@dataclass
class Match:
    """A search result: the item and its cosine similarity to the query."""

    item: Item
    similarity: float

    @property
    def distance(self) -> float:
        """Cosine distance, 1 - similarity (0 for the same photo)."""
        return 1.0 - self.similarity

    def to_dict(self) -> dict:
        return {**self.item.to_dict(), "distance": round(self.distance, 6),
                "similarity": round(self.similarity, 6)}


@dataclass
class AddOutcome:
    """What happened to one record: `added`, `exists` (id already present) or `failed`."""

    id: str
    status: str
    source: str = ""
    error: str | None = None


@dataclass
class AddReport:
    added: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    failed: list[AddOutcome] = field(default_factory=list)

    def record(self, outcome: AddOutcome) -> AddOutcome:
        if outcome.status == "added":
            self.added.append(outcome.id)
        elif outcome.status == "exists":
            self.existing.append(outcome.id)
        else:
            self.failed.append(outcome)
        return outcome


@dataclass
class DuplicatePair:
    a: Item
    b: Item
    similarity: float

    def to_dict(self) -> dict:
        return {"a": self.a.id, "b": self.b.id, "similarity": round(self.similarity, 6),
                "a_image": None if self.a.image is None else str(self.a.image),
                "b_image": None if self.b.image is None else str(self.b.image)}


# --- reading sources: a CSV export, a folder of photos, one photo --------------------


@dataclass
class SourceItems:
    """Records read from a source, plus the rows that could not become records."""

    records: list[ItemRecord]
    problems: list[AddOutcome] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # each record's data row (CSV only)

    def __len__(self) -> int:
        return len(self.records) + len(self.problems)


def _has_control_characters(text: str) -> bool:
    """Line breaks, tabs, NUL, line/paragraph separators: nothing a URL or a field name
    can carry."""
    return any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in text)


def _shown(value: Any, limit: int = 60) -> str:
    """A value as quoted in an error message, cut short (messages name, not echo, it)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_price(value: Any) -> float | None:
    """A price from a number or text such as '25', '12.50', '€ 12,50'; '' means none.

    Negative, infinite and NaN prices are refused (JSON bodies may carry -Infinity)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"price '{value}' is not a number")
    if isinstance(value, int | float):
        try:
            price = float(value)
        except OverflowError:
            raise ValueError(f"price '{_shown(value)}' is not a finite number") from None
    else:
        text = re.sub(r"[\s€$£¥]|EUR|USD|GBP", "", str(value), flags=re.I)
        if not text:
            return None
        if "," in text and "." not in text:
            text = text.replace(",", ".")
        try:
            price = float(text)
        except ValueError:
            raise ValueError(f"price '{_shown(value)}' is not a number") from None
    if not math.isfinite(price):
        raise ValueError(f"price '{_shown(value)}' is not a finite number")
    if price < 0:
        raise ValueError(f"price '{_shown(value)}' is negative; a price is 0 or more")
    return price + 0.0  # no -0.0


# Last parts of an item URL that name an action (/items/{id}/photo, /items/{id}/sold), so
# an id ending in one could not be fetched or deleted over HTTP.
ROUTE_SUFFIXES = ("photo", "sold")


def check_item_id(item_id: Any) -> str:
    """The id, or a ValueError saying why no client could use it in a URL: empty, too
    long, control characters (line breaks, tabs), or '.', '..' or empty parts between
    '/' (ids such as 'Hat/hat-1' from folder builds are fine)."""
    if not isinstance(item_id, str) or not item_id.strip():
        raise ValueError("empty id")
    if len(item_id) > MAX_ID_CHARS:
        raise ValueError(f"id '{_shown(item_id)}' is too long; an id has at most "
                         f"{MAX_ID_CHARS} characters")
    if _has_control_characters(item_id):
        raise ValueError(f"id {_shown(ascii(item_id), 80)} contains control characters "
                         "(line breaks, tabs, ...)")
    parts = item_id.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"id '{_shown(item_id)}': '.', '..' and empty parts between '/' "
                         "are not allowed (clients cannot send them back in a URL)")
    if len(parts) > 1 and parts[-1] in ROUTE_SUFFIXES:
        raise ValueError(f"id '{_shown(item_id)}' ends in '/{parts[-1]}', which the HTTP API "
                         f"reads as an action on item '{_shown('/'.join(parts[:-1]))}'")
    return item_id


def check_value(field_name: str, value: Any) -> None:
    """Refuse a metadata value longer than MAX_VALUE_CHARS (text, or its JSON form)."""
    if value is None or isinstance(value, bool | int | float):
        return
    size = len(value) if isinstance(value, str) else len(
        json.dumps(value, ensure_ascii=False, default=str))
    if size > MAX_VALUE_CHARS:
        raise ValueError(f"{field_name}: the value has {size} characters; at most "
                         f"{MAX_VALUE_CHARS}")


def check_field_name(name: Any) -> None:
    """Refuse an extra field name that is empty, too long or holds control characters."""
    if not isinstance(name, str):
        raise ValueError(f"extra: field names are text, not {type(name).__name__}")
    if not name.strip():
        raise ValueError("extra: a field name is empty")
    if len(name) > MAX_FIELD_NAME_CHARS:
        raise ValueError(f"extra.{_shown(name)}: the field name is too long; at most "
                         f"{MAX_FIELD_NAME_CHARS} characters")
    if _has_control_characters(name):
        raise ValueError(f"extra.{_shown(ascii(name))}: the field name contains control "
                         "characters")


def check_extra(extra: Any) -> None:
    """Refuse extra data with too many fields, or a bad name or value."""
    if not isinstance(extra, Mapping):
        raise ValueError("extra: expected a mapping of field names to values")
    if len(extra) > MAX_EXTRA_FIELDS:
        raise ValueError(f"extra: {len(extra)} fields; an item has at most "
                         f"{MAX_EXTRA_FIELDS} extra fields")
    for name, value in extra.items():
        check_field_name(name)
        check_value(f"extra.{name}", value)


def check_record(record: ItemRecord, image_root: str | Path | None = None) -> None:
    """Check and normalise a record's metadata (price, status, sizes; its photo under
    `image_root` when given). Raises ValueError naming the field."""
    record.price = parse_price(record.price)
    record.status = check_status(record.status)
    for name in ("category", "colour", "size"):
        check_value(name, getattr(record, name))
    check_extra(record.extra if record.extra is not None else {})
    if image_root is not None and isinstance(record.image, str | Path) and record.image:
        check_under_root(record.image, image_root)


def check_under_root(photo: str | Path, image_root: str | Path) -> Path:
    """The photo's resolved path (symlinks followed); a ValueError when it lies outside
    `image_root`, so an imported CSV cannot make the catalog copy any file of the host."""
    root = Path(image_root).expanduser().resolve()
    resolved = Path(photo).expanduser().resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(f"photo '{photo}' is outside the image root {root} "
                         "(--image-root)")
    return resolved


def _image_root(image_root: str | Path | None) -> Path | None:
    if image_root is None:
        return None
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: the image root (--image-root) is not a folder")
    return root


def check_status(value: Any) -> str:
    status = str(value or "").strip().lower() or "available"
    if status not in STATUSES:
        raise ValueError(f"unknown status '{value}'; statuses are {', '.join(STATUSES)}")
    return status


def _column_map(columns: list[str], id_column: str, image_column: str | None,
                mapping: Mapping[str, str] | None, where: str) -> dict[str, str]:
    """CSV column -> item field, for the metadata columns (the rest go to `extra`)."""
    result: dict[str, str] = {}
    for column in columns:
        name = ALIASES.get(column.strip().lower(), column.strip().lower())
        if column not in (id_column, image_column) and name in METADATA_FIELDS:
            result[column] = name
    for field_name, column in (mapping or {}).items():
        target = ALIASES.get(field_name.strip().lower(), field_name.strip().lower())
        if target not in METADATA_FIELDS:
            raise DataError(f"{where}: cannot map a column to '{field_name}'; fields are "
                            f"{', '.join(METADATA_FIELDS)}")
        if column not in columns:
            raise DataError(f"{where}: no column '{column}' (mapped to {target}); "
                            f"columns are: {', '.join(columns)}")
        result = {c: f for c, f in result.items() if f != target}
        result[column] = target
    return result


def records_from_csv(csv_path: str | Path, *, id_column: str = "id",
                     image_column: str | None = "image", image_dir: str | None = None,
                     image_extension: str | None = None,
                     columns: Mapping[str, str] | None = None,
                     image_root: str | Path | None = None) -> SourceItems:
    """Items from a CSV export: one row per item.

    The image column holds a path, or an id resolved against `image_dir` (relative to
    the CSV) with `image_extension`, as for training data. Columns named like an item
    field (category, colour/color, size, price, status) fill it, `columns` maps others
    (`{"category": "garment_type"}`), and every other column is kept in `extra`.
    `image_column=None` reads items without photos (for `Catalog.add_vectors`).
    With `image_root`, a row whose photo resolves (symlinks followed) outside that
    folder is refused, naming the row: a CSV from elsewhere cannot copy any file of the
    host into the catalog.
    """
    csv_path = Path(csv_path).expanduser()
    root = _image_root(image_root)
    header, rows = read_csv_rows(csv_path)
    for what, column in (("id column", id_column), ("image column", image_column)):
        if column is not None and column not in header:
            raise DataError(f"{csv_path}: no column '{column}' (asked for as {what}); "
                            f"columns are: {', '.join(header)}")
    mapped = _column_map(header, id_column, image_column, columns, str(csv_path))
    base = csv_path.parent / image_dir if image_dir else csv_path.parent
    result = SourceItems(records=[])
    for line_no, row in enumerate(rows, start=2):
        where = f"{csv_path.name}, line {line_no}"
        item_id = (row.get(id_column) or "").strip()
        image = (row.get(image_column) or "").strip() if image_column else None
        if not item_id or image == "":
            missing = id_column if not item_id else image_column
            result.problems.append(AddOutcome(item_id or f"line {line_no}", "failed", where,
                                              f"empty value in column '{missing}'"))
            continue
        fields: dict[str, Any] = {}
        extra: dict[str, str] = {}
        try:
            for column, value in row.items():
                if column in (id_column, image_column) or column is None:
                    continue
                value = (value or "").strip() if isinstance(value, str) else value
                if column in mapped:
                    target = mapped[column]
                    if target == "price":
                        fields["price"] = parse_price(value)
                    elif target == "status":
                        fields["status"] = check_status(value)
                    else:
                        fields[target] = value or None
                elif value:
                    extra[column] = value
        except ValueError as exc:
            result.problems.append(AddOutcome(item_id, "failed", where, str(exc)))
            continue
        path = resolve_image_path(image, base, image_extension) if image else None
        if path is not None and root is not None:
            try:
                check_under_root(path, root)
            except ValueError as exc:
                result.problems.append(AddOutcome(item_id, "failed", where, f"{where}: {exc}"))
                continue
        result.records.append(ItemRecord(id=item_id, image=path, extra=extra,
                                         label=f"{where} ({path})" if path else where,
                                         **fields))
        result.rows.append(line_no - 2)
    return result


def records_from_folder(root: str | Path, image_root: str | Path | None = None
                        ) -> SourceItems:
    """Every photo under a folder; the sub-folder a photo sits in is its category.

    The id is the photo's path inside the folder without its extension (`Dress/d-12`).
    With `image_root`, photos resolving outside it (symlinks) are refused.
    """
    confine = _image_root(image_root)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    photos = sorted(p for p in root.rglob("*")
                    if p.is_file() and is_image_file(p)
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not photos:
        raise DataError(f"{root}: no image files in this folder")
    result = SourceItems(records=[])
    for photo in photos:
        rel = photo.relative_to(root)
        category = rel.parts[0] if len(rel.parts) > 1 else None
        record = ItemRecord(id=rel.with_suffix("").as_posix(), image=photo,
                            category=category, label=str(photo))
        try:
            if confine is not None:
                check_under_root(photo, confine)
        except ValueError as exc:
            result.problems.append(AddOutcome(record.id, "failed", str(photo), str(exc)))
        else:
            result.records.append(record)
    return result


def read_source(source: str | Path, *, item_id: str | None = None,
                fields: Mapping[str, Any] | None = None,
                image_root: str | Path | None = None, **csv_options) -> SourceItems:
    """Records from a CSV file, a folder of photos, or one photo (id: `item_id` or its
    file name without extension; metadata: `fields`). With `image_root`, photos must
    resolve inside that folder (see `records_from_csv`)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if item_id or fields:
            raise DataError(f"{path}: --id/--set apply to a single photo, not a folder")
        return records_from_folder(path, image_root=image_root)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix.lower() in (".csv", ".tsv"):
        if item_id or fields:
            raise DataError(f"{path}: --id/--set apply to a single photo, not a CSV file")
        return records_from_csv(path, image_root=image_root, **csv_options)
    if not is_image_file(path):
        raise DataError(f"{path}: expected a CSV file, a folder of photos, or a photo")
    root = _image_root(image_root)
    if root is not None:
        try:
            check_under_root(path, root)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    record = ItemRecord(id=item_id or path.stem, image=path, label=str(path))
    for name, value in (fields or {}).items():
        _apply_field(record, name, value)
    return SourceItems(records=[record])


def _apply_field(target: ItemRecord | dict, name: str, value: Any) -> None:
    """Set one metadata field (validated) on a record, or in an update dict."""
    if not isinstance(name, str):
        raise FashionLensError(f"field names are text, not {type(name).__name__}")
    text = _shown(f"{name}={value}", 80)
    if len(name) > MAX_FIELD_NAME_CHARS + len("extra."):
        raise FashionLensError(f"field '{_shown(name)}': the name is too long; at most "
                               f"{MAX_FIELD_NAME_CHARS} characters")
    try:
        field_name = canonical_field(name, text)
    except FilterError as exc:
        raise FashionLensError(str(exc).replace("filter", "field", 1)) from None
    if field_name == "id":
        raise FashionLensError(f"'{text}': the id of an item cannot be changed")
    try:
        if field_name.startswith("extra."):
            check_field_name(field_name[len("extra."):])
        if field_name == "price":
            value = parse_price(value)
        elif field_name == "status":
            value = check_status(value)
        elif isinstance(value, str):
            value = value.strip() or None
        check_value(field_name, value)
    except ValueError as exc:
        raise FashionLensError(f"'{text}': {exc}") from None
    if isinstance(target, dict):
        target[field_name] = value
    elif field_name.startswith("extra."):
        key = field_name[len("extra."):]
        if value is None:
            target.extra.pop(key, None)
        else:
            target.extra[key] = value
    else:
        setattr(target, field_name, value)


# --- the catalog ---------------------------------------------------------------------


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


def _source_of(record: ItemRecord) -> str | None:
    """Where an item's photo was copied from (None for bytes or no photo)."""
    return str(record.image) if isinstance(record.image, str | Path) and record.image else None


def _store_directions(db: sqlite3.Connection, directions: Iterable[Direction]) -> None:
    """Write directions (replacing those of the same name) inside the caller's transaction."""
    now = _now()
    db.executemany(
        "INSERT OR REPLACE INTO directions (name, field, value, method, positives, "
        "negatives, vector, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(d.name, d.field, d.value, d.method, d.positives, d.negatives,
          d.vector.astype(np.float32).tobytes(), now) for d in directions])


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
    """

    def __init__(self, path: str | Path, *, create: bool = False,
                 model: str | Path | None = None, embedder: Embedder | None = None,
                 dim: int | None = None, lock_timeout: float = LOCK_TIMEOUT_S,
                 runtime: str = "torch") -> None:
        self.path = Path(path).expanduser()
        self.runtime = runtime
        self.lock_timeout = float(lock_timeout)
        self._lock = filelock.FileLock(self.path / LOCK_FILE, thread_local=False,
                                       preserve_lock_file=True)
        self._lock_depth = 0
        db_path = self.path / CATALOG_DB
        if not db_path.is_file():
            if not create:
                raise FashionLensError(f"{self.path}: not a catalog (no {CATALOG_DB}); "
                                       "make one with `fashionlens catalog build`")
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise FashionLensError(f"{self.path}: exists and is not an empty folder; "
                                       "choose a new folder for the catalog")
            if embedder is None and model is not None:
                # A bad model fails before any folder is made.
                embedder = Embedder(model, runtime=runtime)
            self.path.mkdir(parents=True, exist_ok=True)
        (self.path / IMAGES_DIR).mkdir(exist_ok=True)
        self._db = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
        try:
            self._db.row_factory = sqlite3.Row
            # WAL: readers (a server's searches) and the one writer never block each other.
            with contextlib.suppress(sqlite3.OperationalError):
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            self._setup(model, embedder, dim)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise FashionLensError(f"{db_path}: not a readable catalog database ({exc})") from exc
        except BaseException:
            self._db.close()
            raise

    def _setup(self, model: str | Path | None, embedder: Embedder | None,
               dim: int | None) -> None:
        self._model_request = model
        self._embedder: Embedder | None = None
        self._index: VectorIndex | None = None
        self._stale = False  # the in-memory index missed a change: reload before use
        self._deferred = False  # a bulk load rebuilds the index at its end
        self.repaired = False  # True when opening had to rebuild the index
        self._columns: FilterColumns | None = None  # built on the first filtered search
        self.last_rebuild: dict[str, float] = {}  # seconds spent in the last rebuild
        # What this object's in-memory state reflects (see `_refresh`); read before the
        # index so that a commit made meanwhile is noticed at the next use.
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        self._generation, self._vectors_generation = self._generations()
        db_path = self.path / CATALOG_DB
        version = self._meta("schema_version")
        if version is None:
            self._set_meta({"schema_version": str(SCHEMA_VERSION), "created_at": _now()})
        elif int(version) > SCHEMA_VERSION:
            raise FashionLensError(f"{db_path}: made by a newer fashionlens "
                                   f"(schema {version}); upgrade fashionlens")
        if dim is not None:
            if self.dim is None:
                self._set_meta({"dim": str(int(dim)), "vectors_only": "1"})
            elif self.dim != dim:
                raise FashionLensError(f"{self.path}: the catalog holds {self.dim}-d vectors, "
                                       f"not {dim}-d")
        if embedder is not None:
            self._use_embedder(embedder)
        elif model is not None and self._meta("model_fingerprint") is None:
            self._use_embedder(Embedder(model, runtime=self.runtime))
        self._open_index()
        if (self.path / PENDING_FILE).exists():  # a writer crashed: clean up if we can
            with self._writing(wait=False):
                pass

    # -- plumbing

    def close(self) -> None:
        self._db.close()
        if self._lock.is_locked:
            self._lock.release(force=True)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])

    def __contains__(self, item_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM items WHERE id = ?", (item_id,)).fetchone() \
            is not None

    @property
    def index(self) -> VectorIndex | None:
        """The FAISS index (None while the catalog is empty)."""
        return self._current_index()

    def _current_index(self) -> VectorIndex | None:
        self._refresh()
        if self._stale:
            self._stale = False
            self._index = None
            self._open_index()
        return self._index

    def _index_failed(self) -> None:
        """An index update failed after the database changed: reload it before next use."""
        self._stale = True

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_FILE

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _set_meta(self, values: dict[str, str]) -> None:
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                           list(values.items()))

    @contextlib.contextmanager
    def _transaction(self, changes_items: bool = True) -> Iterator[sqlite3.Connection]:
        """One SQLite transaction under the write lock: all of it is committed, or none.

        It bumps the catalog's generation (unless `changes_items` is False, e.g. for
        staged vectors), which tells other open Catalog objects to catch up."""
        with self._writing():
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # only a writer ignoring the lock file
                raise CatalogBusyError(self.path, 30.0) from exc
            try:
                yield self._db
                if changes_items:
                    self._db.execute(
                        "INSERT INTO meta (name, value) VALUES ('generation', '1') "
                        "ON CONFLICT (name) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            if changes_items:
                self._generation = self._meta("generation")

    # -- several processes: the write lock, and catching up with other writers

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
    def _writing(self, wait: bool = True) -> Iterator[bool]:
        """Hold the write lock (re-entrant) for a whole change: the SQLite commit, the
        photo files and the index file. On taking it, a crashed writer's photos are
        cleaned up and this object catches up with what others committed, so the index
        it writes reflects the database. Yields False when `wait` is False and the lock
        is held elsewhere (then nothing may be written)."""
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
            self._recover_pending()
            self._refresh()
            yield True
        finally:
            self._lock_depth = 0
            self._lock.release()

    def _generations(self) -> tuple[str | None, str | None]:
        rows = dict(self._db.execute(
            "SELECT name, value FROM meta WHERE name IN ('generation', 'vectors_generation')"
        ).fetchall())
        return rows.get("generation"), rows.get("vectors_generation")

    def _refresh(self) -> None:
        """Catch up with commits made by another process (or another Catalog object):
        one PRAGMA per call, and one small SELECT when something was committed. The
        in-memory index takes the added and removed vectors from SQLite; after a
        re-embedding elsewhere the index and the embedder are loaded afresh."""
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        self._data_version = version
        generation, vectors = self._generations()
        if generation == self._generation:
            return  # e.g. staged vectors of a re-embedding: no item changed
        self._generation = generation
        self._columns = None
        if vectors != self._vectors_generation:
            self._vectors_generation = vectors
            if self._embedder is not None and \
                    self._embedder.fingerprint != self._meta("model_fingerprint"):
                self._embedder = None
            self._index, self._stale = None, False
            self._open_index()
        else:
            self._sync_index()

    def _sync_index(self) -> None:
        """Bring the in-memory index into agreement with the items in SQLite."""
        if self._deferred:
            return
        index = self._index
        if index is None or self._stale:
            self._index, self._stale = None, False
            self._open_index()
            return
        # Keys are never reused, so the items added since this index was in step are
        # those past its largest key; only when the count shows removals are all compared.
        ids = index.ids()
        missing = self._keys("key > ?", (int(ids.max()) if len(ids) else 0,))
        count = int(self._db.execute("SELECT count(*) FROM items").fetchone()[0])
        extra = np.empty(0, dtype=np.int64)
        if count != len(ids) + len(missing):
            keys = self._keys()
            missing = np.setdiff1d(keys, ids, assume_unique=True)
            extra = np.setdiff1d(ids, keys, assume_unique=True)
        if not len(missing) and not len(extra):
            return
        if index.needs_rebuild(count):
            self._index = None
            self._open_index()
            return
        try:
            index.remove(extra)
            if len(missing):
                index.add(self._vectors_for(missing), missing)
        except BaseException:
            self._index_failed()
            raise

    def _pending_path(self) -> Path:
        return self.path / PENDING_FILE

    def _write_pending(self, names: list[str]) -> None:
        """List photos about to be created or deleted (under the lock), before touching
        them: if this process dies half-way, the next writer knows what to check."""
        if not names:
            return
        path = self._pending_path()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"photos": names}))
        os.replace(tmp, path)

    def _clear_pending(self) -> None:
        self._pending_path().unlink(missing_ok=True)

    def _recover_pending(self) -> int:
        """Delete the photos a crashed writer listed that no item references (we hold the
        lock, so no live writer is between copying them and committing)."""
        path = self._pending_path()
        if not path.exists():
            return 0
        try:
            names = json.loads(path.read_text())["photos"]
        except (OSError, ValueError, KeyError, TypeError):
            names = []
        names = [n for n in names if isinstance(n, str) and n and "/" not in n
                 and "\\" not in n and not n.startswith(".")]
        used = {r[0] for r in self._select_in("SELECT image FROM items WHERE image IN "
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

    @property
    def dim(self) -> int | None:
        value = self._meta("dim")
        return int(value) if value else None

    @property
    def model(self) -> str | None:
        return self._meta("model")

    def model_fingerprint(self) -> str | None:
        """Which model's vectors the catalog holds now (another process may have moved it
        to another model with `reembed`): a query vector must come from the same one."""
        self._refresh()
        return self._meta("model_fingerprint")

    def _use_embedder(self, embedder: Embedder) -> None:
        fingerprint = self._meta("model_fingerprint")
        if fingerprint is None and self.dim not in (None, embedder.dim):
            raise FashionLensError(
                f"{self.path}: the catalog holds {self.dim}-d vectors and {embedder.spec} "
                f"gives {embedder.dim}-d ones; search it by vector or item, or pass a "
                "model giving vectors of that size")
        if fingerprint is None:
            self._set_meta({"model": embedder.spec, "model_fingerprint": embedder.fingerprint,
                            "dim": str(embedder.dim)})
        elif fingerprint != embedder.fingerprint or self.dim != embedder.dim:
            raise FashionLensError(
                f"{self.path}: the catalog was built with model {self._meta('model')} "
                f"({fingerprint}, {self.dim}-d vectors), not {embedder.spec} "
                f"({embedder.fingerprint}, {embedder.dim}-d); vectors of different models "
                "cannot be compared: use the catalog's model, or build a new catalog")
        self._embedder = embedder

    def embedder(self) -> Embedder:
        """The catalog's embedder, loaded on first use."""
        self._refresh()  # another process may have re-embedded the catalog
        if self._embedder is None:
            spec = self._meta("model")
            if spec is None and self._model_request is None and self._meta("vectors_only"):
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

    # -- the index and its agreement with the database

    def _keys(self, where: str = "1", params: Sequence = ()) -> np.ndarray:
        """Item keys (rowids) in order, read without building a Row per item."""
        cursor = self._db.cursor()
        cursor.row_factory = None
        cursor.execute(f"SELECT key FROM items WHERE {where} ORDER BY key", params)
        return np.fromiter((r[0] for r in cursor), dtype=np.int64)

    def _select_in(self, sql: str, values: Sequence) -> Iterator[sqlite3.Row]:
        """The rows of `sql` for every value of `values`: its `{marks}` becomes an IN list
        of at most IN_CHUNK placeholders per statement (SQLite caps their number)."""
        for start in range(0, len(values), IN_CHUNK):
            part = list(values[start:start + IN_CHUNK])
            yield from self._db.execute(sql.replace("{marks}", ", ".join("?" * len(part))),
                                        part)

    def _open_index(self) -> None:
        """Read the index file and bring it into agreement with the database.

        A file behind the database (another process is between batches, or one crashed
        before saving) takes the missing and removed vectors from SQLite; a missing,
        unreadable or mismatched one is rebuilt. A repaired index is saved when no other
        process is writing (that writer saves its own, up to date, when it is done)."""
        keys = self._keys()
        self._index = None
        path = self.index_path
        reason = None
        index = None
        if not path.is_file():
            if not len(keys):
                return
            reason = "the index file is missing"
        else:
            try:
                index = VectorIndex.read(path)
            except Exception as exc:  # noqa: BLE001 - any unreadable index is rebuilt
                reason = f"the index file cannot be read ({exc})"
            else:
                ids = index.ids()
                if self.dim is not None and index.dim != self.dim:
                    reason = f"the index holds {index.dim}-d vectors, the items {self.dim}-d"
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
                self._index = index
                return
            log.info("%s: the index file is behind the database (%d items not indexed, %d "
                     "removed); catching up from the stored embeddings", self.path,
                     len(missing), len(extra))
            index.remove(extra)
            if len(missing):
                index.add(self._vectors_for(missing), missing)
            self._index = index
        else:
            log.warning("%s: %s; rebuilding the index from the %d stored embeddings",
                        self.path, reason, len(keys))
            self._index = self._build_index(keys)
        self.repaired = True
        with self._writing(wait=False) as locked:
            if locked:  # taking the lock caught up with any commit made meanwhile
                self._save_index()

    def _save_index(self) -> None:
        """Write the index file (the caller holds the write lock)."""
        if self._index is not None:
            self._index.write(self.index_path)
        elif not len(self):
            self.index_path.unlink(missing_ok=True)

    def _scan(self, where: str = "1", params: Iterable = (), rows: int | None = None
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(keys, vectors) of the stored embeddings matching `where`, a chunk at a time."""
        rows = rows or SCAN_ROWS
        dim = self.dim
        cursor = self._db.execute(
            f"SELECT key, embedding FROM items WHERE {where} ORDER BY key", list(params))
        while chunk := cursor.fetchmany(rows):
            keys = np.fromiter((r[0] for r in chunk), dtype=np.int64, count=len(chunk))
            vectors = np.frombuffer(b"".join(r[1] for r in chunk), dtype=np.float32)
            yield keys, vectors.reshape(len(chunk), dim)

    def _vectors_for(self, keys: np.ndarray) -> np.ndarray:
        """The stored float vectors of `keys`, in that order."""
        keys = np.asarray(keys, dtype=np.int64)
        found: dict[int, bytes] = dict(self._select_in(
            "SELECT key, embedding FROM items WHERE key IN ({marks})", [int(k) for k in keys]))
        blob = b"".join(found[int(k)] for k in keys)
        return np.frombuffer(blob, dtype=np.float32).reshape(len(keys), self.dim or 0)

    def _build_index(self, keys: np.ndarray) -> VectorIndex | None:
        """A new index over the stored embeddings of `keys` (the index kind suits their
        number; an IVF index is trained on a random sample of them)."""
        count = len(keys)
        dim = self.dim
        self._index = None  # free the old one before building the new one
        timings: dict[str, float] = {}
        self.last_rebuild = timings
        if dim is None or not count:
            return None
        kind = VectorIndex.kind_for(count, dim)
        index = VectorIndex.empty(dim, kind, count)
        start = time.perf_counter()
        if kind == "ivf":
            rng = np.random.default_rng(TRAIN_SEED)
            sample = np.sort(rng.choice(keys, min(count, index.train_size), replace=False))
            index.train(self._vectors_for(sample))
        timings["train_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for chunk_keys, vectors in self._scan():
            index.add(vectors, chunk_keys)
        timings["add_s"] = time.perf_counter() - start
        return index

    def rebuild(self, clean_photos: bool = True) -> dict:
        """Re-create the index from the stored embeddings (picks the index kind for the
        catalog's size; an IVF index is trained on a random sample of the items) and
        delete photos no item uses any more (left by a crash between copying a photo and
        committing its batch)."""
        with self._writing():
            keys = self._keys()
            self._index = self._build_index(keys)
            self._stale = False
            start = time.perf_counter()
            if self._index is None:
                self.index_path.unlink(missing_ok=True)
            else:
                self._index.write(self.index_path)
                self.last_rebuild["write_s"] = time.perf_counter() - start
            removed = 0
            if clean_photos:  # under the lock: no writer is between copy and commit
                used = {r[0] for r in self._db.execute("SELECT image FROM items")}
                for photo in (self.path / IMAGES_DIR).iterdir():
                    if f"{IMAGES_DIR}/{photo.name}" not in used and photo.is_file():
                        photo.unlink()
                        removed += 1
        return {"items": len(keys), "index": self._index.kind if self._index else None,
                "orphan_photos_removed": removed}

    # -- changing the model

    def reembed(self, model: str | Path | None = None, *, batch_size: int = 32,
                chunk: int = 512, progress: Callable[[int], None] | None = None) -> dict:
        """Recompute every item's vector with another model (None: the bundled one)
        from the catalog's own copies of the photos, e.g. after training a better
        embedding or upgrading fashionlens.

        Resumable and atomic: new vectors are staged a chunk at a time in a side table
        (an interrupted run continues where it stopped), then one transaction swaps them
        in, records the new model and re-learns the steering directions in the new
        space; the index is rebuilt last. Until the swap the catalog stays as it was; an
        unreadable photo stops the run before the swap, naming the item.
        """
        embedder = Embedder(model, runtime=self.runtime)
        vectorless = [r[0] for r in self._db.execute(
            "SELECT id FROM items WHERE image = '' ORDER BY key LIMIT 6")]
        if vectorless:
            raise FashionLensError(
                f"{self.path}: items without a photo (imported vectors, e.g. "
                f"{', '.join(vectorless[:5])}) cannot be re-embedded; remove them first")
        target = f"{embedder.fingerprint}:{embedder.dim}"
        with self._transaction(changes_items=False) as db:
            db.execute("CREATE TABLE IF NOT EXISTS reembed "
                       "(key INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
            if self._meta("reembed_target") != target:  # a run for another model: restart
                db.execute("DELETE FROM reembed")
                db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                           ("reembed_target", target))
        resumed = int(self._db.execute("SELECT count(*) FROM reembed").fetchone()[0])
        todo_sql = ("SELECT key, id, image FROM items WHERE key NOT IN "
                    "(SELECT key FROM reembed) ORDER BY key")
        todo = self._db.execute(todo_sql).fetchall()
        done = 0
        while True:
            self._stage_vectors(embedder, todo, batch_size, chunk, progress)
            done += len(todo)
            with self._writing():
                # Items another process added meanwhile are embedded before the swap.
                todo = self._db.execute(todo_sql).fetchall()
                if todo:
                    continue
                self._swap_vectors(embedder)
                rebuilt = self.rebuild(clean_photos=False)
                break
        return {"items": done + resumed, "resumed": resumed, "model": embedder.spec,
                "dim": embedder.dim, "index": rebuilt["index"],
                "directions": self.directions()}

    def _stage_vectors(self, embedder: Embedder, rows: list[sqlite3.Row], batch_size: int,
                       chunk: int, progress: Callable[[int], None] | None) -> None:
        """Embed the stored photos of `rows` into the `reembed` table, a chunk per
        transaction; raise (changing nothing else) if any photo cannot be read."""
        failed: list[str] = []
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            results = embedder.embed([self.path / r["image"] for r in part],
                                     names=[r["id"] for r in part], batch_size=batch_size)
            staged = []
            for row, result in zip(part, results, strict=True):
                if result.ok:
                    staged.append((row["key"], result.vector.astype(np.float32).tobytes()))
                else:
                    failed.append(f"{row['id']} ({result.error})")
            with self._transaction(changes_items=False) as db:
                db.executemany("INSERT OR REPLACE INTO reembed (key, embedding) VALUES (?, ?)",
                               staged)
            if progress is not None:
                progress(len(part))
        if failed:
            raise FashionLensError(
                f"{self.path}: {len(failed)} stored photo(s) could not be read, so nothing "
                f"was changed: {'; '.join(failed[:5])}{' ...' if len(failed) > 5 else ''}; "
                "remove those items (or fix their photos) and run again to resume")

    def _swap_vectors(self, embedder: Embedder) -> None:
        """Swap the staged vectors in (the caller holds the write lock and has staged
        every item), record the model and re-learn the steering directions."""
        directions = self._relearned_directions(embedder.dim)
        # The index goes first: a crash before the swap then rebuilds it from the old
        # vectors, and one after the swap from the new ones (never a mix).
        self._index = None
        self.index_path.unlink(missing_ok=True)
        with self._transaction() as db:
            db.execute("UPDATE items SET embedding = (SELECT embedding FROM reembed "
                       "WHERE reembed.key = items.key)")
            db.execute("DELETE FROM directions")
            _store_directions(db, directions)
            vectors_generation = secrets.token_hex(8)  # tells other readers to reload
            for name, value in (("model", embedder.spec),
                                ("model_fingerprint", embedder.fingerprint),
                                ("dim", str(embedder.dim)),
                                ("vectors_generation", vectors_generation)):
                db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                           (name, value))
            db.execute("DELETE FROM meta WHERE name IN ('reembed_target', 'vectors_only')")
            db.execute("DROP TABLE reembed")
        self._vectors_generation = vectors_generation
        self._embedder = embedder
        self._columns = None

    def _relearned_directions(self, dim: int) -> list[Direction]:
        """The stored directions learned again (same field, method and values) from the
        staged vectors; a value that no longer has enough items is dropped."""
        wanted: dict[tuple[str, str], list[str]] = {}
        for row in self._db.execute("SELECT field, value, method FROM directions"):
            wanted.setdefault((row["field"], row["method"]), []).append(row["value"])
        learned: list[Direction] = []
        for (name, method), values in sorted(wanted.items()):
            rows = self._db.execute(
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

    # -- adding items

    def _existing(self, ids: list[str]) -> set[str]:
        return {r[0] for r in self._select_in("SELECT id FROM items WHERE id IN ({marks})", ids)}

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
    def _new_photos(self, records: Sequence[ItemRecord]) -> Iterator[list[str | None]]:
        """Copy the records' photos in (None for a record without one) under names new
        to this write, listed in the pending file first; on failure exactly the files
        this write created are deleted. The caller holds the write lock and commits
        inside the block."""
        folder = self.path / IMAGES_DIR
        names: list[str | None] = []
        for record in records:
            name = None
            if record.image is not None and not (isinstance(record.image, str)
                                                 and record.image == ""):
                name = _image_name(record.id, _suffix_of(record))
                while (folder / name).exists() or name in names:
                    name = _image_name(record.id, _suffix_of(record))
            names.append(name)
        listed = [n for n in names if n]
        self._write_pending(listed)
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
            self._clear_pending()

    def _taken(self, exc: sqlite3.IntegrityError, ids: list[str]) -> ItemExistsError:
        """The error for an insert that hit the UNIQUE id constraint (only possible when
        a writer ignores the lock file): which ids exist now."""
        if "items.id" not in str(exc):
            raise exc
        return ItemExistsError(self.path, sorted(self._existing(ids)) or ids)

    def _insert_row(self, db: sqlite3.Connection, record: ItemRecord, vector: np.ndarray,
                    image: str, now: str) -> int:
        source = _source_of(record)
        cursor = db.execute(
            "INSERT INTO items (id, image, source, category, colour, size, price, status, "
            "extra, embedding, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.id, image, source, record.category, record.colour, record.size,
             record.price, record.status or "available",
             json.dumps(record.extra or {}, ensure_ascii=False, sort_keys=True),
             np.ascontiguousarray(vector, dtype=np.float32).tobytes(), now, now))
        return int(cursor.lastrowid)

    def _record_problem(self, record: ItemRecord, present: set[str], seen: set[str],
                        image_root: str | Path | None) -> tuple[str, str | None]:
        """('add', None), ('exists', None) or ('failed', why) for one record; normalises
        its price and status."""
        try:
            check_item_id(record.id)
        except ValueError as exc:
            return "failed", str(exc)
        if record.id in present:
            return "exists", None
        if record.id in seen:
            return "failed", "id listed twice; only the first is added"
        try:
            check_record(record, image_root)
        except ValueError as exc:
            return "failed", str(exc)
        return "add", None

    def _add_batch(self, records: list[ItemRecord], seen: set[str], batch_size: int,
                   image_root: str | Path | None = None) -> list[AddOutcome]:
        outcomes: list[AddOutcome | None] = [None] * len(records)
        # A first look outside the lock, so that known ids are not embedded again.
        present = self._existing([r.id for r in records if isinstance(r.id, str)])
        todo: list[int] = []
        for i, record in enumerate(records):
            status, problem = self._record_problem(record, present, seen, image_root)
            if status == "add":
                seen.add(record.id)
                todo.append(i)
            else:
                outcomes[i] = AddOutcome(str(record.id), status, record.describe(), problem)
        if todo:
            embedder = self.embedder()
            results = embedder.embed([records[i].image for i in todo],
                                     names=[records[i].describe() for i in todo],
                                     batch_size=batch_size)
            ready = []
            for i, result in zip(todo, results, strict=True):
                if result.ok:
                    ready.append((i, result.vector))
                else:
                    outcomes[i] = AddOutcome(records[i].id, "failed", records[i].describe(),
                                             result.error)
            if ready:
                with self._writing():
                    # Another process may have added some of these ids since the first
                    # look: like ids present from the start, they are left as they are.
                    taken = self._existing([records[i].id for i, _ in ready])
                    for i, _ in ready:
                        if records[i].id in taken:
                            outcomes[i] = AddOutcome(records[i].id, "exists",
                                                     records[i].describe())
                    ready = [(i, v) for i, v in ready if records[i].id not in taken]
                    if ready:
                        self._commit_batch(records, ready)
                for i, _ in ready:
                    outcomes[i] = AddOutcome(records[i].id, "added", records[i].describe())
        return outcomes  # type: ignore[return-value]

    def _commit_batch(self, records: list[ItemRecord],
                      ready: list[tuple[int, np.ndarray]]) -> None:
        """Store the photos, insert the rows (one transaction) and index the vectors;
        the caller holds the write lock."""
        chosen = [records[i] for i, _ in ready]
        with self._new_photos(chosen) as images:
            now = _now()
            try:
                with self._transaction() as db:
                    keys = [self._insert_row(db, record, vector, image, now)
                            for record, (_, vector), image in zip(chosen, ready, images,
                                                                  strict=True)]
            except sqlite3.IntegrityError as exc:
                raise self._taken(exc, [r.id for r in chosen]) from None
        vectors = np.stack([vector for _, vector in ready])
        self._columns_changed(keys)
        try:
            index = self._current_index()
            if index is None:
                index = self._index = VectorIndex.empty(self.dim, "flat")
            index.add(vectors, keys)
        except BaseException:
            self._index_failed()
            raise

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
        try:
            while batch := list(itertools.islice(iterator, batch_size)):
                outcomes = self._add_batch(batch, seen, batch_size, image_root)
                changed = changed or any(o.status == "added" for o in outcomes)
                yield from outcomes
        finally:
            if changed:
                self._after_change()

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

    # -- the in-memory filter columns

    def _filter_columns(self) -> FilterColumns:
        """The metadata columns in memory, (re)read after another connection changed items."""
        self._refresh()
        if self._columns is None:
            columns = FilterColumns()
            cursor = self._db.execute(f"SELECT key, {', '.join(COLUMN_FIELDS)} FROM items")
            while rows := cursor.fetchmany(100_000):
                columns.set_rows(rows)
            self._columns = columns
        return self._columns

    def _columns_changed(self, keys: Iterable[int]) -> None:
        """Re-read the metadata of `keys` into the columns (when they are in memory)."""
        if self._columns is None:
            return
        self._columns.set_rows(self._select_in(
            f"SELECT key, {', '.join(COLUMN_FIELDS)} FROM items WHERE key IN ({{marks}})",
            [int(k) for k in keys]))

    def _filter_mask(self, conditions: list[Filter]) -> np.ndarray:
        """Boolean array over keys: the items matching every condition."""
        mask = self._filter_columns().mask(conditions)
        rest = [f for f in conditions if not FilterColumns.handles(f)]
        if rest:  # `id` and `extra.*` filters: SQL
            where, params = to_sql(rest)
            keys = np.fromiter((r[0] for r in self._db.execute(
                f"SELECT key FROM items WHERE {where}", params)), dtype=np.int64)
            matched = np.zeros(len(mask), dtype=bool)
            matched[keys[keys < len(mask)]] = True
            mask &= matched
        return mask

    def _after_change(self) -> None:
        """Save the index file, or rebuild the index when the catalog outgrew its kind.
        Under the write lock, after catching up with other writers, so the file written
        reflects the database (never this object's older view of it)."""
        with self._writing():
            if self._stale or self._index is None:
                return  # the index file is left as it was; the next open repairs it
            size = self._index.ntotal
            if self._index.needs_rebuild(size):
                log.info("%s: %d items, rebuilding the index (%s)", self.path, size,
                         VectorIndex.kind_for(size, self._index.dim, self._index.kind))
                self.rebuild(clean_photos=False)
            else:
                self._save_index()

    # -- adding precomputed vectors


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
        takes each batch while its kind still suits the catalog's size; once the catalog
        outgrows it, the index is built once at the end from the stored vectors (which
        also trains an IVF index on a sample of the whole catalog). `progress` is called
        with the number of records handled after each batch.
        """
        dim = self.dim
        if dim is None:
            dim = self.embedder().dim  # a new catalog: the vectors must be the model's
        report = AddReport()
        seen: set[str] = set()
        changed = False
        self._deferred = False  # True once the index is to be rebuilt from SQLite at the end
        try:
            for records, vectors in batches:
                vectors = np.asarray(vectors, dtype=np.float32)
                if vectors.ndim != 2 or vectors.shape != (len(records), dim):
                    raise FashionLensError(
                        f"expected {len(records)} vectors of dimension {dim}, got an array "
                        f"of shape {vectors.shape}")
                with self._writing():  # the commit and the index update together
                    keys, added = self._add_vector_batch(list(records), vectors, seen,
                                                         report)
                    if len(keys):
                        changed = True
                        self._columns_changed(keys)
                        if not self._deferred:
                            self._deferred = self._index_takes(added, keys)
                if progress is not None:
                    progress(len(records))
        except BaseException:
            if self._deferred:
                self._deferred = False
                self._index_failed()  # reopening finds the index behind and rebuilds it
            raise
        if self._deferred:
            self._deferred = False
            self.rebuild(clean_photos=False)
        elif changed:
            self._after_change()
        return report

    def _index_takes(self, vectors: np.ndarray, keys: np.ndarray) -> bool:
        """Add a batch to the in-memory index; False when the index should rather be
        rebuilt at the end (it is then dropped, to free its memory)."""
        index = self._current_index()
        size = (index.ntotal if index is not None else 0) + len(keys)
        if self._index is None and VectorIndex.kind_for(size, self.dim) == "flat":
            index = self._index = VectorIndex.empty(self.dim, "flat")
        if index is None or index.needs_rebuild(size):
            self._index = None
            return True
        try:
            index.add(vectors, keys)
        except BaseException:
            self._index_failed()
            raise
        return False

    def _add_vector_batch(self, records: list[ItemRecord], vectors: np.ndarray,
                          seen: set[str], report: AddReport) -> tuple[np.ndarray, np.ndarray]:
        """Insert one batch in one transaction (the caller holds the write lock);
        returns (keys, vectors) of the added."""
        present = self._existing([r.id for r in records if isinstance(r.id, str)])
        norms = np.linalg.norm(vectors, axis=1)
        todo: list[int] = []
        for i, record in enumerate(records):
            status, problem = self._record_problem(record, present, seen, None)
            if status == "add" and (not np.isfinite(norms[i]) or norms[i] == 0):
                status, problem = "failed", "the vector is zero or not finite"
            if status != "add":
                report.record(AddOutcome(str(record.id), status, record.describe(), problem))
                continue
            seen.add(record.id)
            todo.append(i)
        if not todo:
            return np.empty(0, dtype=np.int64), np.empty((0, vectors.shape[1]), np.float32)
        unit = normalise(vectors[todo])
        now = _now()
        chosen = [records[i] for i in todo]
        try:
            with self._new_photos(chosen) as images, self._transaction() as db:
                row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'items'"
                                 ).fetchone()
                last = int(row[0]) if row else 0
                db.executemany(
                    "INSERT INTO items (id, image, source, category, colour, size, price, "
                    "status, extra, embedding, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    ((r.id, image or "", _source_of(r), r.category, r.colour, r.size, r.price,
                      r.status, json.dumps(r.extra or {}, ensure_ascii=False, sort_keys=True),
                      unit[j].tobytes(), now, now)
                     for j, (r, image) in enumerate(zip(chosen, images, strict=True))))
                rows = db.execute("SELECT key, id FROM items WHERE key > ? ORDER BY key",
                                  (last,)).fetchall()
                if [r[1] for r in rows] != [r.id for r in chosen]:
                    raise FashionLensError(f"{self.path}: another writer changed the catalog "
                                           "during a bulk insert; run it again to resume")
        except sqlite3.IntegrityError as exc:
            raise self._taken(exc, [r.id for r in chosen]) from None
        for i in todo:
            report.record(AddOutcome(records[i].id, "added", records[i].describe()))
        keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return keys, unit

    # -- changing items

    def _row(self, item_id: str) -> sqlite3.Row:
        row = self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?",
                               (item_id,)).fetchone()
        if row is None:
            raise UnknownItemError(self.path, item_id)
        return row

    def _item(self, row: sqlite3.Row) -> Item:
        image = self.path / row["image"] if row["image"] else None
        return Item(id=row["id"], image=image, category=row["category"],
                    colour=row["colour"], size=row["size"], price=row["price"],
                    status=row["status"], extra=json.loads(row["extra"] or "{}"),
                    source=row["source"], created_at=row["created_at"],
                    updated_at=row["updated_at"], key=row["key"])

    def get(self, item_id: str) -> Item:
        return self._item(self._row(item_id))

    def items(self, filters=None) -> Iterator[Item]:
        where, params = to_sql(parse_filters(filters))
        for row in self._db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE {where} ORDER BY key", params):
            yield self._item(row)

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
            _apply_field(changes, name, value)
        columns: dict[str, Any] = {}
        with self._writing():  # read-modify-write of `extra`: no other writer in between
            row = self._row(item_id)
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
            columns["updated_at"] = _now()
            assignments = ", ".join(f"{name} = ?" for name in columns)
            with self._transaction() as db:
                db.execute(f"UPDATE items SET {assignments} WHERE key = ?",
                           [*columns.values(), row["key"]])
            self._columns_changed([row["key"]])
        return self.get(item_id)

    def mark_sold(self, item_id: str) -> Item:
        return self.update(item_id, status="sold")

    def remove(self, item_ids: str | Iterable[str]) -> list[str]:
        """Delete items, their vectors and their stored photos (one transaction)."""
        ids = [item_ids] if isinstance(item_ids, str) else list(item_ids)
        with self._writing():
            rows = [self._row(item_id) for item_id in ids]  # unknown ids fail before any change
            keys = sorted({row["key"] for row in rows})
            photos = sorted({row["image"] for row in rows if row["image"]})
            # Listed first: a crash after the commit leaves them for the next writer.
            self._write_pending([Path(p).name for p in photos])
            try:
                with self._transaction() as db:
                    db.executemany("DELETE FROM items WHERE key = ?", [(k,) for k in keys])
            except BaseException:
                self._clear_pending()  # nothing was deleted: the photos stay in use
                raise
            for photo in photos:
                with contextlib.suppress(OSError):
                    (self.path / photo).unlink()
            self._clear_pending()
            if self._columns is not None:
                self._columns.drop(keys)
            index = self._current_index()
            if index is not None:
                try:
                    index.remove(keys)
                except BaseException:
                    self._index_failed()
                    raise
            self._after_change()
        return ids

    # -- searching

    def _stored_vector(self, item_id: str) -> tuple[int, np.ndarray]:
        row = self._db.execute("SELECT key, embedding FROM items WHERE id = ?",
                               (item_id,)).fetchone()
        if row is None:
            raise UnknownItemError(self.path, item_id)
        return int(row[0]), np.frombuffer(row[1], dtype=np.float32)

    def _exact(self, query: np.ndarray, keys: np.ndarray, k: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (keys, similarities) over the stored float vectors of `keys`."""
        best_keys = np.empty(0, dtype=np.int64)
        best_sims = np.empty(0, dtype=np.float32)
        for start in range(0, len(keys), SCAN_ROWS):
            part = keys[start:start + SCAN_ROWS]
            part_keys = np.concatenate([best_keys, part])
            sims = np.concatenate([best_sims, self._vectors_for(part) @ query])
            if len(sims) > k:
                top = np.argpartition(-sims, k - 1)[:k]
                part_keys, sims = part_keys[top], sims[top]
            best_keys, best_sims = part_keys, sims
        order = np.lexsort((best_keys, -best_sims))
        return best_keys[order], best_sims[order]

    def _query_vector(self, vector: Any) -> np.ndarray:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self.dim is not None and query.shape != (self.dim,):
            raise FashionLensError(f"the query vector has {query.size} values; this "
                                   f"catalog holds {self.dim}-d vectors")
        if not np.all(np.isfinite(query)) or not np.any(query):
            raise FashionLensError("the query vector is zero or not finite")
        return normalise(query)

    def search(self, image: str | Path | bytes | Any = None, *, item: str | None = None,
               vector: np.ndarray | None = None, k: int = 10, filters=None,
               steer: Mapping[str, float] | str | None = None) -> list[Match]:
        """The k items most similar to a photo (path, bytes, PIL image), to an item
        (which is left out of its own results) or to a precomputed `vector`, best
        first, among those matching `filters` (strings such as 'price<30', a list of
        them, or a mapping), with the query moved along learned directions
        (`steer={"striped": 0.5}` or 'striped=0.5, solid=-0.3'; see `learn_directions`).
        Similarities are exact (float vectors), also when an IVF index found them."""
        if sum(x is not None for x in (image, item, vector)) != 1:
            raise FashionLensError("search by a photo, an item id or a vector (exactly one)")
        if k < 1:
            raise FashionLensError(f"k must be at least 1, not {k}")
        conditions = parse_filters(filters)
        weights = parse_steering(steer)
        directions = self._direction_vectors(weights) if weights else {}
        excluded: list[int] = []
        if item is not None:
            key, query = self._stored_vector(item)
            excluded = [key]
        elif vector is not None:
            query = self._query_vector(vector)
        else:
            label = str(image) if isinstance(image, str | Path) else "<query photo>"
            query = self.embedder().embed_one(image, name=label)
        if weights:
            query = steering.steer(query, directions, weights)
        index = self._current_index()
        if index is None:
            return []
        return self._rank(index, query, k, conditions, excluded)

    def _rank(self, index: VectorIndex, query: np.ndarray, k: int,
              conditions: list[Filter], excluded: list[int]) -> list[Match]:
        """Top-k matches (exact similarities) among the items matching `conditions`."""
        mask = None
        if conditions:
            mask = self._filter_mask(conditions)
            for key in excluded:
                if key < len(mask):
                    mask[key] = False
            count = int(np.count_nonzero(mask))
        else:
            count = index.ntotal - len(excluded)
        k = min(k, count)
        if k <= 0:
            return []
        if mask is not None and count <= EXACT_LIMIT:
            return self._matches(*self._exact(query, np.flatnonzero(mask), k))
        share = count / max(1, index.ntotal)
        # An IVF index ranks by 8-bit codes: take a longer shortlist, re-rank it exactly.
        fetch = k if index.kind == "flat" else max(RERANK_MIN, RERANK_FACTOR * k)
        sims, keys = index.search(query, fetch, mask=mask, excluded=excluded, share=share)
        sims, keys = sims[0][keys[0] >= 0], keys[0][keys[0] >= 0]
        if len(keys) < min(fetch, count) and index.kind == "ivf":
            # The probed lists held too few matching items: probe them all.
            sims, keys = index.search(query, fetch, mask=mask, excluded=excluded,
                                      exhaustive=True)
            sims, keys = sims[0][keys[0] >= 0], keys[0][keys[0] >= 0]
        if len(keys) < k:  # only if the index misses items: rank every match exactly
            candidates = (np.flatnonzero(mask) if mask is not None
                          else np.setdiff1d(self._keys(), excluded))
            return self._matches(*self._exact(query, candidates, k))
        if index.kind == "flat":
            return self._matches(keys[:k], sims[:k])
        return self._reranked(query, keys, k)

    def _reranked(self, query: np.ndarray, keys: np.ndarray, k: int) -> list[Match]:
        """The best k of a shortlist by exact similarity, reading each shortlisted row
        (metadata and vector) in one query."""
        marks = ", ".join("?" * len(keys))
        rows = self._db.execute(f"SELECT {_ITEM_COLUMNS}, embedding FROM items "
                                f"WHERE key IN ({marks})", [int(x) for x in keys]).fetchall()
        vectors = np.frombuffer(b"".join(r["embedding"] for r in rows), dtype=np.float32)
        sims = vectors.reshape(len(rows), -1) @ query
        order = np.lexsort((np.array([r["key"] for r in rows]), -sims))[:k]
        return [Match(self._item(rows[i]), float(np.clip(sims[i], -1.0, 1.0))) for i in order]

    def _matches(self, keys: np.ndarray, sims: np.ndarray) -> list[Match]:
        items: dict[int, Item] = {}
        key_list = [int(k) for k in keys]
        for row in self._select_in(f"SELECT {_ITEM_COLUMNS} FROM items WHERE key IN ({{marks}})",
                                   key_list):
            items[row["key"]] = self._item(row)
        return [Match(items[k], float(np.clip(s, -1.0, 1.0)))
                for k, s in zip(key_list, sims, strict=True) if k in items]

    def near_duplicates(self, threshold: float = DUPLICATE_THRESHOLD, neighbours: int = 10
                        ) -> list[DuplicatePair]:
        """Pairs of items whose photos are near-identical (cosine similarity >= threshold),
        most similar first. Exact (FAISS range search) with a flat index; with IVF each
        item's `neighbours` nearest are checked (similarities from 8-bit codes)."""
        if not 0.0 < threshold <= 1.0:
            raise FashionLensError(f"threshold must be in (0, 1], not {threshold}")
        index = self._current_index()
        if index is None or len(self) < 2:
            return []
        best: dict[tuple[int, int], float] = {}

        def keep(a: int, b: int, sim: float) -> None:
            if a != b and b >= 0 and sim >= threshold:
                pair = (min(a, b), max(a, b))
                best[pair] = max(best.get(pair, -1.0), sim)

        for keys, vectors in self._scan(rows=1024):
            if index.kind == "flat":
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
        items = {m.item.key: m.item for m in self._matches(np.array(involved),
                                                           np.zeros(len(involved)))}
        pairs = [DuplicatePair(items[a], items[b], min(sim, 1.0))
                 for (a, b), sim in best.items() if a in items and b in items]
        pairs = [p if p.a.id <= p.b.id else DuplicatePair(p.b, p.a, p.similarity)
                 for p in pairs]
        return sorted(pairs, key=lambda p: (-p.similarity, p.a.id, p.b.id))

    # -- steering directions

    def learn_directions(self, field: str, *, method: str = "mean",
                         values: Iterable[str] | None = None, min_count: int = 5,
                         filters=None) -> list[Direction]:
        """Learn one direction per value of a metadata field (category, colour, size,
        status or extra.NAME) from the catalog's own items, and keep them (replacing
        directions of the same name). Returns the directions learned."""
        name = canonical_field(field, field)
        if name in ("id", "price"):
            raise FashionLensError(f"cannot learn directions from '{name}': use a label "
                                   "field (category, colour, size, status or extra.NAME)")
        where, params = to_sql(parse_filters(filters))
        labels, chunks = [], []
        column = column_sql(name)
        cursor = self._db.execute(
            f"SELECT {column}, embedding FROM items WHERE {where} ORDER BY key", params)
        while rows := cursor.fetchmany(SCAN_ROWS):
            labels.extend(r[0] for r in rows)
            chunks.append(np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32))
        if not labels:
            raise FashionLensError(f"{self.path}: no items to learn directions from")
        vectors = np.concatenate(chunks).reshape(len(labels), -1)
        learned = learn_directions(vectors, labels, field=name, method=method,
                                   values=list(values) if values else None,
                                   min_count=min_count)
        if not learned:
            raise FashionLensError(
                f"{self.path}: no value of {name} has {min_count} items carrying it and "
                f"{min_count} labelled items without it")
        with self._transaction() as db:
            _store_directions(db, learned)
        return learned

    def directions(self) -> list[str]:
        """Names of the learned steering directions, sorted."""
        return [r[0] for r in self._db.execute("SELECT name FROM directions ORDER BY name")]

    def direction_info(self) -> list[dict]:
        return [dict(r) for r in self._db.execute(
            "SELECT name, field, value, method, positives, negatives, created_at "
            "FROM directions ORDER BY name")]

    def remove_directions(self, names: Iterable[str] | None = None) -> list[str]:
        """Forget the named directions (all of them when `names` is None)."""
        known = set(self.directions())
        wanted = sorted(known) if names is None else list(names)
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise FashionLensError(f"{self.path}: no steering direction named "
                                   f"{', '.join(unknown)}")
        with self._transaction() as db:
            db.executemany("DELETE FROM directions WHERE name = ?", [(n,) for n in wanted])
        return wanted

    def _direction_vectors(self, weights: Mapping[str, float]) -> dict[str, np.ndarray]:
        rows = self._db.execute("SELECT name, vector FROM directions").fetchall()
        return {r[0]: np.frombuffer(r[1], dtype=np.float32) for r in rows}

    # -- a summary

    def info(self) -> dict:
        statuses = dict(self._db.execute(
            "SELECT status, count(*) FROM items GROUP BY status ORDER BY status").fetchall())
        categories = dict(self._db.execute(
            "SELECT coalesce(category, ''), count(*) FROM items GROUP BY 1 "
            "ORDER BY 2 DESC, 1").fetchall())
        index = self._current_index()
        return {
            "path": str(self.path),
            "items": len(self),
            "statuses": statuses,
            "categories": categories,
            "model": self._meta("model"),
            "model_fingerprint": self._meta("model_fingerprint"),
            "dimension": self.dim,
            "index": index.kind if index else None,
            "index_vectors": index.ntotal if index else 0,
            "index_details": index.describe() if index else None,
            "tombstones": 0,  # removals delete vectors at once (kept for older readers)
            "directions": self.directions(),
            "created_at": self._meta("created_at"),
        }

