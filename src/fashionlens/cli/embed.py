"""`fashionlens train-embedding` and `fashionlens evaluate-search`: metric learning and
how well an embedding finds similar items."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..config import FieldError
from ..data import DataSpec
from ..data.sources import load_labelled
from ..data.splits import split_train_val
from ..errors import ConfigError, FashionLensError
from ..evaluation.retrieval import category_protocol, pairs_protocol
from ..search.embeddings import Embedder
from ..training.metric import MetricConfig, train_embedding
from .common import ImageDir, ImageExt, err, out

Data = Annotated[str, typer.Argument(help="Folder with a sub-folder per class, or a CSV file.")]
ImageColumn = Annotated[str, typer.Option(help="CSV column with image paths or ids.")]
TargetColumn = Annotated[str, typer.Option(help="CSV column with the category label.")]
SplitColumn = Annotated[
    str | None, typer.Option(help="CSV column saying train/validation (else a random split)."),
]


def _spec(data, image_column, target_column, split_column, image_dir, image_ext,
          group_column=None) -> DataSpec:
    return DataSpec(path=data, image_column=image_column, target_column=target_column,
                    split_column=split_column, group_column=group_column, image_dir=image_dir,
                    image_extension=image_ext)


def train_embedding_command(
    data: Data,
    base: Annotated[
        str, typer.Option(help="Model to start from: a model folder, 'default' (the bundled "
                               "garment model) or a backbone name."),
    ] = "default",
    mode: Annotated[str, typer.Option(help="head: train the embedding head on frozen "
                                           "features (fast); full: the backbone too.")] = "head",
    dim: Annotated[int, typer.Option(help="Embedding size.")] = 256,
    hidden: Annotated[int, typer.Option(help="Hidden units of an MLP head (0: linear).")] = 0,
    loss: Annotated[str, typer.Option(help="triplet or supcon.")] = "triplet",
    mining: Annotated[str, typer.Option(help="Triplet mining: semihard, hard (batch-hard) "
                                             "or all.")] = "semihard",
    margin: Annotated[float, typer.Option(help="Triplet margin (cosine).")] = 0.2,
    category_weight: Annotated[
        float, typer.Option(help="Weight of the same-category term (0: items only)."),
    ] = 0.2,
    posterior_weight: Annotated[
        float | None, typer.Option(help="Weight of the base classifier's class posterior "
                                        "appended to the search vector (0: off; default "
                                        "0.25 when the base classifies, in head mode).")
    ] = None,
    stage_taps: Annotated[
        int, typer.Option(help="The backbone's last N stages feed the head besides its "
                               "pooled features (0: pooled features only).")
    ] = 2,
    item_column: Annotated[
        str | None, typer.Option(help="CSV column with item ids (several photos per item); "
                                      "without it, re-shot views of each photo are the pairs."),
    ] = None,
    views: Annotated[int, typer.Option(help="Head mode: re-shot views per photo.")] = 4,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 40 head, 5 full).")] = None,
    image_column: ImageColumn = "image",
    target_column: TargetColumn = "label",
    split_column: SplitColumn = None,
    image_dir: ImageDir = None,
    image_ext: ImageExt = None,
    output: Annotated[str, typer.Option(help="Folder for runs.")] = "runs",
    name: Annotated[str, typer.Option(help="Run name (a sub-folder of --output).")] = "embedding",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Train an embedding for visual search (metric learning).

    The saved model both classifies (if the base did) and embeds, e.g. for
    `catalog build --model`.
    """
    cfg = MetricConfig(base=base, mode=mode, dim=dim, hidden=hidden, loss=loss, mining=mining,
                       margin=margin, category_weight=category_weight,
                       posterior_weight=posterior_weight, stage_taps=stage_taps,
                       item_column=item_column, views=views,
                       epochs=epochs or (40 if mode == "head" else 5), seed=seed, device=device)
    spec = _spec(data, image_column, target_column, split_column, image_dir, image_ext)
    try:
        cfg.check()
    except FieldError as exc:  # name the flag typed: --margin, not metric.margin
        flag = exc.field.removeprefix("metric.")
        if flag in inspect.signature(train_embedding_command).parameters:
            raise ConfigError(f"--{flag.replace('_', '-')}: {exc.reason}") from None
        raise
    result = train_embedding(cfg, spec, Path(output) / name, name=name)
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
    data: Data,
    model: Annotated[
        str, typer.Option(help="Model folder, 'default', or a backbone name."),
    ] = "default",
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
    protocols = protocol or ["pairs", "category"]
    unknown = sorted(set(protocols) - {"pairs", "category"})
    if unknown:
        raise FashionLensError(f"unknown protocol {', '.join(unknown)} (use pairs, category)")
    spec = _spec(data, image_column, target_column, split_column, image_dir, image_ext)
    train_set, val_set = split_train_val(load_labelled(spec), spec, seed)
    if not val_set.samples:
        raise FashionLensError(f"{data}: no validation photos to query with")
    embedder = Embedder(model)
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
