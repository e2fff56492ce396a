"""`fashionlens export MODEL [--format onnx|openvino] [--output DIR]`: a saved model as
ONNX or OpenVINO IR, checked against torch on the sample photos before it is written.

The `--runtime` option that uses such exports lives in cli/common.py (RuntimeName)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import ConfigError
from .common import MODEL_HELP, ImageDir, ImageExt, one_of, out

FORMATS = ("onnx", "openvino", "openvino-int8")  # inference.export_cache.FORMATS (lazy)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def export(
    model: Annotated[
        str,
        typer.Argument(metavar="MODEL", show_default=False, help=MODEL_HELP + "."),
    ] = "default",
    fmt: Annotated[
        str,
        typer.Option("--format", "-f", metavar="[" + "|".join(FORMATS) + "]",
                     callback=one_of(FORMATS),
                     help="onnx (ONNX Runtime and OpenVINO), openvino (OpenVINO IR), or "
                          "openvino-int8 (quantised; needs --calibrate)."),
    ] = "onnx",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="DIR",
                     help="Folder to write (default: where --runtime finds it: the model "
                          "folder's export/FORMAT, or the user cache for bundled models)."),
    ] = None,
    calibrate: Annotated[
        Path | None,
        typer.Option(metavar="DATA",
                     help="int8: photos to calibrate on: a folder per class or a CSV as "
                          "training reads them (labels measure the accuracy change on the "
                          "photos left over), a run config (.yaml: its training photos "
                          "calibrate, its validation photos measure every head), or a "
                          "folder / .txt list of unlabelled photos."),
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(help="int8, CSV: only rows whose 'split' column has this value."),
    ] = None,
    image_dir: ImageDir = None,
    image_ext: ImageExt = None,
    calibration_size: Annotated[
        int, typer.Option(min=10, help="int8: photos to calibrate on (NNCF advises 300)."),
    ] = 300,
) -> None:
    """Export a model to ONNX or OpenVINO; refused unless it agrees with torch."""
    from ..inference.export_cache import MANIFEST

    if fmt == "openvino-int8":
        _int8(model, output, calibrate, split, image_dir, image_ext, calibration_size)
        return
    if calibrate is not None:
        raise ConfigError("--calibrate is for --format openvino-int8")
    from ..exporting.export import export_model

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


def _int8(model: str, output: Path | None, data: Path | None, split: list[str] | None,
          image_dir: str | None, image_ext: str | None, size: int) -> None:
    from ..data.sources import DataSpec, load_labelled
    from ..errors import DataError
    from ..exporting.quantize import CalibrationPhoto, quantize_model
    from ..inference.photos import collect_images

    if data is None:
        raise ConfigError("--format openvino-int8 needs --calibrate DATA: photos like the "
                          "ones the model will see (about 300)")
    held_out = None
    labelled = data.suffix.lower() == ".csv" or (data.is_dir() and any(
        p.is_dir() for p in data.iterdir()))
    if data.suffix.lower() in (".yaml", ".yml"):  # a run config: every head measured
        if not data.is_file():
            raise ConfigError(f"--calibrate {data}: no such run config")
        from ..training.calibration import run_config_photos

        photos, held_out = run_config_photos(data, model)
    elif labelled:
        spec = DataSpec(path=str(data), image_dir=image_dir, image_extension=image_ext,
                        split_column="split" if split else None)
        try:
            samples = load_labelled(spec).samples
        except DataError:
            if data.suffix.lower() == ".csv":
                raise
            samples = []
        if split:
            samples = [s for s in samples if s.split in split]
        photos = [CalibrationPhoto(s.path, s.label) for s in samples]
    else:
        photos = [CalibrationPhoto(p) for p in collect_images(data)]
    if not photos:
        raise ConfigError(f"--calibrate {data}: no photos found")
    folder = quantize_model(model, photos, out=output, calibration_size=size,
                            held_out=held_out)
    manifest = json.loads((folder / "export.json").read_text())
    out.print(f"wrote int8 export of {manifest['model']} to {folder}", highlight=False)
    speed, accuracy = manifest["speed"], manifest["accuracy"]
    table = Table(title=f"int8 against fp32 on this CPU ({manifest['cpu']['model']})",
                  title_justify="left")
    for column in ("", "fp32", "int8"):
        table.add_column(column, justify="right" if column else "left", overflow="fold")
    table.add_row(f"images/s (batch {speed['batch']})", f"{speed['fp32_images_per_s']:.1f}",
                  f"{speed['int8_images_per_s']:.1f}")
    heads = accuracy.get("heads") or ({"": {**accuracy, "measure": "accuracy"}}
                                      if "int8" in accuracy else {})
    for name, figures in heads.items():
        named = f"{name} " if len(heads) > 1 else ""  # one head: the model's accuracy
        table.add_row(f"{named}{figures['measure'].replace('_', '-')} ({figures['photos']} "
                      "held-out photos)", f"{figures['fp32']:.4f}", f"{figures['int8']:.4f}")
    out.print(table)
    verdict = "runs by default (--runtime auto)" if manifest["recommended"] else \
        "not run by default; --runtime openvino-int8 runs it"
    out.print(f"{verdict}: {manifest['reason']}", highlight=False)
