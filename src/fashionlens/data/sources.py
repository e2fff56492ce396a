"""Labelled photo collections in the two layouts users have.

A folder with one sub-folder per class, or a CSV export with an image column (a path,
or an id resolved against an image folder) and a target column. Both become a
`LabelledSet`: a list of `Sample`s plus the sorted class names.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError, shorten
from .images import is_image_file


@dataclass(frozen=True)
class Sample:
    """One photo. `label` is the class of a one-task source (and what splits stratify
    by); `values` holds the raw cells of the columns that tasks read."""

    path: Path
    label: str
    group: str | None = None
    split: str | None = None
    values: Mapping[str, str] | None = field(default=None, compare=False, hash=False)


@dataclass
class LabelledSet:
    samples: list[Sample]
    classes: list[str]
    source: str
    missing: list[Path] = field(default_factory=list)

    @property
    def class_to_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def counts(self) -> Counter[str]:
        return Counter(s.label for s in self.samples)

    def subset(self, samples: list[Sample]) -> LabelledSet:
        return LabelledSet(samples=samples, classes=self.classes, source=self.source)


@dataclass
class DataSpec:
    """Where a dataset lives and how to read it; the `data:` section of a run config."""

    path: str = ""
    image_column: str = "image"
    target_column: str = "label"
    split_column: str | None = None
    group_column: str | None = None
    image_dir: str | None = None
    image_extension: str | None = None
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    val_splits: list[str] = field(default_factory=lambda: ["validation"])
    exclude_labels: list[str] = field(default_factory=list)
    val_fraction: float = 0.15


FOLDER_COLUMN = "label"  # what a folder-per-class tree's class is called, as a column


def load_folder(root: Path, exclude_labels: list[str] | None = None) -> LabelledSet:
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    excluded = set(exclude_labels or [])
    samples: list[Sample] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if class_dir.name in excluded:
            continue
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and is_image_file(path):
                samples.append(Sample(path=path, label=class_dir.name,
                                      values={FOLDER_COLUMN: class_dir.name}))
    if not samples:
        raise DataError(
            f"{root}: no images found; expected one sub-folder per class holding "
            f"image files ({', '.join(e.lstrip('.') for e in ('.jpg', '.png', '.webp'))}, ...)"
        )
    classes = sorted({s.label for s in samples})
    return LabelledSet(samples=samples, classes=classes, source=str(root))


# An extension added to image ids: a plain suffix ('.jpg', 'png'), never a path.
EXTENSION = re.compile(r"\.?[A-Za-z0-9][A-Za-z0-9_-]{0,9}")


def extension_problem(extension: str | None) -> str | None:
    """Why `extension` cannot be added to image ids (None when it can)."""
    if extension and not EXTENSION.fullmatch(extension):
        return (f"'{shorten(extension, 40)}' is not a file extension; give a plain suffix "
                "such as .jpg")
    return None


def resolve_image_path(value: str, base: Path, extension: str | None) -> Path:
    problem = extension_problem(extension)
    if problem:
        raise DataError(f"image extension {problem}")
    path = Path(value)
    if extension and not path.suffix:
        suffix = extension if extension.startswith(".") else f".{extension}"
        path = path.with_name(path.name + suffix)
    return path if path.is_absolute() else base / path


def split_tags(cell: str, separator: str) -> list[str]:
    """A multi-label cell's tags (`a; b;a` -> `['a', 'b']`): what training learns and
    curation reviews."""
    return sorted({t.strip() for t in cell.split(separator) if t.strip()})


def read_csv_rows(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a UTF-8 CSV (or .tsv) export, or a DataError naming the file."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: file not found")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            delimiter = "\t" if csv_path.suffix.lower() == ".tsv" else ","
            reader = csv.DictReader(fh, delimiter=delimiter)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot be read as a UTF-8 CSV file ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{csv_path}: cannot be read ({exc.strerror})") from None
    if not columns:
        raise DataError(f"{csv_path}: empty file, no header row")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:  # csv.DictReader would silently keep the last one's cells
        raise DataError(f"{csv_path}: the header names column "
                        + " and ".join(f"'{c}'" for c in repeated)
                        + " more than once; rename or remove the duplicate")
    return columns, rows


def load_csv(csv_path: Path, spec: DataSpec, task_columns: Sequence[str] | None = None,
             label_column: str | None = None) -> LabelledSet:
    """Rows with a label in `spec.target_column`; or, with `task_columns` (multi-task),
    rows with a value in any of them, `label` read from `label_column` ('' without)."""
    columns, rows = read_csv_rows(csv_path)
    wanted = {
        "image_column": spec.image_column,
        "target_column": spec.target_column if task_columns is None else None,
        "split_column": spec.split_column,
        "group_column": spec.group_column,
    }
    for field_name, column in wanted.items():
        if column and column not in columns:
            raise DataError(
                f"{csv_path}: no column '{column}' (asked for as {field_name}); "
                f"columns are: {', '.join(columns)}"
            )
    base = csv_path.parent / spec.image_dir if spec.image_dir else csv_path.parent
    excluded = set(spec.exclude_labels)
    samples: list[Sample] = []
    missing: list[Path] = []
    for line_no, row in enumerate(rows, start=2):
        image_value = (row.get(spec.image_column) or "").strip()
        if task_columns is None:
            label = (row.get(spec.target_column) or "").strip()
            values = {spec.target_column: label}
        else:
            values = {c: (row.get(c) or "").strip() for c in task_columns}
            label = values.get(label_column, "") if label_column else ""
            if not any(values.values()):
                continue
        if not image_value:
            raise DataError(
                f"{csv_path}, line {line_no}: empty value in column '{spec.image_column}'")
        if (task_columns is None and not label) or (label and label in excluded):
            continue
        path = resolve_image_path(image_value, base, spec.image_extension)
        if not path.is_file():
            missing.append(path)
            continue
        samples.append(
            Sample(
                path=path,
                label=label,
                group=((row.get(spec.group_column) or "").strip() or None
                       if spec.group_column else None),
                split=((row.get(spec.split_column) or "").strip() or None
                       if spec.split_column else None),
                values=values,
            )
        )
    if not samples:
        detail = f" ({len(missing)} listed files are missing, e.g. {missing[0]})" if missing else ""
        if task_columns is not None and not missing:
            raise DataError(f"{csv_path}: every row is empty in the task columns "
                            f"({', '.join(task_columns)})")
        raise DataError(f"{csv_path}: no usable labelled rows{detail}")
    classes = sorted({s.label for s in samples})
    return LabelledSet(samples=samples, classes=classes, source=str(csv_path), missing=missing)


def csv_columns(spec: DataSpec) -> list[str] | None:
    """The header of a CSV source (None for a folder), to check task columns early."""
    path = Path(spec.path).expanduser()
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return read_csv_rows(path)[0]
    return None


def load_labelled(spec: DataSpec, task_columns: Sequence[str] | None = None,
                  label_column: str | None = None) -> LabelledSet:
    """Load a folder-per-class tree or a CSV export, as `spec.path` says."""
    if not spec.path:
        raise DataError("no dataset given: set data.path to a folder or a CSV file")
    path = Path(spec.path).expanduser()
    if path.is_dir():
        return load_folder(path, spec.exclude_labels)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return load_csv(path, spec, task_columns, label_column)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: expected a folder with one sub-folder per class, or a .csv file")
