"""Shared CLI plumbing: logging to stderr, readable errors, tables, help output."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

out = Console()
err = Console(stderr=True)

# Options that several commands reading a CSV share, spelled once.
ImageDir = Annotated[
    str | None,
    typer.Option(help="Folder the image column is relative to (relative to the CSV)."),
]
ImageExt = Annotated[str | None, typer.Option(help="Extension added to image ids, e.g. .jpg")]


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


def summary_line(metrics: dict) -> str:
    return (f"accuracy {metrics['accuracy']:.4f}   top-3 accuracy {metrics['top3_accuracy']:.4f}"
            f"   macro-F1 {metrics['macro_f1']:.4f}   images {metrics['num_images']}")
