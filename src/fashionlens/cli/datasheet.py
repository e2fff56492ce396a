"""`fashionlens datasheet DATA`: document a labelled photo set (Markdown + HTML).

The dataset options are shared with `fashionlens review`, which reads the data the
same way (and reuses the same cached measurements of each photo).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import EmbeddingModelName, ImageColumn, ImageDir, ImageExt, RuntimeName, err, out

if TYPE_CHECKING:
    from ..curation.dataset import CurationSet
    from ..curation.scan import Scan

DataArgument = Annotated[str, typer.Argument(
    metavar="DATA", help="Labelled photos: a folder with a sub-folder per class, or a CSV file "
                         "(read as `fashionlens train --data` reads it).")]
TargetColumn = Annotated[str, typer.Option(help="CSV column with the class label.")]
SplitColumn = Annotated[str | None, typer.Option(help="CSV column saying train/validation.")]
GroupColumn = Annotated[str | None, typer.Option(
    help="CSV column of who took the photo (e.g. sender_id): counted per group, and groups "
         "in both splits reported.")]
TagsColumn = Annotated[str | None, typer.Option(
    "--tags", metavar="COLUMN", help="Multi-label data: the CSV column of tags (instead of "
                                     "--target-column).")]
Separator = Annotated[str, typer.Option(help="What separates tags in the --tags column.")]
NoModel = Annotated[bool, typer.Option(
    "--no-model", help="Skip the embedding model: file checks and perceptual hashes only "
                       "(faster; no embedding duplicates, mislabels or outliers).")]


def read_data(data: str, *, image_column: str, target_column: str, split_column: str | None,
              group_column: str | None, image_dir: str | None, image_ext: str | None,
              tags: str | None, separator: str, splits: list[str] | None = None
              ) -> CurationSet:
    from ..curation.dataset import load_curation_set
    from ..data.sources import DataSpec

    spec = DataSpec(path=data, image_column=image_column, target_column=target_column,
                    split_column=split_column, group_column=group_column, image_dir=image_dir,
                    image_extension=image_ext)
    return load_curation_set(spec, tags_column=tags, separator=separator, splits=splits)


def measure_photos(data: CurationSet, model: str | None, runtime: str) -> Scan:
    """Every photo's file facts, hash and vector, with a progress bar; cached per file."""
    from ..curation.scan import scan_photos
    from ..progress import StepBar

    paths = [p.path for p in data.photos]
    with StepBar("measuring photos", len(paths)) as bar:
        state = {"done": 0}

        def progress(done: int, _total: int) -> None:
            bar.advance(steps=done - state["done"])
            state["done"] = done

        scan = scan_photos(paths, data.source, model=model, runtime=runtime,
                           progress=progress)
    if scan.cached:
        err.print(f"{scan.cached} of {len(paths)} photos measured before (cache)",
                  highlight=False)
    return scan


def datasheet(
    data: DataArgument,
    out_path: Annotated[Path, typer.Option(
        "--out", metavar="FILE.md", help="The Markdown datasheet; the HTML page goes beside "
                                         "it (FILE.html), plots in FILE-plots/.")
    ] = Path("datasheet.md"),
    title: Annotated[str | None, typer.Option(help="Dataset name in the title.")] = None,
    image_column: ImageColumn = "image",
    target_column: TargetColumn = "label",
    split_column: SplitColumn = None,
    group_column: GroupColumn = None,
    image_dir: ImageDir = None,
    image_ext: ImageExt = None,
    tags: TagsColumn = None,
    separator: Separator = ";",
    model: EmbeddingModelName = "default",
    no_model: NoModel = False,
    runtime: RuntimeName = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the measured figures as "
                                                         "JSON.")] = False,
) -> None:
    """Write a datasheet (Markdown and HTML) measuring a dataset.

    What only a person can write (motivation, collection, consent, maintenance) gets
    placeholders, and what was written there is kept when the datasheet is regenerated."""
    from ..curation.datasheet import datasheet_target, write_datasheet
    from ..curation.duplicates import find_duplicates

    out_path = datasheet_target(out_path)  # before the photos are measured
    cset = read_data(data, image_column=image_column, target_column=target_column,
                     split_column=split_column, group_column=group_column, image_dir=image_dir,
                     image_ext=image_ext, tags=tags, separator=separator)
    scan = measure_photos(cset, None if no_model else (model or "default"), runtime)
    result = write_datasheet(cset, scan, find_duplicates(scan), out_path, title)
    facts = result["facts"]
    if as_json:
        out.print_json(json.dumps({**facts, "markdown": str(result["markdown"]),
                                   "html": str(result["html"])}))
        return
    out.print(f"{facts['photos']} photos, {facts['classes']} classes, imbalance ratio "
              f"{facts['imbalance_ratio']}; {len(facts['unreadable'])} unreadable, "
              f"{facts['duplicate_groups']} duplicate groups, {facts['leaking_groups']} "
              f"straddling train and validation", highlight=False)
    if result["kept"]:
        out.print(f"kept your text in: {', '.join(result['kept'])}", highlight=False)
    out.print(f"datasheet: {result['markdown']}\npage:      {result['html']}", highlight=False,
              soft_wrap=True)
