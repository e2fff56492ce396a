"""`fashionlens evaluate MODEL DATA`: score a saved model on another dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..evaluation.evaluate import evaluate as run_evaluation
from ..models.resolve import resolve_model
from .common import ImageDir, ImageExt, err, metrics_table, out, summary_line


def evaluate(
    model: Annotated[str, typer.Argument(help="'default', a bundled model's name, or a model "
                                              "or run folder.")],
    data: Annotated[
        Path,
        typer.Argument(help="Folder with a sub-folder per class, or a CSV file."),
    ],
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
) -> None:
    """Evaluate a model on labelled photos laid out like its training data."""
    model_dir = resolve_model(model).folder
    if split and not split_column:
        split_column = "split"
    result = run_evaluation(model_dir, data, splits=split, tta=tta, split_column=split_column,
                            image_column=image_column, target_column=target_column,
                            image_dir=image_dir, image_extension=image_ext)
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
    out.print(metrics_table(result.metrics))
    out.print(summary_line(result.metrics))
