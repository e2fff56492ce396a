"""The photos a curation command looks at, read exactly as training reads them.

`data.sources.load_labelled` is the one reader of folders and CSV exports; this adds
what curation needs on top: a stable id per photo (its path relative to the dataset's
folder), its labels as a list (one class, or the tags of a multi-label column), and the
split training would use (the CSV's split column, else the split training makes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..data.sources import DataSpec, LabelledSet, csv_columns, load_labelled, split_tags
from ..errors import DataError

log = logging.getLogger(__name__)

TRAIN, VALIDATION = "train", "validation"


@dataclass
class Photo:
    """One labelled photo: `labels` has one class (single-label) or the photo's tags."""

    id: str
    path: Path
    labels: list[str]
    split: str | None = None
    group: str | None = None


@dataclass
class CurationSet:
    """A dataset's photos with what curation reports about how it was read."""

    photos: list[Photo]
    classes: list[str]
    spec: DataSpec
    multilabel: bool
    label_column: str
    base: Path
    missing: list[Path] = field(default_factory=list)
    split_note: str = ""
    separator: str = ";"
    # Photos left out because they lie outside `base` (symlinks followed): see `confine`.
    outside: list[Path] = field(default_factory=list)

    @property
    def source(self) -> str:
        return self.spec.path


def photo_id(path: Path, base: Path) -> str:
    """The photo's path relative to the dataset's folder (absolute when outside it)."""
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def dataset_base(spec: DataSpec) -> Path:
    """The folder photo ids are relative to: a folder dataset itself, a CSV's folder."""
    path = Path(spec.path).expanduser()
    return path if path.is_dir() else path.parent


def load_curation_set(spec: DataSpec, tags_column: str | None = None, separator: str = ";",
                      splits: list[str] | None = None, seed: int = 0) -> CurationSet:
    """Read `spec` as training does; `tags_column` makes it multi-label (`separator`
    between tags); `splits` keeps only photos in those splits."""
    if not separator:
        raise DataError("--separator is empty: give the text between tags, e.g. ';'")
    if tags_column:
        if Path(spec.path).expanduser().is_dir():
            raise DataError(f"{spec.path}: --tags needs a CSV file; a folder per class is "
                            "single-label")
        columns = csv_columns(spec)
        if columns is not None and tags_column not in columns:
            raise DataError(f"{spec.path}: no column '{tags_column}' (asked for with --tags); "
                            f"columns are: {', '.join(columns)}")
        data = load_labelled(spec, task_columns=[tags_column])
        label_column = tags_column
    else:
        data = load_labelled(spec)
        label_column = spec.target_column
    base = dataset_base(spec)
    split_of, note = _splits(data, spec, seed)
    photos = []
    for sample in data.samples:
        if tags_column:
            text = (sample.values or {}).get(tags_column, "")
            labels = split_tags(text, separator)
        else:
            labels = [sample.label]
        photos.append(Photo(id=photo_id(sample.path, base), path=sample.path, labels=labels,
                            split=split_of.get(sample.path, sample.split), group=sample.group))
    if splits:
        kept = [p for p in photos if p.split in splits]
        if not kept:
            found = sorted({str(p.split) for p in photos})
            raise DataError(f"{spec.path}: no photos in split(s) {', '.join(splits)}; "
                            f"splits found: {', '.join(found)}")
        photos = kept
    classes = sorted({label for p in photos for label in p.labels})
    if not classes:
        raise DataError(f"{spec.path}: no labelled photos in column '{label_column}'")
    return CurationSet(photos=photos, classes=classes, spec=spec,
                       multilabel=bool(tags_column), label_column=label_column, base=base,
                       missing=list(data.missing), split_note=note,
                       separator=separator)


def confine(data: CurationSet, root: Path | None = None) -> CurationSet:
    """Only the photos under `root` (default: the dataset's folder), symlinks followed,
    with ids relative to it; the others go to `outside`. A CSV can name any file
    (`/etc/passwd`, `../..`) and a photo folder can hold a symlink to anywhere: what a
    review queue lists, the web app serves, so the queue keeps to one folder."""
    folder = Path(root).expanduser() if root is not None else data.base
    if not folder.is_dir():
        raise DataError(f"{folder}: the image root (--image-root) is not a folder")
    folder = folder.resolve()
    kept, outside = [], []
    for photo in data.photos:
        if photo.path.resolve().is_relative_to(folder):
            photo.id = photo_id(photo.path, folder)
            kept.append(photo)
        else:
            outside.append(photo.path)
    if not kept:
        raise DataError(f"{data.source}: none of its {len(data.photos)} photos lies under "
                        f"{folder} (symlinks followed), e.g. {outside[0]}; give the folder "
                        "that holds them with --image-root")
    data.photos, data.outside, data.base = kept, outside, folder
    data.classes = sorted({label for p in kept for label in p.labels})
    return data


def _splits(data: LabelledSet, spec: DataSpec, seed: int) -> tuple[dict[Path, str], str]:
    """Each photo's split as training would see it, and a note saying where it came from."""
    if spec.split_column:
        return {}, f"from the CSV's column '{spec.split_column}'"
    try:
        from ..data.splits import split_train_val
    except ModuleNotFoundError:  # the plain install has no scikit-learn
        return {}, ("none: the dataset has no split column, and the split training would "
                    "make needs the train extra (pip install 'fashionlens[train]')")
    train, val = split_train_val(data, spec, seed)
    split_of = {s.path: TRAIN for s in train.samples}
    split_of.update({s.path: VALIDATION for s in val.samples})
    how = f"grouped by '{spec.group_column}'" if spec.group_column else "stratified"
    return split_of, (f"the split training makes ({how}, {spec.val_fraction:.0%} validation, "
                      f"seed {seed}); the dataset has no split column")
