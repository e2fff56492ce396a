"""The catalog database's schema version and its upgrades.

`upgrade` brings an older catalog's database to SCHEMA_VERSION in one transaction when it
is opened (`store.CatalogStore`); moving a catalog's vectors or tags to another model is
`migrate`'s.

    1   items, meta, directions
    2   predictions: what the catalog's model predicted for each item (`tags`)
"""

from __future__ import annotations

SCHEMA_VERSION = 2

# Schema 2: what the catalog's model predicted for each item (`tags`), apart from what
# the shop entered. Created by `upgrade` in one transaction.
PREDICTIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    key INTEGER NOT NULL,
    task TEXT NOT NULL,
    label TEXT NOT NULL,
    probability REAL NOT NULL,
    kind TEXT NOT NULL,
    field TEXT NOT NULL,
    confident INTEGER NOT NULL,
    PRIMARY KEY (key, task, label)
);
CREATE INDEX IF NOT EXISTS predictions_field ON predictions (field, key);
"""


def upgrade(store) -> None:
    """Bring the schema of `store` (a `store.CatalogStore`) to SCHEMA_VERSION, in one
    transaction; another process that upgraded it first leaves nothing to do."""
    with store.transaction(changes_items=False) as db:
        version = store.meta("schema_version")
        if version is not None and version.isdigit() and int(version) >= SCHEMA_VERSION:
            return
        for statement in PREDICTIONS_SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        store.set_meta({"schema_version": str(SCHEMA_VERSION)}, db)
