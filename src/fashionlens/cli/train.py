"""`fashionlens train`: fine-tune a classifier from a config file and/or flags."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from .common import (
    DataOption,
    ImageDir,
    ImageExt,
    Overrides,
    err,
    load_run_config,
    out,
    print_metrics,
)

# Config field -> the flag that sets it, so an error names what the user typed.
FLAGS = {
    "data.path": "--data", "data.image_column": "--image-column",
    "data.target_column": "--target-column", "data.split_column": "--split-column",
    "data.group_column": "--group-column", "data.image_dir": "--image-dir",
    "data.image_extension": "--image-ext", "model.name": "--model",
    "model.pretrained": "--pretrained", "train.epochs": "--epochs",
    "train.batch_size": "--batch-size", "train.lr": "--lr", "output.dir": "--output",
    "output.name": "--name", "output.exist_ok": "--exist-ok", "seed": "--seed",
}


def train(
    config: Annotated[Path | None, typer.Argument(help="YAML run config (optional).")] = None,
    data: DataOption = None,
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
    image_dir: ImageDir = None,
    image_ext: ImageExt = None,
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
    name: Annotated[
        str | None,
        typer.Option(help="Run name, a sub-folder of --output; if taken, NAME-2, NAME-3, ..."),
    ] = None,
    exist_ok: Annotated[
        bool,
        typer.Option("--exist-ok", help="Write into the --name folder even if a run is there "
                                        "(its old outputs are replaced)."),
    ] = False,
    seed: Annotated[
        int | None,
        typer.Option(help="Random seed; a seeded run is reproducible."),
    ] = None,
    override: Overrides = None,
    resume: Annotated[
        Path | None,
        typer.Option(metavar="RUN", help="Continue an interrupted run from its last epoch "
                                         "(its folder; the run's own config is used)."),
    ] = None,
    nproc: Annotated[
        int | None,
        typer.Option(metavar="N", help="Train with N processes on this machine, one per GPU "
                                       "(re-runs this command under torchrun; --batch-size "
                                       "stays the global batch)."),
    ] = None,
) -> None:
    """Train a classifier, attribute tagger or tag model on your labelled photos.

    Several GPUs: --nproc N, or torchrun --nproc_per_node=N -m fashionlens.cli.main train.
    """
    from ..training.inputs import read_run_data, resume_config

    given = {
        "data.path": data, "data.image_column": image_column, "data.target_column": target_column,
        "data.split_column": split_column, "data.group_column": group_column,
        "data.image_dir": image_dir, "data.image_extension": image_ext, "model.name": model,
        "model.pretrained": pretrained, "train.epochs": epochs, "train.batch_size": batch_size,
        "train.lr": lr, "output.dir": output, "output.name": name,
        "output.exist_ok": exist_ok or None, "seed": seed,
    }
    if resume is not None:
        mixed = [flag for key, flag in FLAGS.items() if given.get(key) is not None]
        if config is not None or override or mixed:
            raise ConfigError("--resume continues a run with its own config.yaml; give no "
                              "config file, -o or other training flags with it"
                              + (f" (got {', '.join(mixed)})" if mixed else ""))
        run_config = resume_config(resume)
    else:
        run_config = load_run_config(config, override, given, FLAGS)
    # The data is read and checked before torch loads (seconds): a wrong path, a missing
    # column or photos that are not there are answered at once.
    read_run_data(run_config)

    from ..training.distributed import is_main_process, relaunch
    from ..training.run import train as run_training

    relaunch(nproc)
    result = run_training(run_config, resume=resume)
    if not is_main_process():
        return
    if result.skipped:
        err.print(f"[yellow]{len(result.skipped)} unreadable photos were skipped; "
                  f"see {result.output_dir / 'skipped.txt'}[/]")
    if result.metrics:
        print_metrics(result.metrics, "Validation")
    fit = result.fit
    out.print(f"kept {'the ' if fit.kept_probe else ''}{fit.kept}; "
              f"{fit.seconds / 60:.1f} min in {fit.precision}")
    if result.note:
        out.print(f"[yellow]note:[/] {result.note}", highlight=False)
    out.print(f"run folder: {result.output_dir}", highlight=False, soft_wrap=True)
    out.print(f"model:      {result.model_dir}", highlight=False, soft_wrap=True)
    reports = [n for n in ("metrics.json", "curves.png", "confusion.png", "config.yaml",
                           "validation.txt", "skipped.txt") if (result.output_dir / n).exists()]
    out.print(f"reports:    {', '.join(reports)}", highlight=False, soft_wrap=True)
    if (result.output_dir / "validation.txt").exists():
        out.print(f"photos it did not train on: fashionlens predict --model {result.model_dir} "
                  f"{result.output_dir / 'validation.txt'}", highlight=False, soft_wrap=True)
