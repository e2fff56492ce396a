"""`fashionlens catalog ...`: build and maintain a catalog for visual search.

search.catalog (and with it torch) is imported inside the commands, so that `catalog
--help` starts fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..errors import FashionLensError, ItemExistsError
from ..progress import StepBar, track
from .common import (
    MODEL_HELP,
    CatalogModelName,
    ImageColumn,
    ImageDir,
    ImageExt,
    RuntimeName,
    UnknownThreshold,
    err,
    name_value_pairs,
    out,
)
from .search import CatalogOption, item_table

if TYPE_CHECKING:
    from ..inference.predictor import Predictor
    from ..search.catalog import AddReport, Catalog
    from ..search.records import ItemRecord

catalog_app = typer.Typer(
    no_args_is_help=True,
    help="Build and maintain a shop catalog for similar-item search.",
)

ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", metavar="NAME_OR_PATH",
                 help=MODEL_HELP + ", or a backbone name (default: 'default'). Only for a "
                                   "new catalog; later commands reuse its model."),
]
IdColumn = Annotated[str, typer.Option(help="CSV column with the item ids.")]
ColumnMap = Annotated[
    list[str] | None,
    typer.Option("--column", help="Map a CSV column to an item field: FIELD=COLUMN, "
                                  "e.g. category=garment_type (repeatable)."),
]
ImageRoot = Annotated[
    Path | None,
    typer.Option(help="Refuse photos whose path (symlinks followed) is outside this folder, "
                      "e.g. for a CSV export from elsewhere."),
]
BatchSize = Annotated[int, typer.Option(min=1, help="Photos per batch (one transaction).")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="FIELD=VALUE",
                 help="Item metadata (not a config override): category, colour, size, "
                      "price, status or extra.NAME, e.g. --set price=25 (repeatable)."),
]


def _ingest(cat: Catalog, source: Path, batch_size: int, image_root: Path | None = None,
            screen: Predictor | None = None, **options) -> AddReport:
    from ..search.catalog import AddReport, read_source

    items = read_source(source, image_root=image_root, **options)
    report = AddReport()
    for problem in items.problems:
        report.record(problem)
    records = items.records
    if screen is not None:
        records = _refuse_unknown(screen, records, report, batch_size)
    for outcome in track(cat.add_iter(records, batch_size=batch_size,
                                      image_root=image_root), "embedding",
                         total=len(records)):
        report.record(outcome)
    if report.failed:
        table = Table(title="not added", title_justify="left")
        table.add_column("id")
        table.add_column("source", overflow="fold")
        table.add_column("reason", overflow="fold")
        for failure in report.failed:
            table.add_row(failure.id, failure.source, failure.error or "")
        err.print(table)
    out.print(f"added {len(report.added)}, already in the catalog {len(report.existing)}, "
              f"not added {len(report.failed)}; the catalog now holds {len(cat)} items "
              f"({cat.path})")
    if report.raced:
        shown = ", ".join(report.raced[:10]) + (" ..." if len(report.raced) > 10 else "")
        err.print(f"[yellow]{len(report.raced)} id(s) were added by another process while "
                  f"this run was embedding them[/]: {shown}. This run's photos and fields "
                  "for them were NOT stored; the catalog keeps the other process's. To use "
                  "these instead, change them with `fashionlens catalog update ID --set ...`, "
                  "or `catalog remove` them and add them again.", soft_wrap=True,
                  highlight=False)
    if report.failed and not report.added and not report.existing:
        raise FashionLensError(f"{source}: no item could be added")
    return report


def _screening_model(cat: Catalog, threshold: float | None, runtime: str) -> Predictor:
    """The model that tells garments from other photos for `--refuse-unknown`: the
    catalog's own when it is a calibrated classifier, else the bundled default model."""
    from ..inference.predictor import Predictor

    if cat.model:
        try:
            own = Predictor(cat.model, unknown_threshold=threshold, runtime=runtime)
        except FashionLensError:  # a backbone or an embedding-only model: no heads
            own = None
        if own is not None and own.unknown is not None:
            return own
    fallback = Predictor(None, unknown_threshold=threshold, runtime=runtime)
    if fallback.unknown is None:
        raise FashionLensError("--refuse-unknown: neither the catalog's model nor the default "
                               "model is calibrated for 'not a garment' (fashionlens "
                               "calibrate-unknown)")
    return fallback


def _refuse_unknown(predictor: Predictor, records: list[ItemRecord], report: AddReport,
                    batch_size: int) -> list[ItemRecord]:
    """The records whose photo looks like a garment the model knows; the others are
    reported (as not added, naming the photo and its score). Photos are only read."""
    from ..search.records import AddOutcome

    with_photo = [r for r in records if r.image is not None]
    verdicts = {}
    for record, prediction in zip(with_photo, track(
            predictor.predict_paths([r.image for r in with_photo], top_k=1,
                                    batch_size=batch_size),
            "checking photos", total=len(with_photo)), strict=True):
        verdicts[id(record)] = prediction
    kept, refused = [], []
    threshold = predictor.unknown_line()
    for record in records:
        prediction = verdicts.get(id(record))
        if prediction is not None and prediction.unknown:
            refused.append(record.describe())
            report.record(AddOutcome(record.id, "failed", record.describe(),
                                     f"refused: not a garment we know (unknown_score "
                                     f"{prediction.unknown_score:.3f})"))
        else:  # unreadable photos go on, and the add reports them as it always does
            kept.append(record)
    if refused:
        err.print(f"[yellow]refused {len(refused)} photo(s) that do not look like a garment "
                  f"we know[/] (unknown_score at or above {threshold:.3f}, "
                  f"{predictor.info.name or predictor.model_dir}): {', '.join(refused)}",
                  soft_wrap=True)
    return kept


def _csv_options(id_column, image_column, image_dir, image_ext, column) -> dict:
    return {"id_column": id_column, "image_column": image_column, "image_dir": image_dir,
            "image_extension": image_ext, "columns": name_value_pairs(column, "--column") or None}


@catalog_app.command()
def build(
    source: Annotated[Path, typer.Argument(help="A CSV export, or a folder of photos "
                                                "(one sub-folder per category).")],
    catalog: CatalogOption,
    model: ModelOption = None,
    id_column: IdColumn = "id",
    image_column: ImageColumn = "image",
    image_dir: ImageDir = None,
    image_ext: ImageExt = None,
    column: ColumnMap = None,
    image_root: ImageRoot = None,
    batch_size: BatchSize = 32,
    runtime: RuntimeName = "auto",
) -> None:
    """Create a catalog from a CSV export or a folder of photos; run again to resume.

    Photos are copied into the catalog; ids already in it are skipped. On an existing
    catalog, --model must be the catalog's own model.
    """
    from ..search.catalog import CATALOG_DB, Catalog

    path = catalog.expanduser()
    existed = (path / CATALOG_DB).is_file()
    made = _folders_to_make(path)
    # Only a catalog this run starts in a new or empty folder is cleaned up if it fails.
    new = not existed and (bool(made) or (path.is_dir() and not any(path.iterdir())))
    options = _csv_options(id_column, image_column, image_dir, image_ext, column)
    try:
        with Catalog(path, create=True, model=model, runtime=runtime) as cat:
            if existed:
                if model is not None:
                    # A different model is refused here, naming the catalog's own.
                    cat.embedder()
                err.print(f"{path}: the catalog exists (model {cat.model}, {len(cat)} items); "
                          "resuming it: ids already in it are skipped", highlight=False)
            try:
                _ingest(cat, source, batch_size, image_root, **options)
            except KeyboardInterrupt:
                kept = len(cat)
                if kept or existed:
                    err.print(f"interrupted: the catalog {path} keeps the {kept} items added "
                              "so far (whole batches); run the same `fashionlens catalog "
                              "build` command again to resume it (items already in it are "
                              "skipped)", highlight=False)
                raise
    except BaseException as exc:
        if new and _remove_new_catalog(path, made) \
                and isinstance(exc, KeyboardInterrupt):
            err.print(f"interrupted before any item was added; nothing was kept in {path}",
                      highlight=False)
        if isinstance(exc, KeyboardInterrupt):
            raise typer.Exit(130) from None
        raise


def _folders_to_make(path: Path) -> list[Path]:
    """The folders (path and its parents) that do not exist yet, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _remove_new_catalog(path: Path, made: list[Path]) -> bool:
    """After a failed `catalog build` of a new catalog: if it holds no item, remove what
    the build created (the catalog's own files, then the folders it made, if empty).
    Anything else is left. True when the catalog folder is gone or back to empty."""
    import contextlib
    import sqlite3

    from ..search.store import CATALOG_DB, IMAGES_DIR, LOCK_FILE, PENDING_FILE

    db = path / CATALOG_DB
    if db.is_file():
        try:
            with contextlib.closing(sqlite3.connect(db)) as conn:
                if conn.execute("SELECT count(*) FROM items").fetchone()[0]:
                    return False  # a partial build: kept, and running it again resumes
        except sqlite3.Error:
            return False
    names = [CATALOG_DB, f"{CATALOG_DB}-wal", f"{CATALOG_DB}-shm", f"{CATALOG_DB}-journal",
             LOCK_FILE, PENDING_FILE, "index.faiss"]
    for name in names:
        with contextlib.suppress(OSError):
            (path / name).unlink()
    for folder in (path / IMAGES_DIR, *made):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    return not path.exists() or not any(path.iterdir())


@catalog_app.command()
def add(
    source: Annotated[Path, typer.Argument(help="A photo, a CSV export or a folder of photos.")],
    catalog: CatalogOption,
    item_id: Annotated[
        str | None,
        typer.Option("--id", help="Id of a single photo's item (default: its file name)."),
    ] = None,
    fields: SetOption = None,
    id_column: IdColumn = "id",
    image_column: ImageColumn = "image",
    image_dir: ImageDir = None,
    image_ext: ImageExt = None,
    column: ColumnMap = None,
    image_root: ImageRoot = None,
    batch_size: BatchSize = 32,
    model: CatalogModelName = None,
    runtime: RuntimeName = "auto",
    refuse_unknown: Annotated[
        bool,
        typer.Option("--refuse-unknown",
                     help="Leave out photos that do not look like a garment the model "
                          "knows (unknown_score at or above the threshold of the catalog's "
                          "model if calibrated, else of the bundled default model); each "
                          "is named. The photos themselves are left as they are."),
    ] = False,
    unknown_threshold: UnknownThreshold = None,  # with --refuse-unknown
) -> None:
    """Add items to an existing catalog (no re-indexing of the others).

    Fails (exit 2) when every item's id is already taken, or when another process added
    some of the same ids while this run was embedding them (those are named; the other
    process's photos and fields are kept).
    """
    from ..search.catalog import Catalog

    options = _csv_options(id_column, image_column, image_dir, image_ext, column)
    if not source.is_dir() and source.suffix.lower() not in (".csv", ".tsv"):
        options = {"item_id": item_id, "fields": name_value_pairs(fields, "--set")}
    elif item_id or fields:
        raise FashionLensError("--id and --set apply to a single photo")
    if unknown_threshold is not None and not refuse_unknown:
        raise FashionLensError("--unknown-threshold applies with --refuse-unknown")
    with Catalog(catalog, model=model, runtime=runtime) as cat:
        screen = (_screening_model(cat, unknown_threshold, runtime) if refuse_unknown
                  else None)
        report = _ingest(cat, source, batch_size, image_root, screen=screen, **options)
    if report.raced:  # another `add` won the race for these ids: not silently dropped
        raise ItemExistsError(catalog, report.raced)
    if report.existing and not report.added:
        raise ItemExistsError(catalog, report.existing)


@catalog_app.command()
def update(
    item_id: Annotated[str, typer.Argument(help="The item to change.")],
    catalog: CatalogOption,
    fields: SetOption = None,
) -> None:
    """Change an item's metadata, e.g. --set price=25 --set colour=red."""
    from ..search.catalog import Catalog

    values = name_value_pairs(fields, "--set")
    if not values:
        raise FashionLensError("nothing to update: give --set FIELD=VALUE")
    with Catalog(catalog) as cat:
        item = cat.update(item_id, values)
    out.print(item_table(f"updated {item_id}", [item]))


@catalog_app.command()
def sold(
    item_ids: Annotated[list[str], typer.Argument(help="Items that were sold.")],
    catalog: CatalogOption,
) -> None:
    """Mark items as sold (they stay searchable with --filter status=sold)."""
    from ..search.catalog import Catalog

    with Catalog(catalog) as cat:
        for item_id in item_ids:
            cat.get(item_id)  # every id is checked before any is changed
        for item_id in item_ids:
            cat.mark_sold(item_id)
    out.print(f"marked sold: {', '.join(item_ids)}")


@catalog_app.command()
def remove(
    item_ids: Annotated[list[str], typer.Argument(help="Items to delete.")],
    catalog: CatalogOption,
) -> None:
    """Delete items, their vectors and their stored photos."""
    from ..search.catalog import Catalog

    with Catalog(catalog) as cat:
        cat.remove(item_ids)
        left = len(cat)
    out.print(f"removed: {', '.join(item_ids)}; {left} items left")


@catalog_app.command()
def rebuild(catalog: CatalogOption) -> None:
    """Re-create the search index from the stored vectors and drop unused photos."""
    from ..search.catalog import Catalog

    with Catalog(catalog) as cat:
        result = cat.rebuild()
    out.print(f"index rebuilt: {result['items']} items, {result['index'] or 'no'} index, "
              f"{result['orphan_photos_removed']} unused photos removed")


@catalog_app.command()
def reembed(
    catalog: CatalogOption,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", metavar="NAME_OR_PATH",
                     help=MODEL_HELP + ", or a backbone name, for the new vectors "
                                       "(default: 'default')."),
    ] = None,
    batch_size: BatchSize = 32,
    runtime: RuntimeName = "auto",
) -> None:
    """Recompute every item's vector with another model, from the catalog's photos.

    Resumable; the catalog changes in one step at the end.
    """
    from ..search.catalog import Catalog

    with Catalog(catalog, runtime=runtime) as cat:
        total = len(cat)
        with StepBar("re-embedding", total) as bar:
            result = cat.reembed(model, batch_size=batch_size,
                                 progress=lambda n: bar.advance(steps=n))
    out.print(f"re-embedded {result['items']} items with {result['model']} "
              f"({result['dim']}-d vectors; {result['resumed']} from an interrupted run); "
              f"index: {result['index'] or 'none'}; steering directions re-learned: "
              f"{', '.join(result['directions']) or 'none'}")


@catalog_app.command()
def retag(
    catalog: CatalogOption,
    batch_size: BatchSize = 32,
    runtime: RuntimeName = "auto",
) -> None:
    """Tag every item's photo again with the catalog's model (its heads' predictions).

    For a catalog built before tags, or after a model change. Resumable; the tags change
    in one step at the end; the shop's own values are never touched.
    """
    from ..search.catalog import Catalog

    with Catalog(catalog, runtime=runtime) as cat:
        total = cat.tag_summary()["items_with_photos"]
        with StepBar("tagging", total) as bar:
            result = cat.retag(batch_size=batch_size, progress=lambda n: bar.advance(steps=n))
    out.print(f"tagged {result['items']} items with {result['model']} "
              f"({', '.join(result['tasks']) or 'no heads: nothing to predict'}; "
              f"{result['resumed']} from an interrupted run); {result['tagged']} items "
              "carry predicted tags")


@catalog_app.command("review")
def review_tags(
    catalog: CatalogOption,
    min_probability: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="How sure a prediction must be to be listed."),
    ] = 0.9,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List items whose shop value a confident prediction of the model disputes.

    A category or colour the shop gave that the catalog's model confidently reads
    otherwise: the item may be filed under the wrong value."""
    from ..search.catalog import Catalog

    with Catalog(catalog) as cat:
        found = cat.review_tags(min_probability)
    if as_json:
        print(json.dumps({"min_probability": min_probability, "items": found}))
        return
    table = Table(title=f"shop values that a prediction (p >= {min_probability}) disputes",
                  title_justify="left")
    for name in ("id", "field", "shop", "predicted", "probability"):
        table.add_column(name, justify="right" if name == "probability" else "left",
                         overflow="fold")
    for row in found:
        table.add_row(row["id"], row["field"], str(row["shop"]), row["predicted"],
                      f"{row['probability']:.4f}")
    out.print(table)
    out.print(f"{len(found)} item value(s) to check")


@catalog_app.command()
def duplicates(
    catalog: CatalogOption,
    threshold: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, show_default=False,
                     help="Cosine similarity from which two photos count as near-identical "
                          "[default: the line measured for the catalog's model, 0.93 where "
                          "none was]."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the pairs as JSON.")] = False,
) -> None:
    """List pairs of items whose photos are near-identical (e.g. a listing posted twice)."""
    from ..search.catalog import Catalog

    with Catalog(catalog) as cat:
        if threshold is None:
            threshold = cat.duplicate_threshold()
        pairs = cat.near_duplicates(threshold)
    if as_json:
        print(json.dumps({"threshold": threshold, "pairs": [p.to_dict() for p in pairs]}))
        return
    table = Table(title=f"near-duplicate photos (similarity >= {threshold})",
                  title_justify="left")
    for name in ("item", "item", "similarity", "photo", "photo"):
        table.add_column(name, justify="right" if name == "similarity" else "left",
                         overflow="fold")
    for pair in pairs:
        table.add_row(pair.a.id, pair.b.id, f"{pair.similarity:.4f}", str(pair.a.image),
                      str(pair.b.image))
    out.print(table)
    out.print(f"{len(pairs)} pairs")


def _value_rows(summary: dict) -> list[tuple[str, str]]:
    """`catalog info`'s rows of items per value (shop's or predicted: the filter rule),
    and what carries predicted tags."""
    rows = []
    for field, values in summary["values"].items():
        text = ", ".join(f"{v} {c['items']}" + (f" ({c['predicted']} predicted)"
                                                 if c["predicted"] else "")
                         for v, c in list(values.items())[:12])
        rows.append((field, text + (" ..." if len(values) > 12 else "")))
    tags = summary["tags"]
    rows.append(("predicted tags", f"{tags['tagged_items']} of {tags['items_with_photos']} "
                 f"items with photos ({', '.join(tags['tasks']) or 'none'})"
                 + ("; `catalog retag` tags the rest"
                    if tags["tagged_items"] < tags["items_with_photos"] else "")
                 + ("; some come from an earlier version of the model's heads (refit "
                    "since): `catalog retag` tags every item with the current one"
                    if tags.get("tags_current") is False else "")))
    if summary.get("weak_below") is not None:
        rows.append(("weak below", f"similarity {summary['weak_below']:.4f}"))
    return rows


@catalog_app.command()
def info(
    catalog: CatalogOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Summarise a catalog: items by status and category, model, index."""
    from ..search.catalog import Catalog

    with Catalog(catalog) as cat:
        summary = cat.info()
        repaired = cat.repaired
    if as_json:
        print(json.dumps(summary))
        return
    if repaired:
        err.print("[yellow]the index disagreed with the database and was rebuilt[/]")
    table = Table(title=f"catalog {summary['path']}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    statuses = ", ".join(f"{n} {s}" for s, n in summary["statuses"].items())
    categories = ", ".join(f"{c or '(none)'} {n}" for c, n in summary["categories"].items())
    index = (f"{summary['index']}, {summary['index_vectors']} vectors"
             + (f", {summary['tombstones']} removed" if summary["tombstones"] else "")
             if summary["index"] else "none yet")
    for name, value in (("items", f"{summary['items']}" + (f" ({statuses})" if statuses else "")),
                        *([] if summary["values"].get("category") else
                          [("categories", categories or "-")]),
                        ("model", f"{summary['model']} ({summary['dimension']}-d; "
                                  f"near-duplicates from {summary['duplicate_threshold']:g})"
                                  if summary["model"] else "not chosen yet"),
                        ("index", index),
                        *_value_rows(summary),
                        ("directions", ", ".join(summary["directions"]) or "-"),
                        ("created", summary["created_at"] or "")):
        table.add_row(name, value)
    out.print(table)


@catalog_app.command()
def directions(
    catalog: CatalogOption,
    learn: Annotated[
        str | None,
        typer.Option(help="Learn one direction per value of this field: category, colour, "
                          "size, status or extra.NAME (e.g. extra.pattern)."),
    ] = None,
    method: Annotated[
        str,
        typer.Option(help="mean: difference of class means; probe: a logistic-regression "
                          "probe's normal."),
    ] = "mean",
    values: Annotated[
        list[str] | None,
        typer.Option("--value", help="Only these values of the field (repeatable)."),
    ] = None,
    min_count: Annotated[
        int, typer.Option(min=1, help="Items needed with and without a value."),
    ] = 5,
    remove: Annotated[
        list[str] | None,
        typer.Option("--remove", help="Forget this direction (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List, learn or remove the steering directions used by `search --steer`."""
    from ..search.catalog import Catalog

    with Catalog(catalog) as cat:
        if remove:
            cat.remove_directions(remove)
        if learn:
            learned = cat.learn_directions(learn, method=method, values=values,
                                           min_count=min_count)
            err.print(f"learned {len(learned)} directions from {learn} ({method})")
        rows = cat.direction_info()
    if as_json:
        print(json.dumps({"directions": rows}))
        return
    table = Table(title="steering directions", title_justify="left")
    for name in ("name", "field", "method", "items with", "items without", "learned"):
        table.add_column(name, justify="right" if name.startswith("items") else "left")
    for row in rows:
        table.add_row(row["name"], row["field"], row["method"], str(row["positives"]),
                      str(row["negatives"]), row["created_at"])
    out.print(table)
    if not rows:
        out.print("no directions yet: learn some with --learn FIELD")


@catalog_app.command("import-vectors")
def import_vectors(
    vectors: Annotated[Path, typer.Argument(
        help="The shards `fashionlens embed` wrote (its --out folder, or .parquet files), "
             "or a .npy file: one embedding per row (then METADATA is needed).")],
    catalog: CatalogOption,
    metadata: Annotated[Path | None, typer.Argument(
        help="With a .npy file: a CSV whose data row i describes vector i.")] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", metavar="NAME_OR_PATH",
                     help=MODEL_HELP + ", or a backbone name: the model the .npy vectors "
                                       "were computed with (needed to search by photo; "
                                       "without it the catalog is searched by item or "
                                       "vector). Shards carry their model."),
    ] = None,
    id_column: IdColumn = "id",
    image_column: Annotated[
        str | None,
        typer.Option(help="CSV column with photos to copy in (default: items have none)."),
    ] = None,
    image_dir: ImageDir = None,
    image_ext: ImageExt = None,
    column: ColumnMap = None,
    image_root: ImageRoot = None,
) -> None:
    """Bulk-add items whose embeddings are already computed.

    Shards (from `fashionlens embed`): one streaming, atomic import (every item or none;
    memory bounded by a shard); their model fingerprint must be the catalog's (a new
    catalog takes theirs), and an id already in the catalog is an error. A .npy file
    and a CSV: ids already in the catalog are skipped, so running it again resumes.
    Creates the catalog if needed.
    """
    source = vectors.expanduser()
    if source.is_dir() or source.suffix.lower() in (".parquet", ".pq"):
        if metadata is not None:
            raise FashionLensError(f"{metadata}: shards carry their metadata; give only "
                                   "the shard folder")
        _import_shards(source, catalog)
        return
    if metadata is None:
        raise FashionLensError(f"{vectors}: a .npy file needs its METADATA CSV (or give the "
                               "folder of shards `fashionlens embed` wrote)")
    _import_npy(vectors, metadata, catalog, model, id_column, image_column, image_dir,
                image_ext, column, image_root)


def _import_shards(source: Path, catalog: Path) -> None:
    from ..search.catalog import Catalog
    from ..search.shards import shard_files

    files = shard_files(source)  # a folder that is not a finished job fails here
    import pyarrow.parquet as pq

    total = sum(int(pq.ParquetFile(f).metadata.num_rows) for f in files)
    exists = (catalog / "catalog.sqlite").is_file()
    with Catalog(catalog, create=not exists) as cat, StepBar("importing", total) as bar:
        result = cat.import_shards(files, progress=lambda n: bar.advance(steps=n))
        out.print(f"imported {result['added']} items from {result['shards']} shards "
                  f"(model {result['model']}, {result['dim']}-d); the catalog now holds "
                  f"{len(cat)} items, {cat.index.kind if cat.index else 'no'} index "
                  f"({cat.path})", highlight=False)


def _import_npy(vectors: Path, metadata: Path, catalog: Path, model: str | None,
                id_column: str, image_column: str | None, image_dir: str | None,
                image_ext: str | None, column: list[str] | None,
                image_root: Path | None) -> None:
    import numpy as np

    from ..search.catalog import Catalog, records_from_csv

    try:
        array = np.load(vectors, mmap_mode="r")  # rows are read a batch at a time
    except EOFError:  # typer would print only "Aborted."
        raise FashionLensError(f"{vectors}: the file is empty or cut short; expected a .npy "
                               "file (numpy.save) with one embedding per row") from None
    except (OSError, ValueError) as exc:
        raise FashionLensError(f"{vectors}: not a readable .npy file ({exc})") from exc
    if array.ndim != 2:
        raise FashionLensError(f"{vectors}: expected a 2-d array, found shape {array.shape}")
    items = records_from_csv(metadata, image_root=image_root,
                             **_csv_options(id_column, image_column, image_dir, image_ext,
                                            column))
    if len(items) != len(array):
        raise FashionLensError(f"{metadata} has {len(items)} data rows and {vectors} "
                               f"{len(array)} vectors; they must match row for row")
    rows = np.asarray(items.rows, dtype=np.int64)
    exists = (catalog / "catalog.sqlite").is_file()
    with Catalog(catalog, create=not exists, model=model,
                 dim=None if exists or model else int(array.shape[1])) as cat:
        batch = 50_000
        batches = ((items.records[i:i + batch], np.asarray(array[rows[i:i + batch]]))
                   for i in range(0, len(rows), batch))
        with StepBar("importing", total=-(-len(rows) // batch)) as bar:
            report = cat.add_vector_batches(batches, progress=lambda _: bar.advance())
        for problem in items.problems:
            report.record(problem)
        for failure in report.failed:
            err.print(f"not added: {failure.id} ({failure.source}): {failure.error}")
        out.print(f"added {len(report.added)}, already in the catalog {len(report.existing)}, "
                  f"not added {len(report.failed)}; the catalog now holds {len(cat)} items, "
                  f"{cat.index.kind if cat.index else 'no'} index ({cat.path})")
