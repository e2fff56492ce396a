"""`fashionlens evaluate --model M --data DATA` (or `evaluate MODEL DATA`): score a saved
model on another dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from .common import (
    DataOption,
    ImageDir,
    ImageExt,
    ModelName,
    RuntimeName,
    err,
    out,
    print_metrics,
)


def evaluate(
    positional: Annotated[
        list[str] | None,
        typer.Argument(metavar="[MODEL] [DATA]", show_default=False,
                       help="The older spelling of --model and --data: MODEL DATA, or one "
                            "of them when the other is given as a flag."),
    ] = None,
    model: ModelName = None,
    data: DataOption = None,
    split: Annotated[
        list[str] | None,
        typer.Option(help="Only rows whose split column has this value (repeatable)."),
    ] = None,
    split_column: Annotated[
        str | None,
        typer.Option(help="CSV column saying train/validation ('split' when --split is given)."),
    ] = None,
    image_column: Annotated[
        str | None,
        typer.Option(help="CSV column with image paths or ids (default: as in training)."),
    ] = None,
    target_column: Annotated[
        str | None,
        typer.Option(help="CSV column with the class label (default: as in training)."),
    ] = None,
    image_dir: ImageDir = None,
    image_ext: ImageExt = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average predictions over test-time views."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
    runtime: RuntimeName = "auto",
    task: Annotated[
        str | None,
        typer.Option(help="Score this one classification task of a model with several "
                         "against one label per photo (a folder's class, or "
                         "--target-column): e.g. --task type for the default model on a "
                         "folder of garment types."),
    ] = None,
) -> None:
    """Evaluate a model on labelled photos laid out like its training data."""
    from ..data.sources import extension_problem
    from ..errors import DataError
    from ..models.info import read_info
    from ..models.resolve import resolve_model

    model, data, model_flag = _model_and_data(list(positional or []), model, data)
    model_dir = resolve_model(model, flag=model_flag).folder
    # What can be checked without torch is checked before it loads (seconds): the model's
    # description, the data path, the extension.
    read_info(model_dir)
    if not data.expanduser().exists():
        raise DataError(f"{data}: no such file or folder (--data)")
    problem = extension_problem(image_ext)
    if problem:
        raise ConfigError(f"--image-ext: {problem}")
    if split and not split_column:
        split_column = "split"

    from ..evaluation.evaluate import evaluate as run_evaluation

    result = run_evaluation(model_dir, data, splits=split, tta=tta, split_column=split_column,
                            image_column=image_column, target_column=target_column,
                            image_dir=image_dir, image_extension=image_ext, runtime=runtime,
                            task=task)
    if as_json:
        out.print_json(json.dumps(result.to_dict()))
        return
    if result.skipped:
        err.print(f"[yellow]{len(result.skipped)} unreadable photos skipped:[/] "
                  + ", ".join(list(result.skipped)[:5]))
    if result.unknown_labels:
        err.print(f"[yellow]not scored (labels unknown to the model):[/] {result.unknown_labels}")
    # The title is a line of its own: as a table title it would wrap at the table's width.
    out.print(f"{result.name or model_dir} on {data} ({result.precision})", highlight=False)
    print_metrics(result.metrics)


def _model_and_data(positional: list[str], model: str | None,
                    data: str | None) -> tuple[str, Path, str]:
    """Sort `evaluate MODEL DATA` (kept for old scripts) and --model/--data out.

    Returns the model, the data and how the user named the model (for resolver errors).
    """
    wanted = [name for name, given in (("MODEL", model), ("DATA", data)) if given is None]
    if len(positional) > len(wanted):
        extra = " ".join(positional[len(wanted):])
        raise ConfigError(f"unexpected argument(s) {extra}: MODEL and DATA are given "
                          "once each, as arguments or as --model/--data")
    if wanted == ["MODEL", "DATA"] and len(positional) == 1:
        raise ConfigError(f"missing DATA: evaluate MODEL DATA, or --data {positional[0]} "
                          "(with the default model)")
    named = dict(zip(wanted, positional, strict=False))
    if data is None and "DATA" not in named:
        raise ConfigError("missing --data: the labelled photos to evaluate on")
    flag = "MODEL" if "MODEL" in named else "--model"
    return model or named.get("MODEL", "default"), Path(data or named["DATA"]), flag
