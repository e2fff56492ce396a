"""`fashionlens export MODEL [--format onnx|openvino] [--output DIR]`: a saved model as
ONNX or OpenVINO IR, checked against torch on the sample photos before it is written.

The `--runtime` option that uses such exports lives in cli/common.py (RuntimeName)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import MODEL_HELP, one_of, out

FORMATS = ("onnx", "openvino")  # inference.export.FORMATS; that module loads lazily


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def export(
    model: Annotated[
        str,
        typer.Argument(metavar="MODEL", show_default=False, help=MODEL_HELP + "."),
    ] = "default",
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", metavar="[onnx|openvino]", callback=one_of(FORMATS),
                     help="onnx (ONNX Runtime) or openvino (OpenVINO IR)."),
    ] = "onnx",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="DIR",
                     help="Folder to write (default: where --runtime finds it: the model "
                          "folder's export/FORMAT, or the user cache for bundled models)."),
    ] = None,
) -> None:
    """Export a model to ONNX or OpenVINO; refused unless it agrees with torch."""
    from ..inference.export import export_model
    from ..inference.export_cache import MANIFEST

    folder = export_model(model, fmt, output)
    manifest = json.loads((folder / MANIFEST).read_text())
    out.print(f"wrote {fmt} export of {manifest['model']} to {folder}", highlight=False)
    for backend, agreement in manifest["agreement"].items():
        table = Table(title=f"{backend} against torch on {agreement['photos']} sample photos "
                            f"(tolerance {agreement['tolerance']:g})", title_justify="left")
        table.add_column("output")
        table.add_column("max abs difference", justify="right")
        table.add_column("same top-1", justify="right")
        for name, diff in agreement["max_abs_diff"].items():
            table.add_row(name, f"{diff:.2g}", agreement["top1_same"].get(name, "-"))
        out.print(table)
    files = manifest["files"]
    shown = ", ".join(f"{name} {_size(size)}" for name, size in files.items())
    stored = ("fp16-stored weights, computed in fp32" if manifest.get("fp16_stored_weights")
              else "fp32")
    out.print(f"files: {shown} ({stored}; the torch weights: "
              f"{_size(manifest['source_weights_bytes'])})", highlight=False)
