"""`fashionlens predict [--model M] [PHOTO_OR_FOLDER ...]`: every head's answer per photo
(top-k garment types; attributes; tags above their thresholds)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import ConfigError, FashionLensError
from ..progress import track
from .common import ModelName, RuntimeName, UnknownThreshold, err, out

NOT_A_GARMENT = "do not look like a garment we know"


def predict(
    targets: Annotated[
        list[str] | None,
        typer.Argument(show_default=False, metavar="[target]...",
                       help="Photos, folders of photos, or .txt files listing photos, as "
                            "many as wanted (default: the bundled samples)."),
    ] = None,
    model: ModelName = None,
    top_k: Annotated[int, typer.Option(min=1, help="How many classes to list per photo.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Photos per forward pass.")] = 32,
    tta: Annotated[
        bool,
        typer.Option("--tta", help="Average over test-time views (slower, often more "
                                   "accurate)."),
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Tag models: keep tags scoring at least this "
                                            "(instead of each tag's tuned threshold)."),
    ] = None,
    unknown_threshold: UnknownThreshold = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per photo.")] = False,
    runtime: RuntimeName = "auto",
    task: Annotated[
        list[str] | None,
        typer.Option(help="Only this task's answer (repeatable), in the table and in JSON's "
                          "`tasks`: e.g. --task type --task colour with the default model."),
    ] = None,
) -> None:
    """Predict garment type, attributes or tags of photos.

    Each answer carries `unknown_score` (0-1, higher = less like a garment the model
    knows) and `unknown` (the score at or above the model's threshold); both are null for
    a model never calibrated (`fashionlens calibrate-unknown`)."""
    from ..inference.predictor import SAMPLE_PHOTOS, Predictor

    roots = [SAMPLE_PHOTOS] if not targets else [checked_target(t) for t in targets]
    paths, names = photos_of(roots)

    def shown(path: str) -> str:
        return names.get(path, path)

    predictor = Predictor(model, threshold=threshold, runtime=runtime,
                          unknown_threshold=unknown_threshold)
    wanted = tasks_kept(task, [h.name for h in predictor.heads])
    if unknown_threshold is not None and predictor.unknown is None:
        err.print("[yellow]--unknown-threshold: this model is not calibrated for 'not a "
                  "garment' (fashionlens calibrate-unknown); unknown_score stays null[/]")
    results = track(predictor.predict_paths(paths, top_k=top_k, batch_size=batch_size, tta=tta),
                    "predicting", total=len(paths))
    single = predictor.info.single_label
    table = None
    if not as_json:
        title = f"model: {predictor.info.name or predictor.model_dir}  "
        if single:
            title += f"({len(predictor.classes)} classes)"
        else:
            title += "(" + ", ".join(wanted or [h.name for h in predictor.heads]) + ")"
        if predictor.unknown is None:
            title += "\nnot calibrated for 'not a garment': no unknown score"
        table = Table(title=title, title_justify="left")
        table.add_column("photo", overflow="fold")
        if single:
            table.add_column("prediction")
            table.add_column("probability", justify="right")
            table.add_column(f"top {top_k}", overflow="fold")
        else:  # a row per task: five attributes fit 80 columns this way
            table.add_column("task")
            table.add_column("prediction", overflow="fold")
    failed = 0
    unknown: list[str] = []  # photos that do not look like a garment the model knows
    for prediction in results:
        failed += prediction.error is not None
        if as_json:
            answer = prediction.to_dict()
            if wanted and "tasks" in answer:
                answer["tasks"] = {name: answer["tasks"][name] for name in wanted}
            print(json.dumps(answer), flush=True)
        elif prediction.error:
            table.add_row(shown(prediction.path), f"[red]error: {prediction.error}[/]",
                          *([""] * (len(table.columns) - 2)))
        elif single:
            others = ", ".join(f"{t['label']} {t['probability']:.2f}" for t in prediction.top_k)
            label = prediction.label
            if prediction.unknown:
                unknown.append(shown(prediction.path))
                label = f"[yellow]unknown[/] {prediction.unknown_score:.3f} ({label}?)"
            table.add_row(shown(prediction.path), label, f"{prediction.probability:.3f}",
                          others)
        else:
            rows = [(name, prediction.tasks[name]) for name in wanted or prediction.tasks]
            if prediction.unknown:
                unknown.append(shown(prediction.path))
                rows.insert(0, ("unknown", {"text": f"[yellow]yes[/] "
                                                    f"{prediction.unknown_score:.3f}"}))
            for number, (task, answer) in enumerate(rows):
                table.add_row(shown(prediction.path) if number == 0 else "", task,
                              answer.get("text") or answer_text(answer, top_k),
                              end_section=number == len(rows) - 1)
    if table is not None:
        out.print(table)
        if unknown:
            out.print(f"[yellow]{len(unknown)} photo(s) {NOT_A_GARMENT}[/] (unknown_score at "
                      f"or above {threshold_text(predictor.unknown_line())}"
                      f"): {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}")
    if failed:
        err.print(f"[yellow]{failed} of {len(paths)} photos could not be read[/]")
        if failed == len(paths):
            raise FashionLensError("no photo could be read")


def tasks_kept(asked: list[str] | None, tasks: list[str]) -> list[str] | None:
    """`models.info.chosen_tasks`, a task the model lacks named as a --task error."""
    from ..models.info import chosen_tasks

    try:
        return chosen_tasks(asked, tasks)
    except KeyError as missing:
        raise ConfigError(f"--task {missing.args[0]}: the model has no such task (its tasks: "
                          f"{', '.join(tasks)})") from None


def photos_of(roots: list[Path]) -> tuple[list[Path], dict[str, str]]:
    """Every photo of every target once, in the order given, and how the table names
    each: relative to the folder given, or to the folder that holds every photo of a
    list (Dress/dress-3.jpg); a photo named directly as it was typed. JSON keeps the
    paths as they were read."""
    from ..inference.photos import collect_images

    paths: list[Path] = []
    names: dict[str, str] = {}
    seen: set[Path] = set()
    for root in roots:
        found = collect_images(root)
        base = root if root.is_dir() else None
        if root.suffix.lower() == ".txt" and len(found) > 1:
            base = Path(os.path.commonpath([p.parent.resolve() for p in found]))
        for path in found:
            key = path.resolve()
            if key in seen:  # a photo named twice (a folder and a photo in it) is read once
                continue
            seen.add(key)
            paths.append(path)
            names[str(path)] = (str(path) if base is None
                                else str(path.relative_to(root) if base is root
                                         else key.relative_to(base)))
    return paths, names


def checked_target(target: str) -> Path:
    """The photo, folder or list named on the command line, refused when it is empty
    (Path("") is the working directory) or not a regular file or folder (a pipe given
    as a list would be waited on for ever)."""
    if not target.strip():
        raise FashionLensError("the photo argument is empty: give a photo, a folder of photos "
                               "or a .txt file listing photos (or nothing, for the bundled "
                               "samples)")
    path = Path(target).expanduser()
    refuse_special(path)
    return path


def refuse_special(path: Path) -> None:
    """A clear error for a pipe, socket or device where a photo, folder or list belongs."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: said where it is read
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise FashionLensError(f"{path}: not a regular file or folder (a pipe, socket or "
                               f"device); give a photo, a folder of photos or a .txt file "
                               f"listing photos")


def threshold_text(value: float) -> str:
    """A threshold as it is applied, with every digit it has (0.975371, not 0.975: a
    photo scoring 0.975 is below it)."""
    return f"{value:.15g}"


def answer_text(answer: dict, top_k: int) -> str:
    """One task's answer in a table cell: 'Tshirts 0.93 (Tops 0.04, ...)' or the tags."""
    if "tags" in answer:
        return ", ".join(f"{t['label']} {t['probability']:.2f}" for t in answer["tags"]) or \
            "(no tag above its threshold)"
    others = ", ".join(f"{t['label']} {t['probability']:.2f}" for t in answer["top_k"][1:top_k])
    return f"{answer['label']} {answer['probability']:.2f}" + (f" ({others})" if others else "")
