"""`fashionlens train-text DATA.csv`: align a model's search vectors with words."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import FashionLensError
from .common import ModelName, RuntimeName, name_value_pairs, out


def train_text_command(
    data: Annotated[list[Path], typer.Argument(
        help="CSVs of photos: products with a name column and attribute columns (products' "
             "styles.csv), and photos named only by their type (a training CSV with "
             "image,label,split columns, read with --column category=label).")],
    model: ModelName = None,
    image_dir: Annotated[str, typer.Option(help="Photo folder, beside the CSV.")] = "images",
    image_ext: Annotated[str, typer.Option(help="Photo file suffix.")] = ".jpg",
    text_column: Annotated[str, typer.Option(help="The column of product names.")]
    = "productDisplayName",
    split_column: Annotated[str, typer.Option(help="The column naming each row's split.")]
    = "split",
    column: Annotated[list[str] | None, typer.Option(
        "--column", metavar="FIELD=COLUMN",
        help="Read a field (category, colour, extra.gender, extra.season, extra.usage) "
             "from this column, in each CSV that has it.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", metavar="VALUE", help="Leave out rows of this category (e.g. 'Not "
                                            "sure').")] = None,
    train_split: Annotated[list[str] | None, typer.Option(
        "--train-split", metavar="NAME", help="A split fitted on (default: train); the "
                                               "others measure.")] = None,
    epochs: Annotated[int, typer.Option(min=1, max=1000, help="Passes over the pairs.")] = 30,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Where to write text-alignment.safetensors (default: the model's "
                      "folder).")] = None,
    cache: Annotated[Path, typer.Option(help="Where photo and sentence vectors are cached.")]
    = Path("runs/text-alignment-cache"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    runtime: RuntimeName = "auto",
) -> None:
    """Train a model's text alignment, so that its catalogs can be searched by words.

    What `search --text` uses. Needs the train extra (torch) and the text extra."""
    for path in data:
        if not path.is_file():
            raise FashionLensError(f"{path}: no such CSV file")
    columns = name_value_pairs(column, "--column", value_required=True)
    import torch  # noqa: F401  (the train extra; a missing one is named by `main`)

    from ..training.text_alignment import train_text_alignment

    path, meta = train_text_alignment(
        data, model=model, out=out_dir, image_dir=image_dir, image_ext=image_ext,
        text_column=text_column, split_column=split_column, columns=columns,
        exclude=exclude or (), train_splits=train_split or ("train",), epochs=epochs, cache=cache,
        seed=seed, runtime=runtime, log=lambda line: out.print(line, highlight=False))
    out.print(f"wrote {path}", highlight=False)
    for name in ("validation_names_recall@1", "validation_names_recall@10"):
        if name in meta:
            out.print(f"{name}: {meta[name]:.4f} (of {meta['validation_gallery']:,} "
                      "validation photos)", highlight=False)
