"""`fashionlens review DATA`: write a review queue; `fashionlens review apply QUEUE`:
write the cleaned CSV the decisions make.

A person decides on the queue in the web app (`fashionlens serve --review QUEUE`);
decisions go to `QUEUE.decisions.json`. The photos and the original CSV are only read.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import ConfigError
from .common import (
    EmbeddingModelName,
    ImageColumn,
    ImageDir,
    ImageExt,
    RuntimeName,
    UnknownThreshold,
    err,
    out,
)
from .datasheet import (
    GroupColumn,
    NoModel,
    Separator,
    SplitColumn,
    TagsColumn,
    TargetColumn,
    measure_photos,
    read_data,
)

APPLY = "apply"


def review(
    data: Annotated[str, typer.Argument(
        metavar="DATA|apply", help="Labelled photos (a folder per class or a CSV file) to "
                                   "review; or 'apply' followed by a queue file.")],
    queue_file: Annotated[Path | None, typer.Argument(
        metavar="[QUEUE]", help="With 'apply': the review queue whose decisions to apply.")
    ] = None,
    out_path: Annotated[Path | None, typer.Option(
        "--out", metavar="FILE", help="Where to write: the queue (default review-queue.json), "
                                      "or with 'apply' the cleaned CSV (default "
                                      "QUEUE.cleaned.csv).")] = None,
    split: Annotated[list[str] | None, typer.Option(
        metavar="NAME", help="Review only photos in this split (repeatable), e.g. train; "
                             "duplicates across splits are then not seen.")] = None,
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
    seed: Annotated[int, typer.Option(help="Seed of the probe's folds.")] = 0,
    unknown_threshold: UnknownThreshold = None,
    image_root: Annotated[Path | None, typer.Option(
        metavar="DIR", help="The folder the photos lie under (symlinks followed); default: "
                            "the dataset's folder (a CSV's folder). Photos outside it are "
                            "not reviewed: the Review page serves only files under it.")
    ] = None,
) -> None:
    """List the photos a person should look at, each saying why and how sure.

    Flagged: likely mislabels, duplicates and leakage, off-topic photos (not a garment),
    outliers, unreadable files.

    Then: fashionlens serve --review QUEUE (decide with the keyboard), and
    fashionlens review apply QUEUE --out cleaned.csv (a CSV that trains).
    """
    if data == APPLY and not Path(data).exists():
        if queue_file is None:
            raise ConfigError("review apply needs the queue file: fashionlens review apply "
                              "QUEUE.json [--out cleaned.csv]")
        _apply(queue_file, out_path)
        return
    if queue_file is not None:
        raise ConfigError(f"unexpected argument '{queue_file}': review takes one dataset "
                          "(or 'apply QUEUE')")
    from ..atomic import write_json_atomic
    from ..curation.dataset import confine
    from ..curation.review import build_queue

    target = (out_path or Path("review-queue.json")).expanduser()
    _check_queue_target(target, Path(data).expanduser())
    cset = read_data(data, image_column=image_column, target_column=target_column,
                     split_column=split_column, group_column=group_column, image_dir=image_dir,
                     image_ext=image_ext, tags=tags, separator=separator, splits=split)
    cset = confine(cset, image_root)
    if cset.outside:
        err.print(f"[yellow]{len(cset.outside)} photos not reviewed: outside "
                  f"{escape(str(cset.base))} (symlinks followed), e.g. "
                  f"{escape(str(cset.outside[0]))}; --image-root DIR names the folder that "
                  "holds them[/]", highlight=False)
    scan = measure_photos(cset, None if no_model else (model or "default"), runtime)
    result = build_queue(cset, scan, seed=seed, unknown_threshold=unknown_threshold,
                         progress=lambda step: err.print(f"checking {step}", highlight=False))
    write_json_atomic(target, result.queue)
    counts = result.queue["counts"]
    out.print(f"{len(result.queue['entries'])} photos to review of {len(cset.photos)}: "
              + ", ".join(f"{n} {reason}" for reason, n in counts.items()), highlight=False)
    for note in result.queue["notes"]:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    out.print(f"queue: {target}\nreview it: fashionlens serve --review {target}",
              highlight=False, soft_wrap=True)


def _check_queue_target(target: Path, data: Path) -> None:
    """Refuse to write the queue over the dataset or over any existing file that is not a
    review queue (a photo, someone's notes): only an earlier queue is replaced."""
    from ..curation.datasheet import check_output
    from ..curation.review import read_queue
    from ..errors import DataError

    if target.exists() and data.exists() and target.resolve() == data.resolve():
        raise ConfigError(f"--out {target}: is the dataset being reviewed; write the queue "
                          "to another file, e.g. --out review-queue.json")
    if target.is_dir():
        raise ConfigError(f"--out {target}: is a folder; give the queue's file name, e.g. "
                          f"--out {target / 'review-queue.json'}")
    if target.exists():
        try:
            read_queue(target)
        except DataError as exc:
            raise ConfigError(f"--out {target}: exists and is not a review queue this tool "
                              "wrote, so it is not replaced; choose another file") from exc
    check_output(target, "the review queue")


def _apply(queue_file: Path, out_path: Path | None) -> None:
    from ..curation.decisions import apply_decisions, decisions_path, read_decisions
    from ..curation.review import read_queue

    queue = read_queue(queue_file)
    decided = read_decisions(decisions_path(queue_file), queue)
    target = out_path or queue_file.with_name(queue_file.stem + ".cleaned.csv")
    counts = apply_decisions(queue, decided, target)
    actions = Counter(d["action"] for d in decided.values())
    done = ", ".join(f"{n} {a}" for a, n in actions.items()) or "none"
    out.print(f"{len(decided)} decisions ({done}) on {len(queue['entries'])} queued photos; "
              f"{counts['rows']} rows in, {counts['kept']} written ({counts['relabelled']} "
              f"relabelled), {counts['dropped']} dropped", highlight=False)
    flags = _train_flags(queue, target)
    out.print(f"cleaned CSV: {target}\ntrain on it: fashionlens train {flags}",
              highlight=False, soft_wrap=True)


def _train_flags(queue: dict, target: Path) -> str:
    """The `train` flags that read the cleaned CSV as the original was read."""
    spec = queue["dataset"]
    source = Path(spec["path"])
    parts = [f"--data {target}"]
    if source.is_dir():
        return " ".join(parts)
    beside = target.expanduser().resolve().parent == source.resolve().parent
    flags = [("image_column", "--image-column"), ("split_column", "--split-column"),
             ("group_column", "--group-column")]
    if beside:  # image paths kept as they were; elsewhere they are written absolute
        flags += [("image_dir", "--image-dir"), ("image_extension", "--image-ext")]
    for key, flag in flags:
        value = spec.get(key)
        if value and not (key == "image_column" and value == "image"):
            parts.append(f"{flag} {value}")
    if not queue.get("multilabel") and spec.get("target_column") not in (None, "label"):
        parts.append(f"--target-column {spec['target_column']}")
    return " ".join(parts)
