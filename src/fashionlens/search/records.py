"""What goes into a catalog and what comes out: records, items, matches, and the checks
every entry point (CLI, HTTP API, Python, shard import) applies to one item, so that one
request cannot make the catalog re-serialise megabytes per field or hold its write lock
for minutes, and ids are ones any HTTP client can send back in a URL."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import DataError, FashionLensError
from .filters import STATUSES, FilterError, canonical_field

METADATA_FIELDS = ("category", "colour", "size", "price", "status")
MAX_ID_CHARS = 200
MAX_EXTRA_FIELDS = 64
MAX_FIELD_NAME_CHARS = 64
MAX_VALUE_CHARS = 1000


def now() -> str:
    """A timestamp as stored in the catalog (UTC, seconds)."""
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
    source: str | None = None  # where its vector came from, for an item without a photo

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
    # What the catalog's model predicted (`tags.as_json`), apart from the shop's values:
    # {TASK: {"label", "probability"}}, a tag task {TASK: [{"label", "probability"}]}.
    predicted: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "image": None if self.image is None else str(self.image),
                "category": self.category,
                "colour": self.colour, "size": self.size, "price": self.price,
                "status": self.status, "extra": self.extra, "source": self.source,
                "created_at": self.created_at, "updated_at": self.updated_at,
                "predicted": self.predicted}


@dataclass
class Match:
    """A search result: the item and its cosine similarity to the query."""

    item: Item
    similarity: float
    # Below the catalog's relevance floor (`indexing.FLOOR_NEIGHBOUR`): a weak match.
    weak: bool = False

    @property
    def distance(self) -> float:
        """Cosine distance, 1 - similarity (0 for the same photo)."""
        return 1.0 - self.similarity

    def to_dict(self) -> dict:
        return {**self.item.to_dict(), "distance": round(self.distance, 6),
                "similarity": round(self.similarity, 6), "weak": self.weak}


@dataclass
class AddOutcome:
    """What happened to one record: `added`, `exists` (id already present) or `failed`.

    `raced`: the id was free when this run looked it up, and another process added it
    while this run was embedding the photo: this record's photo and fields were not
    stored (the other process's are kept)."""

    id: str
    status: str
    source: str = ""
    error: str | None = None
    raced: bool = False


@dataclass
class AddReport:
    added: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    failed: list[AddOutcome] = field(default_factory=list)
    # Ids (also in `existing`) another process added during this run: see AddOutcome.
    raced: list[str] = field(default_factory=list)

    def record(self, outcome: AddOutcome) -> AddOutcome:
        if outcome.status == "added":
            self.added.append(outcome.id)
        elif outcome.status == "exists":
            self.existing.append(outcome.id)
            if outcome.raced:
                self.raced.append(outcome.id)
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


def utf8_text(text: str) -> bool:
    """False for text holding lone surrogates (a file name in another encoding, read by
    Python as surrogate escapes): no database, URL or terminal can take it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    if not utf8_text(item_id):
        raise ValueError(f"id {_shown(ascii(item_id), 80)} is not valid UTF-8 text (a file "
                         "name in another encoding?)")
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


def image_root_folder(image_root: str | Path | None) -> Path | None:
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



def apply_field(target: ItemRecord | dict, name: str, value: Any) -> None:
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



def triage(record: ItemRecord, present: set[str], seen: set[str],
           image_root: str | Path | None = None) -> tuple[str, str | None]:
    """('add', None), ('exists', None) or ('failed', why) for one record about to be
    added; normalises its price and status. Both ingest sources (photos embedded here,
    vectors from elsewhere) go through it."""
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


@dataclass
class VectorModel:
    """The model a set of vectors comes from, as catalogs and vector shards record it:
    vectors of two models cannot be compared, and each model has its near-duplicate line."""

    spec: str
    fingerprint: str
    dim: int
    duplicate_threshold: float | None = None  # None: recorded before models carried one

    def recorded(self) -> dict[str, str]:
        """The catalog's meta values for it."""
        line = ({} if self.duplicate_threshold is None
                else {"duplicate_threshold": f"{self.duplicate_threshold:g}"})
        return {"model": self.spec, "model_fingerprint": self.fingerprint,
                "dim": str(self.dim), **line}
