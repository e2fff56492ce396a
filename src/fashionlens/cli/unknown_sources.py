"""Calibration of "not a garment" with several kinds of garment photo, from a sources file.

A shop's photos come in kinds (photos taken at home, studio shots, people wearing
clothes) that a model scores differently: a threshold read off one pooled set lets the
most numerous kind hide a kind it refuses far more often. The sources file names each
kind's photos and each source of photos that are not fashion, so that the threshold can
hold every kind's false rejection within the bound and the figures say which kind and
which negative source is weak:

```yaml
# paths are relative to this file
known:                       # every kind counts as garments
  home:
    fit: lists/home-train.txt  # fitted on (the model's own training photos are fine)
    measure: {csv: ../data/clothing/labels.csv, image_column: image, image_dir: images,
              image_extension: .jpg, where: {split: validation},
              exclude: {label: [Not sure, Skip]}, group_column: sender_id}
  studio:
    fit: studio/train/
    threshold: lists/studio-a.txt  # or `measure`, split in halves by group / path
    test: lists/studio-b.txt
other:                       # not fashion, one source each
  cosmetics: {fit: lists/cosmetics-train.txt, test: lists/cosmetics-val.txt}
  scenes: {test: scenes/}   # never fitted on: measured only
```

A role is a photo, a folder, a .txt list, a list of those, or a CSV selection (`csv`,
`image_column`, optional `image_dir`, `image_extension`, `where` / `exclude`: column ->
value(s), `group_column`). `measure` photos are split by a stable hash of their group (or
path) into a threshold half and a held-out half.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError, FashionLensError
from ..inference import unknown as u

KNOWN_ROLES = ("fit", "threshold", "test", "measure")
OTHER_ROLES = ("fit", "test")
CSV_FIELDS = ("csv", "image_column", "image_dir", "image_extension", "where", "exclude",
              "group_column")


@dataclass
class Photos:
    """The photos of one role of one source, and each one's group where a CSV gave one."""

    paths: list[Path]
    groups: dict[str, str] = field(default_factory=dict)


@dataclass
class Sources:
    known: dict[str, dict[str, Photos]]  # kind -> role -> photos
    other: dict[str, dict[str, Photos]]  # source -> role -> photos
    path: Path


def read_sources(path: str | Path) -> Sources:
    """The sources file, every role's photos listed (not yet read), or a ConfigError /
    DataError naming the file and the field."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the sources file ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping with 'known' and 'other'")
    extra = sorted(set(data) - {"known", "other"})
    if extra:
        raise ConfigError(f"{path}: unknown field(s) {', '.join(map(str, extra))} (expected "
                          "'known' and 'other')")
    sections = {}
    for section, roles in (("known", KNOWN_ROLES), ("other", OTHER_ROLES)):
        entries = data.get(section)
        if not isinstance(entries, Mapping) or not entries:
            raise ConfigError(f"{path}: field '{section}' must map each source's name to "
                              "its photos")
        sections[section] = {str(name): _source(path, f"{section}.{name}", value, roles)
                             for name, value in entries.items()}
    for kind, roles in sections["known"].items():
        if "measure" in roles and ("threshold" in roles or "test" in roles):
            raise ConfigError(f"{path}: known.{kind}: give 'measure' (split in halves) or "
                              "'threshold' and 'test', not both")
        if "measure" not in roles and not ("threshold" in roles and "test" in roles):
            raise ConfigError(f"{path}: known.{kind}: needs photos it was not fitted on: "
                              "'measure', or 'threshold' and 'test'")
    if not any("fit" in r for r in sections["known"].values()):
        raise ConfigError(f"{path}: no known kind has 'fit' photos to fit the scorer on")
    if not any("fit" in r for r in sections["other"].values()):
        raise ConfigError(f"{path}: no 'other' source has 'fit' photos to fit the scorer on")
    return Sources(sections["known"], sections["other"], path)


def _source(path: Path, where: str, value: object, roles: tuple[str, ...]
            ) -> dict[str, Photos]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{path}: {where} must map roles ({', '.join(roles)}) to photos")
    bad = sorted(str(k) for k in value if k not in roles)
    if bad:
        raise ConfigError(f"{path}: {where}: unknown role(s) {', '.join(bad)} (known: "
                          f"{', '.join(roles)})")
    return {role: _photos(path, f"{where}.{role}", v) for role, v in value.items()}


def _photos(path: Path, where: str, value: object) -> Photos:
    from ..inference.photos import collect_images

    base = path.parent
    if isinstance(value, Mapping):
        return _csv_photos(path, where, value)
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise ConfigError(f"{path}: {where} must be a path, a list of paths or a CSV "
                          "selection ({csv: ..., image_column: ...})")
    found: list[Path] = []
    for item in items:
        target = Path(item).expanduser()
        try:
            found += collect_images(target if target.is_absolute() else base / target)
        except FashionLensError as exc:
            raise DataError(f"{path}: {where}: {exc}") from exc
    if not found:
        raise DataError(f"{path}: {where}: no photos")
    return Photos(found)


def _values(path: Path, where: str, value: object) -> dict[str, set[str]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: {where} must map column names to a value or a list")
    return {str(k): {str(x) for x in (v if isinstance(v, list) else [v])}
            for k, v in value.items()}


def _csv_photos(path: Path, where: str, spec: Mapping) -> Photos:
    from ..data.sources import read_csv_rows, resolve_image_path

    bad = sorted(str(k) for k in spec if k not in CSV_FIELDS)
    if bad:
        raise ConfigError(f"{path}: {where}: unknown field(s) {', '.join(bad)} (known: "
                          f"{', '.join(CSV_FIELDS)})")
    for name in ("csv", "image_column"):
        if not isinstance(spec.get(name), str) or not spec[name].strip():
            raise ConfigError(f"{path}: {where}: field '{name}' is required")
    csv_path = Path(spec["csv"]).expanduser()
    csv_path = csv_path if csv_path.is_absolute() else path.parent / csv_path
    columns, rows = read_csv_rows(csv_path)
    where_values = _values(path, f"{where}.where", spec.get("where"))
    exclude = _values(path, f"{where}.exclude", spec.get("exclude"))
    group = spec.get("group_column")
    needed = [spec["image_column"], *where_values, *exclude, *([group] if group else [])]
    missing = [c for c in needed if c not in columns]
    if missing:
        raise DataError(f"{csv_path}: no column {', '.join(repr(c) for c in missing)} "
                        f"(named in {path}: {where}; columns: {', '.join(columns)})")
    image_dir = csv_path.parent / str(spec.get("image_dir") or "")
    photos, groups = [], {}
    for row in rows:
        if any(row[c] not in v for c, v in where_values.items()):
            continue
        if any(row[c] in v for c, v in exclude.items()):
            continue
        if not row[spec["image_column"]].strip():
            continue
        photo = resolve_image_path(row[spec["image_column"]].strip(), image_dir,
                                   spec.get("image_extension"))
        photos.append(photo)
        if group and row[group].strip():
            groups[str(photo)] = row[group].strip()
    if not photos:
        raise DataError(f"{csv_path}: no row matches {path}: {where}")
    return Photos(photos, groups)


# --- calibrating ---------------------------------------------------------------------


OutputsOf = Callable[[str, Photos], u.Outputs]  # (name, photos) -> the model's outputs


def halves(outputs: u.Outputs, groups: Mapping[str, str]) -> tuple[u.Outputs, u.Outputs]:
    """A threshold half and a held-out half, by a stable hash of each photo's group (or
    its path below the photos' common folder, so a copy elsewhere splits alike)."""
    root = os.path.commonpath(outputs.paths) if outputs.paths else ""
    keys = [groups.get(p) or os.path.relpath(p, root) for p in outputs.paths]
    first, second = u.split_parts(outputs, 2, keys)
    return first, second


def gather_kinds(sources: Sources, outputs_of: OutputsOf) -> dict:
    """Every role's outputs: garments to fit on, per kind those to choose the threshold
    on and those held out, and the other photos to fit on and to measure with."""
    fit, threshold, test = [], {}, {}
    for kind, roles in sources.known.items():
        if "fit" in roles:
            fit.append(outputs_of(f"{kind}-fit", roles["fit"]))
        if "measure" in roles:
            threshold[kind], test[kind] = halves(outputs_of(f"{kind}-measure",
                                                            roles["measure"]),
                                                 roles["measure"].groups)
        else:
            threshold[kind] = outputs_of(f"{kind}-threshold", roles["threshold"])
            test[kind] = outputs_of(f"{kind}-test", roles["test"])
        for role, o in (("threshold", threshold[kind]), ("test", test[kind])):
            if not len(o):
                what = "choose the threshold on" if role == "threshold" else "measure"
                raise DataError(f"{sources.path}: known.{kind}: no readable photo to {what} "
                                "(give more)")
    out_fit = {n: outputs_of(f"{n}-fit", r["fit"]) for n, r in sources.other.items()
               if "fit" in r}
    out_test = {n: outputs_of(f"{n}-test", r["test"]) for n, r in sources.other.items()
                if "test" in r}
    sets = {"in_fit": u.concat(fit), "in_threshold": threshold, "in_test": test,
            "out_fit": out_fit, "out_test": out_test}
    check_apart(sets)
    return sets


def check_apart(sets: Mapping) -> None:
    """A photo is fashion or not, never both."""
    known = {os.path.realpath(p) for o in [sets["in_fit"], *sets["in_threshold"].values(),
                                           *sets["in_test"].values()] for p in o.paths}
    for role in ("out_fit", "out_test"):
        for name, o in sets[role].items():
            both = [p for p in o.paths if os.path.realpath(p) in known]
            if both:
                raise DataError(f"other source '{name}': {len(both)} of its photos are also "
                                f"known garment photos (e.g. {both[0]}); a photo is fashion "
                                "or not, never both")


def calibrate_kinds(sets: Mapping, head: str, method: str = "auto",
                    max_false_rejection: float = u.DEFAULT_MAX_FALSE_REJECTION
                    ) -> tuple[u.UnknownSpec, dict]:
    """Fit on the `gather_kinds` sets: every kind's threshold photos bound the threshold;
    the figures per kind and per other source (AUROC against every held-out garment) go
    into the report and `calibration`."""
    spec, report = u.fit_scorer(sets["in_fit"], sets["in_fit"], sets["out_fit"],
                                sets["in_threshold"], head, sets["in_test"],
                                sets["out_test"], method=method,
                                max_false_rejection=max_false_rejection)
    never = sorted(set(sets["out_test"]) - set(sets["out_fit"]))
    spec.calibration["other_sources"] = {
        "fitted": sorted(sets["out_fit"]), "never_fitted": never,
        "held_out_auroc": {n: v["auroc"] for n, v in
                           report["held_out"]["per_source"].items()}
        if "held_out" in report else {}}
    report["never_fitted"] = never
    return spec, report
