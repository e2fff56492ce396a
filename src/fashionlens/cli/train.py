"""`fashionlens train`: fine-tune a classifier from a config file and/or flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..config import load_config
from ..training.run import train as run_training
from .common import err, metrics_table, out, summary_line


def train(
    config: Annotated[Path | None, typer.Argument(help="YAML run config (optional).")] = None,
    data: Annotated[
        str | None,
        typer.Option(help="Folder with a sub-folder per class, or a CSV file."),
    ] = None,
    image_column: Annotated[
        str | None,
        typer.Option(help="CSV column with image paths or ids."),
    ] = None,
    target_column: Annotated[
        str | None,
        typer.Option(help="CSV column with the class label."),
    ] = None,
    split_column: Annotated[
        str | None,
        typer.Option(help="CSV column saying train/validation."),
    ] = None,
    group_column: Annotated[
        str | None,
        typer.Option(help="Keep each group (e.g. sender_id) on one side of the split."),
    ] = None,
    image_dir: Annotated[
        str | None,
        typer.Option(help="Folder the image column is relative to (relative to the CSV)."),
    ] = None,
    image_ext: Annotated[
        str | None,
        typer.Option(help="Extension added to image ids, e.g. .jpg"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Backbone: efficientnet_lite0, efficientnet_lite2 or any timm name."),
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(help="embedded | timm | none | path to a checkpoint file."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Fine-tuning epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Photos per step.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate of the classifier.")] = None,
    output: Annotated[str | None, typer.Option(help="Folder for runs.")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (a sub-folder of --output).")] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Random seed; a seeded run is reproducible."),
    ] = None,
    override: Annotated[
        list[str] | None,
        typer.Option("--set", "-o", help="Any config field, e.g. -o train.tta=true"),
    ] = None,
) -> None:
    """Train a garment classifier on your labelled photos."""
    flags = {
        "data.path": data, "data.image_column": image_column, "data.target_column": target_column,
        "data.split_column": split_column, "data.group_column": group_column,
        "data.image_dir": image_dir, "data.image_extension": image_ext, "model.name": model,
        "model.pretrained": pretrained, "train.epochs": epochs, "train.batch_size": batch_size,
        "train.lr": lr, "output.dir": output, "output.name": name, "seed": seed,
    }
    values: dict = {}
    for key, value in flags.items():
        if value is None:
            continue
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    cfg = load_config(config, overrides=list(override or []), values=values)
    result = run_training(cfg)
    if result.skipped:
        err.print(f"[yellow]{len(result.skipped)} unreadable photos were skipped; "
                  f"see {result.output_dir / 'skipped.txt'}[/]")
    if result.metrics:
        out.print(metrics_table(result.metrics, "Validation"))
        out.print(summary_line(result.metrics))
    out.print(f"best epoch {result.fit.best_epoch}, {result.fit.seconds / 60:.1f} min")
    out.print(f"model:   {result.model_dir}")
    out.print(f"reports: {result.output_dir} "
              "(metrics.json, confusion.png, curves.png, config.yaml)")
