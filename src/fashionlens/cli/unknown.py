"""`fashionlens calibrate-unknown MODEL --in GARMENTS --out OTHERS`: fit the model's "not a
garment" scorer and threshold (`inference.unknown`) and store them in its model.json.

The garment photos given are split by a stable hash of their paths: half fit the scorer
(class prototypes and the logistic weights, against half of each `--out` source), a
quarter choose the threshold (photos the fit never saw), a quarter measure it with the
other half of each `--out` source. `--test-in` / `--test-out` give a held-out mix of
their own instead (e.g. other photographers, other kinds of photos).

`--sources FILE` names several kinds of garment photo (home photos, studio shots, people)
and several sources of other photos in one YAML file (`cli.unknown_sources`): each kind
keeps its own false rejection within the bound, and the figures per kind go into
`unknown.calibration.kinds`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import FashionLensError
from ..progress import StepBar
from .common import MODEL_HELP, RuntimeName, err, out

PhotoSources = Annotated[
    list[Path] | None,
    typer.Option(metavar="PATH", help="A photo, a folder of photos or a .txt list of photos "
                                      "(repeatable)."),
]


def calibrate_unknown(
    model: Annotated[str, typer.Argument(help=MODEL_HELP + "; its model.json is updated.")],
    garments: Annotated[
        list[Path] | None,
        typer.Option("--in", metavar="PATH",
                     help="Garment photos of the kinds the model knows, ideally ones it was "
                          "not trained on: a photo, a folder, a .txt list, or a CSV read "
                          "with the model's training columns, keeping rows of its classes "
                          "and splitting by its group column (repeatable)."),
    ] = None,
    others: Annotated[
        list[Path] | None,
        typer.Option("--out", metavar="PATH",
                     help="Photos that are not such garments (other objects, scenes), one "
                          "source per option: a folder or a .txt list (repeatable)."),
    ] = None,
    sources_file: Annotated[
        Path | None,
        typer.Option("--sources", metavar="FILE",
                     help="A YAML file naming several kinds of garment photo (e.g. home "
                          "photos, studio shots, people) and several sources of other "
                          "photos, instead of --in/--out: the threshold keeps every kind's "
                          "false rejection within the bound (see "
                          "fashionlens.cli.unknown_sources)."),
    ] = None,
    test_in: Annotated[list[Path] | None, typer.Option("--test-in", metavar="PATH",
                                                       help="Held-out garment photos "
                                                            "(repeatable).")] = None,
    test_out: Annotated[list[Path] | None, typer.Option("--test-out", metavar="PATH",
                                                        help="Held-out other photos, one "
                                                             "source per option "
                                                             "(repeatable).")] = None,
    in_split: Annotated[list[str] | None, typer.Option("--in-split", metavar="NAME",
                                                       help="With a CSV --in: only rows of "
                                                            "this split (repeatable).")] = None,
    method: Annotated[str, typer.Option(help="auto (compare them all, keep the best on "
                                             "photos the fit did not see), msp, entropy, "
                                             "prototype, mahalanobis, combined or head "
                                             "(a logistic rejection head on the search "
                                             "vector).")] = "auto",
    max_false_rejection: Annotated[
        float, typer.Option(min=0.0, max=0.5, help="Share of garment photos the threshold "
                                                   "may refuse (on photos not fitted on).")
    ] = 0.02,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Measure, but leave model.json "
                                                            "as it is.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Photos per forward pass.")] = 32,
    runtime: RuntimeName = "auto",
) -> None:
    """Calibrate "not a garment" rejection: unknown_score and its threshold."""
    from ..inference import unknown as u
    from ..inference.loading import load_runtime

    if sources_file is not None and (garments or others or test_in or test_out or in_split):
        raise FashionLensError("--sources names every photo: leave out --in, --out, "
                               "--test-in, --test-out and --in-split")
    if sources_file is None and not (garments and others):
        raise FashionLensError("give --in and --out (garment and other photos), or "
                               "--sources FILE")
    rt = load_runtime(model, runtime)
    if rt.folder is None:
        raise FashionLensError(f"{model}: not a model folder; calibration writes model.json")
    head = u.scored_head(rt.info)
    if sources_file is not None:
        _calibrate_kinds(rt, head, sources_file, method, max_false_rejection, dry_run, as_json,
                         batch_size)
        return

    def outputs(paths: list[Path], what: str, keys: dict[str, str] | None = None
                ) -> u.Outputs:
        photos = [p for path in paths for p in _photos(path, rt.info, in_split, keys)]
        if not photos:
            raise FashionLensError(f"no {what} photos in {', '.join(map(str, paths))}")
        with StepBar(f"scoring {what} photos", len(photos)) as bar:
            result, failed = u.collect_outputs(rt, photos, head, batch_size,
                                               progress=lambda n: bar.advance(steps=n))
        if failed:
            err.print(f"[yellow]{len(failed)} {what} photo(s) could not be read, e.g. "
                      f"{failed[0]}[/]")
        return result

    groups: dict[str, str] = {}  # photo -> its group (a CSV's group column), for the split
    inside = outputs(garments, "garment", groups)
    sources = {str(path): outputs([path], "other") for path in others}
    _check_apart(inside, sources, "--out")
    # Photos without a group are split by their path below the photos' common folder, so
    # a copy of the same data elsewhere is split the same way.
    root = os.path.commonpath(inside.paths) if inside.paths else ""
    keys = [groups.get(p) or os.path.relpath(p, root) for p in inside.paths]
    parts = u.split_parts(inside, 4, keys)
    # fitted on, threshold from, held out: each needs photos
    roles = [parts[:2], parts[2:]] if test_in else [parts[:2], parts[2:3], parts[3:]]
    if not all(sum(len(p) for p in role) for role in roles):
        raise FashionLensError(f"too few garment photos ({len(inside)} read, split by "
                               "group or path) to fit on some, set the threshold on others "
                               "and hold some out: give more with --in")
    in_fit = u.concat(parts[:2])
    if test_in:
        in_threshold = u.concat(parts[2:])
        in_test = outputs(test_in, "held-out garment", {})
    else:
        in_threshold, in_test = parts[2], parts[3]
    if test_out:
        out_fit = sources
        out_test = {str(path): outputs([path], "held-out other") for path in test_out}
        _check_apart(inside, out_test, "--test-out")
    else:
        halves = {name: u.split_parts(o, 2) for name, o in sources.items()}
        out_fit = {name: h[0] for name, h in halves.items()}
        out_test = {name: h[1] for name, h in halves.items()}
        few = [f"--out {name} ({len(o)} photo{'s' * (len(o) != 1)})"
               for name, o in sources.items() if len(o) < 2]
        if not few and not sum(len(o) for o in out_fit.values()):
            few = [f"--out {', '.join(sources)}: all {sum(map(len, sources.values()))} fell "
                   "in the measuring half of the split by path"]
        if few:
            raise FashionLensError(
                f"too few other photos: {'; '.join(few)}. Half of each --out source fits "
                "the scorer and the other half measures it: give more (dozens give a "
                "threshold worth having), or held-out ones with --test-out")
    try:
        spec, report = u.fit_scorer(in_fit, in_fit, out_fit, in_threshold, head, in_test,
                                    out_test, method=method,
                                    max_false_rejection=max_false_rejection)
    except u.CalibrationError as exc:
        raise FashionLensError(str(exc)) from exc
    unmeasured = [name for name, figures in report["methods"].items()
                  if not _finite(figures.get("tune_auroc"))]
    if unmeasured:  # (a guard: the checks above leave every method a finite AUROC)
        raise FashionLensError(f"no AUROC could be measured for {', '.join(unmeasured)}: "
                               "the garment and other photos do not give two groups to "
                               "tell apart; check --in and --out")
    report["photos"] = {**spec.calibration["photos"], "garments_held_out": len(in_test)}
    if _save_and_print(rt, spec, report, dry_run, as_json):
        return
    table = Table(title=f"{rt.info.name or rt.folder}: 'not a garment' methods "
                        f"({rt.backend})", title_justify="left")
    for column in ("method", "AUROC (threshold set)", "AUROC (held out)",
                   "garments refused (held out)", "others refused (held out)"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, figures in report["methods"].items():
        table.add_row(name + (" *" if name == report["chosen"] else ""),
                      _figure(figures.get("tune_auroc")),
                      _figure(figures.get("held_out_auroc")),
                      _share(figures.get("held_out_false_rejection")),
                      _share(figures.get("held_out_rejected_other")))
    out.print(table)
    where = "kept out of" if dry_run else "written to"
    out.print(f"chosen: {report['chosen']}, threshold {spec.threshold:.4f}; {where} "
              f"{rt.folder / 'model.json'}")


def _save_and_print(rt, spec, report: dict, dry_run: bool, as_json: bool) -> bool:
    """Store the scorer (unless a dry run) and print the JSON report when asked; True when
    that JSON was the whole answer."""
    from ..inference import unknown as u

    report.update(model=str(rt.folder), runtime=rt.backend, threshold=spec.threshold,
                  saved=not dry_run)
    if not dry_run:
        u.save_spec(rt.folder, spec)
    if as_json:
        print(json.dumps(report, indent=1))
    return as_json


def _calibrate_kinds(rt, head: str, path: Path, method: str, max_false_rejection: float,
                     dry_run: bool, as_json: bool, batch_size: int) -> None:
    from ..inference import unknown as u
    from . import unknown_sources as us

    config = us.read_sources(path)

    def outputs_of(name: str, photos: us.Photos) -> u.Outputs:
        with StepBar(f"scoring {name}", len(photos.paths)) as bar:
            result, failed = u.collect_outputs(rt, photos.paths, head, batch_size,
                                               progress=lambda n: bar.advance(steps=n))
        if failed:
            err.print(f"[yellow]{name}: {len(failed)} photo(s) could not be read, e.g. "
                      f"{failed[0]}[/]")
        return result

    sets = us.gather_kinds(config, outputs_of)
    try:
        spec, report = us.calibrate_kinds(sets, head, method, max_false_rejection)
    except u.CalibrationError as exc:
        raise FashionLensError(str(exc)) from exc
    if _save_and_print(rt, spec, report, dry_run, as_json):
        return
    table = Table(title=f"{rt.info.name or rt.folder}: 'not a garment' by kind of photo "
                        f"({rt.backend}, method {report['chosen']})", title_justify="left")
    for column in ("kind", "photos held out", "AUROC (held out)", "refused (held out)",
                   "threshold it needs"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind, figures in report["kinds"].items():
        held = figures.get("held_out", {})
        table.add_row(kind, str(held.get("photos", "-")), _figure(held.get("auroc")),
                      _share(held.get("false_rejection")),
                      f"{figures['threshold_needed']:.4f}")
    out.print(table)
    sources_table = Table(title="other photos (held out)", title_justify="left")
    for column in ("source", "photos", "AUROC", "refused"):
        sources_table.add_column(column, justify="left" if column == "source" else "right")
    for name, figures in report["held_out"]["per_source"].items():
        never = " (never fitted)" if name in report["never_fitted"] else ""
        sources_table.add_row(name + never, str(figures["photos"]),
                              _figure(figures["auroc"]), _share(figures["rejected"]))
    out.print(sources_table)
    where = "kept out of" if dry_run else "written to"
    out.print(f"AUROC (held out) {_figure(report['held_out']['auroc'])}; threshold "
              f"{spec.threshold:.4f}, set by {spec.calibration['threshold_decided_by']}; "
              f"{where} {rt.folder / 'model.json'}")


def _photos(path: Path, info, splits: list[str] | None,
            groups: dict[str, str] | None) -> list[Path]:
    """The photos `path` names; a CSV is read as training read the model's data (its
    columns), keeping rows of the model's classes (and of `splits`), and notes each
    photo's group in `groups`."""
    from ..inference.photos import collect_images

    if path.suffix.lower() not in (".csv", ".tsv"):
        return collect_images(path)
    if groups is None:
        raise FashionLensError(f"{path}: other photos come as a folder, a photo or a .txt "
                               "list (a CSV is read for --in only)")
    from ..data.sources import DataSpec, load_labelled

    trained = (info.config or {}).get("data") or {}
    fields = ("image_column", "target_column", "image_dir", "image_extension",
              "split_column", "group_column")
    spec = DataSpec(**{k: v for k, v in trained.items() if k in fields}, path=str(path))
    if splits and not spec.split_column:
        spec.split_column = "split"  # the model was trained on a folder: the usual name
    samples = [s for s in load_labelled(spec).samples if s.label in set(info.classes)
               and (not splits or s.split in splits)]
    if not samples:
        raise FashionLensError(f"{path}: no row of the model's classes"
                               + (f" in split(s) {', '.join(splits)}" if splits else "")
                               + f" (column '{spec.target_column}')")
    if groups is not None:
        groups.update({str(s.path): s.group for s in samples if s.group})
    return [s.path for s in samples]


def _check_apart(inside, sources: dict, option: str) -> None:
    """A photo is a garment (--in) or not (--out), never both."""
    garments = {os.path.realpath(p) for p in inside.paths}
    for name, o in sources.items():
        both = [p for p in o.paths if os.path.realpath(p) in garments]
        if both:
            raise FashionLensError(
                f"{option} {name}: {len(both)} of its {len(o)} photos are also garment "
                f"photos given with --in (e.g. {both[0]}); a photo is either a garment the "
                "model knows or not: give other photos (other objects, scenes)")


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"
