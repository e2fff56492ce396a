"""Reading items from where shops keep them: a CSV export, a folder of photos (one
sub-folder per category), or one photo."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.images import is_image_file
from ..data.sources import read_csv_rows, resolve_image_path
from ..errors import DataError
from .filters import ALIASES
from .records import (
    METADATA_FIELDS,
    AddOutcome,
    ItemRecord,
    apply_field,
    check_status,
    check_under_root,
    image_root_folder,
    parse_price,
    utf8_text,
)


@dataclass
class SourceItems:
    """Records read from a source, plus the rows that could not become records."""

    records: list[ItemRecord]
    problems: list[AddOutcome] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # each record's data row (CSV only)

    def __len__(self) -> int:
        return len(self.records) + len(self.problems)


def _column_map(columns: list[str], id_column: str, image_column: str | None,
                mapping: Mapping[str, str] | None, where: str) -> dict[str, str]:
    """CSV column -> item field, for the metadata columns (the rest go to `extra`)."""
    result: dict[str, str] = {}
    for column in columns:
        name = ALIASES.get(column.strip().lower(), column.strip().lower())
        if column not in (id_column, image_column) and name in METADATA_FIELDS:
            result[column] = name
    for field_name, column in (mapping or {}).items():
        target = ALIASES.get(field_name.strip().lower(), field_name.strip().lower())
        if target not in METADATA_FIELDS:
            raise DataError(f"{where}: cannot map a column to '{field_name}'; fields are "
                            f"{', '.join(METADATA_FIELDS)}")
        if column not in columns:
            raise DataError(f"{where}: no column '{column}' (mapped to {target}); "
                            f"columns are: {', '.join(columns)}")
        result = {c: f for c, f in result.items() if f != target}
        result[column] = target
    return result


def records_from_csv(csv_path: str | Path, *, id_column: str = "id",
                     image_column: str | None = "image", image_dir: str | None = None,
                     image_extension: str | None = None,
                     columns: Mapping[str, str] | None = None,
                     image_root: str | Path | None = None) -> SourceItems:
    """Items from a CSV export: one row per item.

    The image column holds a path, or an id resolved against `image_dir` (relative to
    the CSV) with `image_extension`, as for training data. Columns named like an item
    field (category, colour/color, size, price, status) fill it, `columns` maps others
    (`{"category": "garment_type"}`), and every other column is kept in `extra`.
    `image_column=None` reads items without photos (for `Catalog.add_vectors`).
    With `image_root`, a row whose photo resolves (symlinks followed) outside that
    folder is refused, naming the row: a CSV from elsewhere cannot copy any file of the
    host into the catalog.
    """
    csv_path = Path(csv_path).expanduser()
    root = image_root_folder(image_root)
    header, rows = read_csv_rows(csv_path)
    for what, column in (("id column", id_column), ("image column", image_column)):
        if column is not None and column not in header:
            raise DataError(f"{csv_path}: no column '{column}' (asked for as {what}); "
                            f"columns are: {', '.join(header)}")
    mapped = _column_map(header, id_column, image_column, columns, str(csv_path))
    base = csv_path.parent / image_dir if image_dir else csv_path.parent
    result = SourceItems(records=[])
    for line_no, row in enumerate(rows, start=2):
        where = f"{csv_path.name}, line {line_no}"
        item_id = (row.get(id_column) or "").strip()
        image = (row.get(image_column) or "").strip() if image_column else None
        if not item_id or image == "":
            missing = id_column if not item_id else image_column
            result.problems.append(AddOutcome(item_id or f"line {line_no}", "failed", where,
                                              f"empty value in column '{missing}'"))
            continue
        fields: dict[str, Any] = {}
        extra: dict[str, str] = {}
        try:
            for column, value in row.items():
                if column in (id_column, image_column) or column is None:
                    continue
                value = (value or "").strip() if isinstance(value, str) else value
                if column in mapped:
                    target = mapped[column]
                    if target == "price":
                        fields["price"] = parse_price(value)
                    elif target == "status":
                        fields["status"] = check_status(value)
                    else:
                        fields[target] = value or None
                elif value:
                    extra[column] = value
        except ValueError as exc:
            result.problems.append(AddOutcome(item_id, "failed", where, str(exc)))
            continue
        path = resolve_image_path(image, base, image_extension) if image else None
        if path is not None and root is not None:
            try:
                check_under_root(path, root)
            except ValueError as exc:
                result.problems.append(AddOutcome(item_id, "failed", where, f"{where}: {exc}"))
                continue
        result.records.append(ItemRecord(id=item_id, image=path, extra=extra,
                                         label=f"{where} ({path})" if path else where,
                                         **fields))
        result.rows.append(line_no - 2)
    return result


def records_from_folder(root: str | Path, image_root: str | Path | None = None
                        ) -> SourceItems:
    """Every photo under a folder; the sub-folder a photo sits in is its category.

    The id is the photo's path inside the folder without its extension (`Dress/d-12`).
    With `image_root`, photos resolving outside it (symlinks) are refused.
    """
    confine = image_root_folder(image_root)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    photos = sorted(p for p in root.rglob("*")
                    if p.is_file() and is_image_file(p)
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not photos:
        raise DataError(f"{root}: no image files in this folder")
    result = SourceItems(records=[])
    for photo in photos:
        rel = photo.relative_to(root)
        if not utf8_text(str(rel)):  # e.g. a Latin-1 name: no id or path can hold it
            shown = str(photo).encode("utf-8", "backslashreplace").decode("utf-8")
            result.problems.append(AddOutcome(
                rel.with_suffix("").as_posix().encode("utf-8", "backslashreplace").decode(),
                "failed", shown,
                "the file name is not valid UTF-8 (written in another encoding?); rename "
                "the file to add it"))
            continue
        category = rel.parts[0] if len(rel.parts) > 1 else None
        record = ItemRecord(id=rel.with_suffix("").as_posix(), image=photo,
                            category=category, label=str(photo))
        try:
            if confine is not None:
                check_under_root(photo, confine)
        except ValueError as exc:
            result.problems.append(AddOutcome(record.id, "failed", str(photo), str(exc)))
        else:
            result.records.append(record)
    return result


def read_source(source: str | Path, *, item_id: str | None = None,
                fields: Mapping[str, Any] | None = None,
                image_root: str | Path | None = None, **csv_options) -> SourceItems:
    """Records from a CSV file, a folder of photos, or one photo (id: `item_id` or its
    file name without extension; metadata: `fields`). With `image_root`, photos must
    resolve inside that folder (see `records_from_csv`)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if item_id or fields:
            raise DataError(f"{path}: --id/--set apply to a single photo, not a folder")
        return records_from_folder(path, image_root=image_root)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.suffix.lower() in (".csv", ".tsv"):
        if item_id or fields:
            raise DataError(f"{path}: --id/--set apply to a single photo, not a CSV file")
        return records_from_csv(path, image_root=image_root, **csv_options)
    if not is_image_file(path):
        raise DataError(f"{path}: expected a CSV file, a folder of photos, or a photo")
    root = image_root_folder(image_root)
    if root is not None:
        try:
            check_under_root(path, root)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    record = ItemRecord(id=item_id or path.stem, image=path, label=str(path))
    for name, value in (fields or {}).items():
        apply_field(record, name, value)
    return SourceItems(records=[record])

