"""A saved model as ONNX or OpenVINO IR, checked against torch before it is written.

The exported graph is TorchRuntime's own forward (`TorchRuntime.forward`, traced), so it
gives the same named outputs with the same math: every head's scores, `probabilities`
and the unit `vector`; not `features` (only training and linear probes read those, in
torch). The input is fixed at the model's own size (`preprocess.shape`; timm's
TF-"same" padding is only exact at a known size) with a free batch dimension.

Nothing is written until the export agrees with torch on real photos (the bundled
samples through the model's eval transform): every output within `TOLERANCE`, and the
same top-1 class for every classification output on every photo. The folder is built
aside and renamed into place, so a half-written export never exists.

An ONNX export is checked on every installed backend that runs it (ONNX Runtime and
OpenVINO, which compiles ONNX directly); an IR export on OpenVINO. Weights that are
exactly half-precision numbers (the bundled models store fp16) are kept in fp16 in the
graph behind a Cast to fp32: the same numbers at half the size, which is what lets the
bundled models ship their exports for installs without torch.

Where exports live and when one is current: `inference.export_cache`; writing one:
`exporting.writing`; making one on first use: `exporting.ensure`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FashionLensError, ImageError, ModelError
from ..inference.backends import BACKENDS, READS, ExportedBackend, installed
from ..inference.export_cache import (
    INPUT_NAME,
    MANIFEST,
    ONNX_FILE,
    OPENVINO_FILE,
    check_format,
    graph_key,
)
from ..inference.outputs import PROBABILITIES, PROBE_OUTPUTS, VECTOR
from ..inference.photos import collect_images, prepare_photo
from ..inference.runtime import TorchRuntime
from ..models.info import WEIGHTS_FILE, fingerprint_of, weights_digest
from ..models.resolve import SAMPLE_PHOTOS
from .writing import building, exported_path, finish

log = logging.getLogger(__name__)

# fp32 against fp32: differences are reordered sums, ~1e-6; 1e-3 on probabilities and
# unit-vector components is far below anything that changes an answer or a ranking.
TOLERANCE = 1e-3
OPSET = 17
CHECK_BATCH = 16


class ExportedOutputs(nn.Module):
    """TorchRuntime's forward as a module returning a tuple in `names` order: what
    torch.onnx.export traces. The vector is scaled to unit length as `run` does."""

    def __init__(self, runtime: TorchRuntime, names: Sequence[str]) -> None:
        super().__init__()
        self.network = runtime.model  # registered, so its weights are the graph's
        self.runtime = runtime
        self.names = tuple(names)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values = self.runtime.forward(images, self.names)
        return tuple(F.normalize(values[n].float(), dim=-1) if n == VECTOR
                     else values[n].float() for n in self.names)


def _write_onnx(runtime: TorchRuntime, names: Sequence[str], path: Path) -> dict[str, int]:
    """Trace the outputs to `path`; returns each output's width."""
    height, width = runtime.preprocess.shape
    wrapper = ExportedOutputs(runtime, names).eval()
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dims = {n: int(v.shape[1]) for n, v in zip(names, wrapper(example), strict=True)}
    batch = {0: "batch"}
    # A model with canvases reads photos of a few shapes: height and width stay free in
    # the graph (the agreement check runs every shape; OpenVINO fixes each one again).
    images = {**batch, 2: "height", 3: "width"} if runtime.preprocess.canvases else batch
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation, tracer notes
        try:
            torch.onnx.export(wrapper, (example,), str(path), dynamo=False,
                              input_names=[INPUT_NAME], output_names=list(names),
                              dynamic_axes={INPUT_NAME: images, **{n: batch for n in names}},
                              opset_version=OPSET, do_constant_folding=True,
                              training=torch.onnx.TrainingMode.PRESERVE)
        except Exception as exc:  # noqa: BLE001  (the exporter raises many kinds)
            raise ModelError(f"{runtime.spec}: {runtime.info.architecture} cannot be "
                             f"exported to ONNX ({type(exc).__name__}: {exc})") from exc
    return dims


def _write_openvino(onnx_path: Path, xml_path: Path) -> None:
    import openvino as ov

    try:
        converted = ov.convert_model(str(onnx_path))
        ov.save_model(converted, str(xml_path), compress_to_fp16=False)  # fp32, as checked
    except Exception as exc:  # noqa: BLE001  (OpenVINO raises RuntimeError for all)
        raise ModelError(f"{onnx_path}: OpenVINO cannot convert it ({exc})") from exc


def check_photos(runtime: TorchRuntime, photos: Sequence[str | Path] | None = None
                 ) -> list[np.ndarray]:
    """The photos an export is checked on, through the model's eval pipeline: one stack
    per input shape the model reads, every photo in each (so each canvas is checked, even
    where no sample photo has its aspect ratio)."""
    if photos is None:
        if not SAMPLE_PHOTOS.is_dir():
            raise ModelError(f"{SAMPLE_PHOTOS}: the sample photos an export is checked on "
                             "are not installed")
        photos = collect_images(SAMPLE_PHOTOS)
    pre = runtime.preprocess
    stacks = []
    for shape in pre.shapes:
        each = pre.fixed(shape)
        arrays = []
        for photo in photos:
            with contextlib.suppress(ImageError):
                arrays.append(prepare_photo(photo, each))
        if not arrays:
            raise ModelError("no readable photo to check the export against")
        stacks.append(np.stack(arrays))
    return stacks


def check_agreement(runtime: TorchRuntime, backend: ExportedBackend,
                    stacks: Sequence[np.ndarray], tolerance: float = TOLERANCE) -> dict:
    """Compare every exported output with torch's on each stack; ModelError naming the
    output unless all are within `tolerance` and every classification output picks the
    same top-1 class on every photo (an exact tie, within 1e-6 in torch, is no change)."""
    names = list(backend.outputs)
    kinds = {h.name: h.kind for h in runtime.heads}
    classifying = [n for n in names
                   if n == PROBABILITIES or kinds.get(n) == "classification"]
    worst = dict.fromkeys(names, 0.0)
    same = dict.fromkeys(classifying, 0)
    batches = [images[start:start + CHECK_BATCH] for images in stacks
               for start in range(0, len(images), CHECK_BATCH)]
    for batch in batches:
        expected, got = runtime.run(batch, names), backend.run(batch, names)
        for name in names:
            if got[name].shape != expected[name].shape:
                raise ModelError(f"{runtime.spec}: the {backend.backend} export gives "
                                 f"'{name}' of shape {got[name].shape}, torch "
                                 f"{expected[name].shape}")
            worst[name] = max(worst[name], float(np.abs(got[name] - expected[name]).max()))
        for name in classifying:
            want, pick = expected[name].argmax(1), got[name].argmax(1)
            rows = np.arange(len(want))
            tie = expected[name][rows, want] - expected[name][rows, pick] <= 1e-6
            same[name] += int(((want == pick) | tie).sum())
    count = sum(len(images) for images in stacks)
    for name in names:
        if not worst[name] <= tolerance:  # also refuses NaN
            raise ModelError(f"{runtime.spec}: the export on {backend.backend} disagrees with "
                             f"torch on '{name}': max abs difference {worst[name]:.3g} > "
                             f"{tolerance:g} over {count} photos; not written")
    for name in classifying:
        if same[name] != count:
            raise ModelError(f"{runtime.spec}: the export on {backend.backend} picks another "
                             f"top-1 class than torch for '{name}' on {count - same[name]} "
                             f"of {count} photos; not written")
    return {"photos": count, "tolerance": tolerance,
            "max_abs_diff": {n: float(f"{worst[n]:.3g}") for n in names},
            "top1_same": {n: f"{same[n]}/{count}" for n in classifying}}


def _half_weights(path: Path) -> int:
    """Store every float initializer whose values are all exact fp16 numbers as fp16,
    behind a Cast back to fp32 (folded away when a backend loads the graph): lossless by
    construction. Returns how many were converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if values.size < 16 or not np.array_equal(half.astype(np.float32), values):
            kept.append(init)
            continue
        stored = numpy_helper.from_array(half, f"{init.name}__fp16")
        kept.append(stored)
        casts.append(helper.make_node("Cast", [stored.name], [init.name],
                                      to=TensorProto.FLOAT, name=f"{init.name}__to_fp32"))
    if casts:
        del graph.initializer[:]
        graph.initializer.extend(kept)
        nodes = list(graph.node)
        del graph.node[:]
        graph.node.extend(casts + nodes)
        onnx.save(graph_model, str(path))
    return len(casts)


def _stored_half(folder: Path) -> bool:
    """Whether the model's weights file holds fp16 tensors (the bundled models do)."""
    from safetensors import safe_open

    with safe_open(str(folder / WEIGHTS_FILE), framework="np") as fh:
        return any(fh.get_slice(k).get_dtype() == "F16" for k in fh.keys())  # noqa: SIM118


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def export_model(model: str | Path | None, fmt: str = "onnx", out: str | Path | None = None,
                 *, photos: Sequence[str | Path] | None = None,
                 tolerance: float = TOLERANCE) -> Path:
    """Export a saved model (any `resolve_model` spelling) to `fmt` in `out` (default:
    `exported_path`), after checking it against torch on `photos` (default: the bundled
    samples). Returns the folder; `export.json` there says what it holds."""
    check_format(fmt)
    runtime = TorchRuntime.load(model, device="cpu", precision="fp32")
    folder = runtime.folder
    names = [n for n in runtime.outputs if n not in PROBE_OUTPUTS]
    if folder is None or runtime.info is None or not names:
        raise ModelError(f"{runtime.spec}: nothing to export (no model folder, or no "
                         "outputs besides features)")
    target = Path(out).expanduser().resolve() if out is not None else exported_path(folder, fmt)
    if target.exists() and (not target.is_dir() or (
            any(target.iterdir()) and not (target / MANIFEST).is_file())):
        raise FashionLensError(f"{target}: exists and is not an export; choose another "
                               "output folder")
    images = check_photos(runtime, photos)
    with building(target) as tmp:
        onnx_path = tmp / ONNX_FILE
        dims = _write_onnx(runtime, names, onnx_path)
        halved = _half_weights(onnx_path) if _stored_half(folder) else 0
        if fmt == "openvino":
            _write_openvino(onnx_path, tmp / OPENVINO_FILE)
            onnx_path.unlink()
        checkers = [name for name, reads in READS.items() if fmt in reads and installed(name)]
        if not checkers:
            raise ModelError(f"no installed runtime runs a {fmt} export to check it on "
                             "(pip install openvino)")
        manifest = {
            "format": fmt, "model": runtime.spec, "architecture": runtime.info.architecture,
            "outputs": names, "dims": dims,
            "input": {"name": INPUT_NAME, "shape": ["batch", 3, *runtime.preprocess.shape],
                      **({"shapes": [["batch", 3, *s] for s in runtime.preprocess.shapes]}
                         if runtime.preprocess.canvases else {})},
            "weights_digest": weights_digest(folder), "graph_key": graph_key(runtime.info),
            "fingerprint": fingerprint_of(folder, runtime.info),
            "preprocess": runtime.preprocess.to_dict(), "opset": OPSET,
            "fp16_stored_weights": halved,
            "versions": {name: _version(name) for name in ("torch", "onnx", *checkers)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        manifest["agreement"] = {}
        for name in checkers:
            backend = BACKENDS[name](tmp, info=runtime.info, spec=runtime.spec,
                                     fingerprint=runtime.fingerprint, folder=folder)
            manifest["agreement"][name] = check_agreement(runtime, backend, images, tolerance)
            del backend  # releases the files before they move
        manifest["source_weights_bytes"] = (folder / WEIGHTS_FILE).stat().st_size
        finish(tmp, target, manifest)
    return target
