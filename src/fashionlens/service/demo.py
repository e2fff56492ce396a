"""A small demo catalog made of the bundled sample photos, for `fashionlens serve --demo`.

Each photo becomes an item (id `Dress/dress-1`, category from its folder) with a made-up
but stable price, so filters such as `price<20` have something to work on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..inference.predictor import SAMPLE_PHOTOS
from ..search.catalog import CATALOG_DB, Catalog, records_from_folder


def demo_price(item_id: str) -> float:
    """A price between 5 and 45 that depends only on the id."""
    return 5.0 + int(hashlib.sha1(item_id.encode()).hexdigest()[:4], 16) % 41


def build_demo_catalog(folder: str | Path, source: str | Path = SAMPLE_PHOTOS,
                       limit: int | None = None) -> Path:
    """Create (or complete) a catalog of the sample photos in `folder`; returns it.

    `limit` keeps only the first N photos of each category (tests use a tiny catalog).
    Steering directions are learned from the categories ("more like a hat"), so the
    steering sliders have something to move.
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
    for record in records:
        record.price = demo_price(record.id)
    create = not (folder / CATALOG_DB).is_file()
    with Catalog(folder, create=create) as catalog:
        catalog.add(records)
        if hasattr(catalog, "learn_directions") and not catalog.directions():
            per_category = min(sum(r.category == c for r in records)
                               for c in {r.category for r in records})
            catalog.learn_directions("category", min_count=max(1, min(3, per_category)))
    return folder
