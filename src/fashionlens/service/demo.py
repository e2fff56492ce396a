"""A small demo catalog made of the bundled sample photos, for `fashionlens serve --demo`.

Each photo becomes an item (id `Dress/dress-1`, category from its folder) with a made-up
but stable price, so filters such as `price<20` have something to work on, and the
pattern of its garment (`extra.pattern`: solid, striped, checked or printed) from
`assets/samples/patterns.csv`, labelled by eye from the 40 photos, so the README's "more
striped" can be tried in the demo.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
from pathlib import Path

from ..errors import DataError, FashionLensError
from ..inference.predictor import SAMPLE_PHOTOS
from ..search.catalog import CATALOG_DB, Catalog, records_from_folder

PATTERNS_CSV = SAMPLE_PHOTOS / "patterns.csv"


def demo_price(item_id: str) -> float:
    """A price between 5 and 45 that depends only on the id."""
    return 5.0 + int(hashlib.sha1(item_id.encode()).hexdigest()[:4], 16) % 41


def demo_patterns(path: str | Path = PATTERNS_CSV) -> dict[str, str]:
    """The sample photos' pattern labels: item id -> pattern (an empty dict if no file)."""
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"id", "pattern"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the columns id and pattern")
        return {row["id"].strip(): row["pattern"].strip() for row in reader
                if row["id"] and row["pattern"]}


def _min_count(values: list[str | None]) -> int:
    """Items needed on each side of a direction: 3, or fewer in a tiny test catalog."""
    counts = [values.count(v) for v in set(values) if v]
    return max(1, min(3, min(counts))) if counts else 1


def build_demo_catalog(folder: str | Path, source: str | Path = SAMPLE_PHOTOS,
                       limit: int | None = None, model: str | Path | None = None) -> Path:
    """Create (or complete) a catalog of the sample photos in `folder`; returns it.

    `limit` keeps only the first N photos of each category (tests use a tiny catalog).
    `model` makes a new catalog's vectors (None: the bundled default); a catalog being
    completed keeps the model it was built with.
    Steering directions are learned from the categories ("more like a hat") and from
    the patterns ("more striped"), so the steering control has something to move.
    """
    folder = Path(folder).expanduser()
    records = records_from_folder(source).records
    if limit is not None:
        kept: dict[str | None, int] = {}
        selected = []
        for record in records:
            if kept.get(record.category, 0) < limit:
                kept[record.category] = kept.get(record.category, 0) + 1
                selected.append(record)
        records = selected
    patterns = demo_patterns(Path(source) / "patterns.csv")
    for record in records:
        record.price = demo_price(record.id)
        if record.id in patterns:
            record.extra["pattern"] = patterns[record.id]
    create = not (folder / CATALOG_DB).is_file()
    with Catalog(folder, create=create, model=model if create else None) as catalog:
        catalog.add(records)
        if hasattr(catalog, "learn_directions") and not catalog.directions():
            per_category = _min_count([r.category for r in records])
            catalog.learn_directions("category", min_count=per_category)
            labelled = [r.extra.get("pattern") for r in records]
            # Too few labelled items on one side (a tiny test catalog): no pattern steering.
            with contextlib.suppress(FashionLensError):
                if any(labelled):
                    catalog.learn_directions("extra.pattern", min_count=_min_count(labelled))
    return folder
