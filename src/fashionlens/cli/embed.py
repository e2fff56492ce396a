"""`fashionlens train-embedding` and `fashionlens evaluate-search`: metric learning and
how well an embedding finds similar items."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from ..errors import ConfigError, FashionLensError, ModelError
from .common import (
    DataOption,
    EmbeddingModelName,
    ImageColumn,
    ImageDir,
    ImageExt,
    Overrides,
    err,
    load_run_config,
    out,
    overridden,
)

if TYPE_CHECKING:
    from ..config import MetricConfig
    from ..data.sources import DataSpec
    from ..training.metric import MetricResult

TargetColumn = Annotated[str, typer.Option(help="CSV column with the category label.")]
SplitColumn = Annotated[
    str | None, typer.Option(help="CSV column saying train/validation (else a random split)."),
]


def _spec(data, image_column, target_column, split_column, image_dir, image_ext,
          group_column=None) -> DataSpec:
    from ..data.sources import DataSpec

    return DataSpec(path=data, image_column=image_column, target_column=target_column,
                    split_column=split_column, group_column=group_column, image_dir=image_dir,
                    image_extension=image_ext)


# Config field -> the flag of train-embedding that sets it, so an error names what was typed.
EMBEDDING_FLAGS = {
    "metric.mode": "--mode", "metric.dim": "--dim", "metric.hidden": "--hidden",
    "metric.loss": "--loss", "metric.mining": "--mining", "metric.margin": "--margin",
    "metric.category_weight": "--category-weight",
    "metric.posterior_weight": "--posterior-weight", "metric.stage_taps": "--stage-taps",
    "metric.item_column": "--item-column", "metric.views": "--views",
    "metric.epochs": "--epochs", "metric.seed": "--seed", "metric.device": "--device",
    "data.path": "--data", "data.image_column": "--image-column",
    "data.target_column": "--target-column", "data.split_column": "--split-column",
    "data.image_dir": "--image-dir", "data.image_extension": "--image-ext",
    "output.dir": "--output", "output.name": "--name",
}
DEFAULT_RUN_NAME = "embedding"


def train_embedding(cfg: MetricConfig, spec: DataSpec, output: Path,
                    name: str = DEFAULT_RUN_NAME) -> MetricResult:
    """training.metric.train_embedding, imported when called: it needs torch, which
    `--help` must not load (a module-level name, so tests can replace it)."""
    from ..training.metric import train_embedding as run

    return run(cfg, spec, output, name=name)


def _config_and_data(positional: list[str], data: str | None) -> tuple[Path | None, str | None]:
    """`train-embedding [CONFIG.yaml] [DATA]`: a .yaml/.yml argument is the run config, any
    other the data (the older spelling of --data)."""
    configs = [p for p in positional if Path(p).suffix.lower() in (".yaml", ".yml")]
    others = [p for p in positional if p not in configs]
    if len(configs) > 1:
        raise ConfigError(f"one run config at most, got {', '.join(configs)}")
    if len(others) > 1 or (others and data is not None):
        given = others + ([f"--data {data}"] if data is not None else [])
        raise ConfigError(f"one data set at most, got {', '.join(given)}")
    return (Path(configs[0]) if configs else None), (data or (others[0] if others else None))


def train_embedding_command(
    positional: Annotated[
        list[str] | None,
        typer.Argument(metavar="[CONFIG.yaml] [DATA]", show_default=False,
                       help="A YAML run config (its metric:, data: and output: sections) "
                            "and/or the data (the older spelling of --data)."),
    ] = None,
    data: DataOption = None,
    model: EmbeddingModelName = None,
    base: Annotated[
        str | None,
        typer.Option("--base", metavar="NAME_OR_PATH", hidden=True,
                     help="The older spelling of --model."),
    ] = None,
    mode: Annotated[str | None, typer.Option(help="head: train the embedding head on frozen "
                                                  "features (fast, the default); full: the "
                                                  "backbone too.")] = None,
    dim: Annotated[int | None, typer.Option(help="Embedding size (default 256).")] = None,
    hidden: Annotated[int | None, typer.Option(help="Hidden units of an MLP head "
                                                    "(default 0: linear).")] = None,
    loss: Annotated[str | None, typer.Option(help="triplet (default) or supcon.")] = None,
    mining: Annotated[str | None, typer.Option(help="Triplet mining: semihard (default), "
                                                    "hard (batch-hard) or all.")] = None,
    margin: Annotated[float | None, typer.Option(help="Triplet margin (cosine; default "
                                                      "0.2).")] = None,
    category_weight: Annotated[
        float | None, typer.Option(help="Weight of the same-category term (0: items only; "
                                        "default 0.2)."),
    ] = None,
    posterior_weight: Annotated[
        float | None, typer.Option(help="Weight of the base classifier's class posterior "
                                        "appended to the search vector (0: off; default "
                                        "0.25 when the base classifies, in head mode).")
    ] = None,
    stage_taps: Annotated[
        int | None, typer.Option(help="The backbone's last N stages feed the head besides its "
                                      "pooled features (0: pooled features only; default 2).")
    ] = None,
    item_column: Annotated[
        str | None, typer.Option(help="CSV column with item ids (several photos per item); "
                                      "without it, re-shot views of each photo are the pairs."),
    ] = None,
    views: Annotated[int | None, typer.Option(help="Head mode: re-shot views per photo "
                                                   "(default 4).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 40 head, 5 full).")] = None,
    image_column: Annotated[
        str | None, typer.Option(help="CSV column with image paths or ids (default image)."),
    ] = None,
    target_column: Annotated[
        str | None, typer.Option(help="CSV column with the category label (default label)."),
    ] = None,
    split_column: SplitColumn = None,
    image_dir: ImageDir = None,
    image_ext: ImageExt = None,
    output: Annotated[str | None, typer.Option(help="Folder for runs (default runs).")] = None,
    name: Annotated[
        str | None,
        typer.Option(help=f"Run name, a sub-folder of --output (default {DEFAULT_RUN_NAME})."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    device: Annotated[str | None, typer.Option(help="auto (default), cpu or cuda.")] = None,
    override: Overrides = None,
    nproc: Annotated[
        int | None,
        typer.Option(metavar="N", help="Train with N processes on this machine, one per GPU "
                                       "(re-runs this command under torchrun)."),
    ] = None,
) -> None:
    """Train an embedding for visual search (metric learning).

    Settings: the metric: section of a YAML run config, then the flags, then -o/--set.

    The saved model both classifies (if the base did) and embeds, e.g. for `catalog build`.
    Several GPUs: --nproc N, or torchrun --nproc_per_node=N -m fashionlens.cli.main ...
    """
    from ..models.resolve import resolve_model
    from ..training.distributed import is_main_process, relaunch

    relaunch(nproc)
    if model is not None and base is not None:
        raise ConfigError("--base is the older spelling of --model: give one of them")
    model_flag = "--base" if base is not None else "--model"
    config, data = _config_and_data(list(positional or []), data)
    given = {
        "metric.base": model or base, "metric.mode": mode, "metric.dim": dim,
        "metric.hidden": hidden, "metric.loss": loss, "metric.mining": mining,
        "metric.margin": margin, "metric.category_weight": category_weight,
        "metric.posterior_weight": posterior_weight, "metric.stage_taps": stage_taps,
        "metric.item_column": item_column, "metric.views": views, "metric.epochs": epochs,
        "metric.seed": seed, "metric.device": device, "data.path": data,
        "data.image_column": image_column, "data.target_column": target_column,
        "data.split_column": split_column, "data.image_dir": image_dir,
        "data.image_extension": image_ext, "output.dir": output, "output.name": name,
    }
    run = load_run_config(config, override, given,
                          {**EMBEDDING_FLAGS, "metric.base": model_flag})
    if not run.data.path:
        raise ConfigError("no data: give --data (a folder or CSV file of labelled "
                          "photos), or data.path in the run config")
    in_file = model is None and base is None and config is not None \
        and not overridden(override, "metric.base")
    if model is None and base is None:  # from the YAML file or -o: name the field
        model_flag = "metric.base"
    # Resolve now, so a bad name is reported under what was typed, before any photo is read.
    try:
        resolve_model(run.metric.base, backbone=True, flag=model_flag)
    except ModelError as exc:
        if in_file and run.metric.base != "default":
            raise ModelError(f"{config}: {exc}") from None
        raise
    cfg, spec = run.metric, run.data
    if data is not None:  # the saved config.yaml must find the data from any folder
        spec.path = str(Path(spec.path).expanduser().resolve())
    name = run.output.name or DEFAULT_RUN_NAME
    result = train_embedding(cfg, spec, Path(run.output.dir) / name, name=name)
    if not is_main_process():
        return
    table = Table(title=f"embedding {name}: validation retrieval", title_justify="left")
    for column in ("metric", "before", "after"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    before = result.metrics["before_training"]
    for metric, value in result.metrics["validation"].items():
        table.add_row(metric, f"{before[metric]:.4f}" if metric in before else "-",
                      f"{value:.4f}")
    out.print(table)
    out.print(f"model saved to {result.model_dir}  "
              f"({result.metrics['train_minutes']:.1f} min)")


def evaluate_search_command(
    positional_data: Annotated[
        str | None,
        typer.Argument(metavar="[DATA]", show_default=False,
                       help="The older spelling of --data."),
    ] = None,
    data: DataOption = None,
    model: EmbeddingModelName = None,
    protocol: Annotated[
        list[str] | None,
        typer.Option("--protocol", help="pairs (photo vs its re-shot view, top-1/5/10) and/or "
                                        "category (precision@10 of validation photos against "
                                        "the training photos); default both."),
    ] = None,
    image_column: ImageColumn = "image",
    target_column: TargetColumn = "label",
    split_column: SplitColumn = None,
    image_dir: ImageDir = None,
    image_ext: ImageExt = None,
    seed: Annotated[int, typer.Option(help="Seed of the re-shot views and of the split.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Measure how well a model's embedding finds the same item and the same category."""
    from ..data.sources import load_labelled
    from ..data.splits import split_train_val
    from ..evaluation.retrieval import category_protocol, pairs_protocol
    from ..search.embeddings import Embedder

    if positional_data is not None and data is not None:
        raise ConfigError(f"one data set at most, got {positional_data} and --data {data}")
    data = data or positional_data
    if data is None:
        raise ConfigError("missing --data: the labelled photos to search among")
    protocols = protocol or ["pairs", "category"]
    unknown = sorted(set(protocols) - {"pairs", "category"})
    if unknown:
        raise FashionLensError(f"unknown protocol {', '.join(unknown)} (use pairs, category)")
    spec = _spec(data, image_column, target_column, split_column, image_dir, image_ext)
    train_set, val_set = split_train_val(load_labelled(spec), spec, seed)
    if not val_set.samples:
        raise FashionLensError(f"{data}: no validation photos to query with")
    embedder = Embedder(model or "default")
    results: dict = {"model": embedder.spec, "dimension": embedder.dim, "data": data}
    if "pairs" in protocols:
        results["pairs"] = pairs_protocol(embedder, [s.path for s in val_set.samples],
                                          seed=seed)
    if "category" in protocols:
        results["category"] = category_protocol(
            embedder, [(s.path, s.label) for s in val_set.samples],
            [(s.path, s.label) for s in train_set.samples], k=10)
    if as_json:
        print(json.dumps(results))
        return
    table = Table(title=f"search quality of {embedder.spec} ({embedder.dim}-d) on {data}",
                  title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    if "pairs" in results:
        p = results["pairs"]
        for k in ("top1", "top5", "top10"):
            table.add_row(f"pairs {k} ({p['items']} items)", f"{p[k]:.4f}")
    if "category" in results:
        c = results["category"]
        table.add_row(f"same-category precision@10 ({c['queries']} queries, {c['gallery']} "
                      "gallery)", f"{c['precision@10']:.4f}")
    out.print(table)
    if "category" in results:
        worst = sorted(results["category"]["per_label"].items(), key=lambda kv: kv[1])[:3]
        err.print("weakest categories: " + ", ".join(f"{k} {v:.2f}" for k, v in worst))
