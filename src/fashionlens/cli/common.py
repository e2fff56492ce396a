"""Shared CLI plumbing: logging to stderr, readable errors, tables, help output, and
the option types every command shares.

Nothing here imports torch (nor does any command module at import time): `fashionlens
--help` and `fashionlens runs` must start in well under a second, so the heavy modules
are imported inside the commands that use them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from ..errors import ConfigError, FashionLensError
from ..models.resolve import DEFAULT_NAME, bundled_models

if TYPE_CHECKING:
    from ..config import RunConfig

out = Console()
err = Console(stderr=True)

# Options that several commands reading a CSV share, spelled once.
ImageDir = Annotated[
    str | None,
    typer.Option(help="Folder the image column is relative to (relative to the CSV)."),
]
ImageExt = Annotated[str | None, typer.Option(help="Extension added to image ids, e.g. .jpg")]

# One way to name a model (models.resolve) and a labelled data set, spelled once for every
# command that takes them.
MODEL_HELP = (f"The model: 'default' (the bundled {DEFAULT_NAME}), a bundled model's name "
              f"({', '.join(bundled_models()) or 'none installed'}), or a model or run folder")
DATA_HELP = "Labelled photos: a folder with a sub-folder per class, or a CSV file."
ModelName = Annotated[
    str | None,
    typer.Option("--model", "-m", metavar="NAME_OR_PATH", help=MODEL_HELP + "."),
]
# Where a bare network will do (embeddings), a backbone name is a model too.
EmbeddingModelName = Annotated[
    str | None,
    typer.Option("--model", "-m", metavar="NAME_OR_PATH",
                 help=MODEL_HELP + ", or a backbone name (e.g. efficientnet_lite0)."),
]
# For commands that find a catalog's model themselves: only needed when it has moved.
CatalogModelName = Annotated[
    str | None,
    typer.Option("--model", "-m", metavar="NAME_OR_PATH",
                 help=MODEL_HELP + "; only if the catalog's model folder has moved since "
                                   "the build."),
]
DataOption = Annotated[str | None, typer.Option("--data", metavar="PATH", help=DATA_HELP)]
# -o/--set: config fields (section.field=value), as in `train`; not catalog item metadata.
Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-o", metavar="SECTION.FIELD=VALUE",
                 help="Override a field of the run config, e.g. -o train.lr=3e-4, or of "
                      "a source or task by its name: -o sources.studio.draws=4000 "
                      "(repeatable; after the YAML file and the flags)."),
]

# inference.backends.RUNTIMES, spelled here so that `--help` imports no inference code (a
# test checks that the two agree).
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino", "openvino-int8")


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """A check that an option's value is one of `choices` (any typer version)."""
    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"'{value}' is not one of {', '.join(choices)}")
        return value
    return check


def name_value_pairs(values: list[str] | None, what: str, value_required: bool = False
                     ) -> dict[str, str]:
    """Repeated NAME=VALUE options (`--set`, `--column`) as a dict, or an error naming
    the option and the value."""
    result = {}
    for value in values or []:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or (value_required and not rest.strip()):
            raise FashionLensError(f"{what} '{value}': expected NAME=VALUE")
        result[name.strip()] = rest.strip()
    return result


# CSV options that mean the same in every command that reads a CSV of photos.
ImageColumn = Annotated[str, typer.Option(help="CSV column with image paths or ids.")]


# The "not a garment" line, for every command that applies it (predict, catalog add
# --refuse-unknown, review): the same option with the same meaning.
UnknownThreshold = Annotated[
    float | None,
    typer.Option(min=0.0, max=1.0, help="Count a photo as not a garment the model knows from "
                                        "this unknown_score, instead of the model's "
                                        "calibrated threshold (lower catches more)."),
]


# What runs a model, for every command that runs one (predict, evaluate, search, catalog,
# serve). Catalog vectors do not depend on it: every backend has the same fingerprint.
RuntimeName = Annotated[
    str,
    typer.Option("--runtime", metavar="[" + "|".join(RUNTIMES) + "]",
                 callback=one_of(RUNTIMES),
                 help="What runs the model: auto (the default: OpenVINO if installed, else "
                      "ONNX Runtime, else torch; torch for a backbone or a GPU), torch, "
                      "onnxruntime or openvino. The exported ones run fp32 on the CPU from "
                      "a checked ONNX export (shipped with the bundled models; made on "
                      "first use for others, which needs torch, and cached)."),
]


def load_run_config(config: Path | None, overrides: list[str] | None, given: dict,
                    flags: dict[str, str]) -> RunConfig:
    """The run config from the YAML file, then the flags given (`given`: dotted field ->
    value, None for flags not typed), then -o/--set overrides (config.load_config).

    A bad value that came from a flag is reported under that flag (`flags`: dotted field ->
    '--flag'), e.g. '--margin: must be positive', not 'metric.margin: ...'.
    """
    from ..config import FieldError, load_config, nest  # imports torch (via tasks)

    given = {key: value for key, value in given.items() if value is not None}
    values: dict = {}
    for key, value in given.items():
        nest(key, value, values)
    try:
        return load_config(config, overrides=list(overrides or []), values=values)
    except FieldError as exc:
        if exc.field in given and exc.field in flags and exc.file is None \
                and not overridden(overrides, exc.field):
            raise ConfigError(f"{flags[exc.field]}: {exc.reason}") from None
        raise


def overridden(overrides: list[str] | None, field: str) -> bool:
    """Whether an -o/--set override sets the dotted `field`."""
    return any(o.split("=", 1)[0].strip() == field for o in overrides or [])


def _hide_type_of_flags() -> None:
    """Typer 0.29's rich help prints a type ('<bool>') after flags that take no value
    (--json, --tta, even --help), as if they needed one; show nothing there instead."""
    try:
        from typer.core import TyperOption
    except ImportError:  # another typer layout: nothing to fix
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "flags_hidden", False):
        return

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) and not getattr(self, "count", False) \
                and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich.flags_hidden = True
    TyperOption.display_type_rich = display_type_rich


_hide_type_of_flags()


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", force=True,
                        handlers=[RichHandler(console=err, show_path=False, show_time=False)])
    for noisy in ("PIL", "matplotlib", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A server configured in this process (uvicorn's dictConfig, `service.server.log_config`)
    # gave the package logger a handler of its own on the stderr of that moment, which may
    # be closed since: the command's lines go through the handler above instead.
    package = logging.getLogger("fashionlens")
    for handler in list(package.handlers):
        package.removeHandler(handler)
    package.propagate = True
    package.setLevel(logging.NOTSET)


def metrics_table(metrics: dict, title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("class")
    for name in ("precision", "recall", "f1", "support"):
        table.add_column(name, justify="right")
    for name, row in metrics["per_class"].items():
        if not row["support"]:
            continue
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
                      str(row["support"]))
    table.add_section()
    table.add_row("macro avg", f"{metrics['macro_precision']:.3f}",
                  f"{metrics['macro_recall']:.3f}", f"{metrics['macro_f1']:.3f}",
                  str(metrics["num_images"]))
    return table


def tasks_table(metrics: dict, title: str | None = None) -> Table:
    """A multi-task model's figures: a row per task with its headline numbers."""
    table = Table(title=title, title_justify="left")
    table.add_column("task")
    table.add_column("figures", overflow="fold")
    table.add_column("images", justify="right")
    for name, figures in metrics["summary"].items():
        if not isinstance(figures, dict):
            continue
        shown = "   ".join(f"{key.replace('_', '-')} {value:.4f}" for key, value in figures.items()
                           if isinstance(value, float | int))
        table.add_row(name, shown, str(metrics["tasks"][name].get("num_images", "")))
    return table


def print_metrics(metrics: dict, title: str | None = None) -> None:
    """Per-class table and summary line of one task, or the per-task table of several."""
    if "tasks" in metrics:
        out.print(tasks_table(metrics, title))
        out.print(f"mean monitored score {metrics['summary']['score']:.4f}")
        return
    out.print(metrics_table(metrics, title))
    out.print(summary_line(metrics))


def summary_line(metrics: dict) -> str:
    return (f"accuracy {metrics['accuracy']:.4f}   top-3 accuracy {metrics['top3_accuracy']:.4f}"
            f"   macro-F1 {metrics['macro_f1']:.4f}   images {metrics['num_images']}")
