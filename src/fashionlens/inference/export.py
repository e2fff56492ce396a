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

Where exports live (`exported_path`): `<model folder>/export/<format>/`; for a bundled
model (a read-only install) or any folder we cannot write to, a user cache folder:
`$FASHIONLENS_CACHE` or `~/.cache/fashionlens/`, then `<model name>-<weights digest>/`.
An export records the weights digest (and what shapes the graph) it was made from and is
rebuilt when they change.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn

from ..data.transforms import eval_transform
from ..errors import FashionLensError, ImageError, ModelError
from ..models.artifact import WEIGHTS_FILE, ModelInfo, read_info, weights_digest
from ..models.resolve import BUNDLED_DIR, SAMPLE_PHOTOS
from .backends import (
    BACKENDS,
    INPUT_NAME,
    MANIFEST,
    ONNX_FILE,
    OPENVINO_FILE,
    ExportedBackend,
)
from .predictor import collect_images, prepare_photo
from .runtime import FEATURES, PROBABILITIES, VECTOR, TorchRuntime, fingerprint_of

log = logging.getLogger(__name__)

FORMATS = ("onnx", "openvino")
BACKEND_OF = {"onnx": "onnxruntime", "openvino": "openvino"}
CACHE_ENV = "FASHIONLENS_CACHE"
EXPORT_DIR = "export"
# fp32 against fp32: differences are reordered sums, ~1e-6; 1e-3 on probabilities and
# unit-vector components is far below anything that changes an answer or a ranking.
TOLERANCE = 1e-3
OPSET = 17
CHECK_BATCH = 16


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ModelError(f"--format {fmt}: not one of {', '.join(FORMATS)}")


def cache_root() -> Path:
    """Where exports of models we may not write beside go: $FASHIONLENS_CACHE or
    ~/.cache/fashionlens."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fashionlens"


def _is_bundled(folder: Path) -> bool:
    return folder.parent == BUNDLED_DIR.resolve()


def exported_path(folder: str | Path, fmt: str) -> Path:
    """Where the `fmt` export of the model in `folder` lives (whether or not it exists)."""
    _check_format(fmt)
    folder = Path(folder).resolve()
    if not _is_bundled(folder) and os.access(folder, os.W_OK):
        return folder / EXPORT_DIR / fmt
    key = f"{folder.name}-{weights_digest(folder)}"
    if not _is_bundled(folder):  # two read-only folders may share a name and weights
        key += "-" + hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    return cache_root() / key / fmt


def graph_key(info: ModelInfo) -> str:
    """What shapes the exported graph besides the weights: the architecture, each head's
    name, kind and size, the embedding settings and the input size (not thresholds)."""
    described = {"architecture": info.architecture,
                 "heads": [[h.name, h.kind, len(h.classes)] for h in info.heads],
                 "embedding": info.embedding, "input": list(info.preprocess.shape)}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def is_current(directory: Path, folder: Path, fmt: str) -> bool:
    """Whether `directory` holds a `fmt` export of the model in `folder` as it is now."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (manifest.get("format") == fmt
            and manifest.get("weights_digest") == weights_digest(folder)
            and manifest.get("graph_key") == graph_key(read_info(folder)))


def ensure_exported(folder: str | Path, fmt: str) -> Path:
    """The cached `fmt` export of the model in `folder`, made first if missing or stale.
    A file lock keeps two processes from exporting the same model at once."""
    folder = Path(folder).resolve()
    target = exported_path(folder, fmt)
    if is_current(target, folder, fmt):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"{target.parent}: cannot create the export folder ({exc}); set "
                         f"{CACHE_ENV} to a writable folder") from exc
    with FileLock(str(target.parent / f".{fmt}.lock")):
        if not is_current(target, folder, fmt):
            log.info("exporting %s to %s (first use; cached in %s)", folder, fmt, target)
            export_model(folder, fmt, target)
    return target


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
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation, tracer notes
        try:
            torch.onnx.export(wrapper, (example,), str(path), dynamo=False,
                              input_names=[INPUT_NAME], output_names=list(names),
                              dynamic_axes={INPUT_NAME: batch, **{n: batch for n in names}},
                              opset_version=OPSET, do_constant_folding=True)
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
                 ) -> torch.Tensor:
    """The photos an export is checked on, through the model's eval transform."""
    if photos is None:
        if not SAMPLE_PHOTOS.is_dir():
            raise ModelError(f"{SAMPLE_PHOTOS}: the sample photos an export is checked on "
                             "are not installed")
        photos = collect_images(SAMPLE_PHOTOS)
    transform = eval_transform(runtime.preprocess)
    tensors = []
    for photo in photos:
        with contextlib.suppress(ImageError):
            tensors.append(prepare_photo(photo, transform, runtime.preprocess.resize_size))
    if not tensors:
        raise ModelError("no readable photo to check the export against")
    return torch.stack(tensors)


def check_agreement(runtime: TorchRuntime, backend: ExportedBackend, images: torch.Tensor,
                    tolerance: float = TOLERANCE) -> dict:
    """Compare every exported output with torch's on `images`; ModelError naming the
    output unless all are within `tolerance` and every classification output picks the
    same top-1 class on every photo (an exact tie, within 1e-6 in torch, is no change)."""
    names = list(backend.outputs)
    kinds = {h.name: h.kind for h in runtime.heads}
    classifying = [n for n in names
                   if n == PROBABILITIES or kinds.get(n) == "classification"]
    worst = dict.fromkeys(names, 0.0)
    same = dict.fromkeys(classifying, 0)
    for start in range(0, len(images), CHECK_BATCH):
        batch = images[start:start + CHECK_BATCH]
        expected, got = runtime.run(batch, names), backend.run(batch, names)
        for name in names:
            if got[name].shape != expected[name].shape:
                raise ModelError(f"{runtime.spec}: the {backend.format} export gives "
                                 f"'{name}' of shape {got[name].shape}, torch "
                                 f"{expected[name].shape}")
            worst[name] = max(worst[name], float(np.abs(got[name] - expected[name]).max()))
        for name in classifying:
            want, pick = expected[name].argmax(1), got[name].argmax(1)
            rows = np.arange(len(want))
            tie = expected[name][rows, want] - expected[name][rows, pick] <= 1e-6
            same[name] += int(((want == pick) | tie).sum())
    count = len(images)
    for name in names:
        if not worst[name] <= tolerance:  # also refuses NaN
            raise ModelError(f"{runtime.spec}: the {backend.format} export disagrees with "
                             f"torch on '{name}': max abs difference {worst[name]:.3g} > "
                             f"{tolerance:g} over {count} photos; not written")
    for name in classifying:
        if same[name] != count:
            raise ModelError(f"{runtime.spec}: the {backend.format} export picks another "
                             f"top-1 class than torch for '{name}' on {count - same[name]} "
                             f"of {count} photos; not written")
    return {"photos": count, "tolerance": tolerance,
            "max_abs_diff": {n: float(f"{worst[n]:.3g}") for n in names},
            "top1_same": {n: f"{same[n]}/{count}" for n in classifying}}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished export into place, replacing an older export there."""
    umask = _umask()
    for path in tmp.iterdir():
        os.chmod(path, 0o666 & ~umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    if not target.exists():
        tmp.replace(target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    target.replace(old)
    tmp.replace(target)
    shutil.rmtree(old, ignore_errors=True)


def export_model(model: str | Path | None, fmt: str = "onnx", out: str | Path | None = None,
                 *, photos: Sequence[str | Path] | None = None,
                 tolerance: float = TOLERANCE) -> Path:
    """Export a saved model (any `resolve_model` spelling) to `fmt` in `out` (default:
    `exported_path`), after checking it against torch on `photos` (default: the bundled
    samples). Returns the folder; `export.json` there says what it holds."""
    _check_format(fmt)
    runtime = TorchRuntime.load(model, device="cpu", precision="fp32")
    folder = runtime.folder
    names = [n for n in runtime.outputs if n != FEATURES]
    if folder is None or runtime.info is None or not names:
        raise ModelError(f"{runtime.spec}: nothing to export (no model folder, or no "
                         "outputs besides features)")
    target = Path(out).expanduser().resolve() if out is not None else exported_path(folder, fmt)
    if target.exists() and (not target.is_dir() or (
            any(target.iterdir()) and not (target / MANIFEST).is_file())):
        raise FashionLensError(f"{target}: exists and is not an export; choose another "
                               "output folder")
    images = check_photos(runtime, photos)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise ModelError(f"{target}: cannot write the export there ({exc})") from exc
    try:
        onnx_path = tmp / ONNX_FILE
        dims = _write_onnx(runtime, names, onnx_path)
        if fmt == "openvino":
            _write_openvino(onnx_path, tmp / OPENVINO_FILE)
            onnx_path.unlink()
        manifest = {
            "format": fmt, "model": runtime.spec, "architecture": runtime.info.architecture,
            "outputs": names, "dims": dims,
            "input": {"name": INPUT_NAME, "shape": ["batch", 3, *runtime.preprocess.shape]},
            "weights_digest": weights_digest(folder), "graph_key": graph_key(runtime.info),
            "fingerprint": fingerprint_of(folder, runtime.info),
            "preprocess": runtime.preprocess.to_dict(), "opset": OPSET,
            "versions": {name: _version(name) for name in ("torch", "onnx",
                                                             BACKEND_OF[fmt])},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        backend = BACKENDS[BACKEND_OF[fmt]](tmp, info=runtime.info, spec=runtime.spec,
                                            fingerprint=runtime.fingerprint, folder=folder)
        manifest["agreement"] = check_agreement(runtime, backend, images, tolerance)
        del backend  # releases the files before they move
        manifest["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())
                             if p.name != MANIFEST}
        manifest["source_weights_bytes"] = (folder / WEIGHTS_FILE).stat().st_size
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
