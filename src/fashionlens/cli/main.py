"""Entry point of the `fashionlens` command."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from ..errors import FashionLensError
from .catalog import catalog_app
from .common import err, setup_logging
from .datasheet import datasheet
from .embed import evaluate_search_command, train_embedding_command
from .embed_photos import embed_photos
from .evaluate import evaluate
from .export import export
from .predict import predict
from .refit import refit_heads_command
from .review import review
from .runs import runs
from .search import search
from .serve import serve
from .train import train
from .train_text import train_text_command
from .unknown import calibrate_unknown

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Fashion image intelligence for second-hand shops: train, evaluate, predict.",
)


@app.callback()
def _options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
) -> None:
    setup_logging(verbose, quiet)


app.command()(train)
app.command()(evaluate)
app.command()(predict)
app.command()(export)
app.command()(search)
app.command("train-embedding")(train_embedding_command)
app.command("evaluate-search")(evaluate_search_command)
app.command("train-text")(train_text_command)
app.command("embed")(embed_photos)
app.command()(serve)
app.command()(runs)
app.command()(datasheet)
app.command()(review)
app.command("calibrate-unknown")(calibrate_unknown)
app.command("refit-heads")(refit_heads_command)
app.add_typer(catalog_app, name="catalog")


# Packages only the `train` extra installs: a command that needs one says which extra.
TRAINING_PACKAGES = ("torch", "torchvision", "timm", "matplotlib", "onnx", "onnxruntime",
                     "pytorch_metric_learning", "sklearn", "nncf", "cleanlab", "imagehash")


def main() -> None:
    try:
        app()
    except FashionLensError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAINING_PACKAGES:
            raise
        err.print(f"[bold red]error:[/] this command needs {exc.name}, which the plain "
                  "install leaves out (it predicts, searches, catalogs and serves without "
                  "it): pip install 'fashionlens\\[train]'", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
