"""Visual search over a shop's catalog: "similar items" and near-duplicate photos.

    from fashionlens.search import Catalog
    catalog = Catalog("shop-catalog", create=True)
    catalog.add_source("export.csv", id_column="sku", image_column="photo")
    for match in catalog.search("photo.jpg", k=5, filters=["category=Dress", "price<30"]):
        print(match.item.id, match.distance)
"""

from .catalog import (
    AddOutcome,
    AddReport,
    Catalog,
    DuplicatePair,
    Item,
    ItemRecord,
    Match,
    read_source,
    records_from_csv,
    records_from_folder,
)
from .embeddings import Embedded, Embedder
from .filters import Filter, FilterError, parse_filter, parse_filters

__all__ = ["AddOutcome", "AddReport", "Catalog", "DuplicatePair", "Embedded", "Embedder",
           "Filter", "FilterError", "Item", "ItemRecord", "Match", "parse_filter",
           "parse_filters", "read_source", "records_from_csv", "records_from_folder"]
