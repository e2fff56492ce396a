"""The same runtime interface on ONNX Runtime and OpenVINO.

A model folder exported by `exporting.export` (an ONNX graph, or OpenVINO IR converted
from it) runs here behind TorchRuntime's `run(batch, outputs) -> {name: array}` and its
attributes, so Predictor, Embedder and evaluation do not care which one they hold. The
exported graph gives every output TorchRuntime declares except `features` (linear probes
and training read those, in torch). Both run fp32 on the CPU; that is what the export's
agreement check compared against torch; an int8 export (`exporting.quantize`) runs int8.

Which backend runs a model, and loading it (exporting on first use), is
`inference.loading.load_runtime`. Both exported backends read the same checked ONNX
export (OpenVINO compiles it directly; an IR folder from `fashionlens export --format
openvino` loads too), found by `inference.export_cache`.

Nothing here imports torch: predict, search, the catalog and the service work from an
install without it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from ..data.preprocess import Preprocess
from ..errors import ConfigError, ModelError
from ..models.info import HeadSpec, ModelInfo
from .export_cache import INPUT_NAME, ONNX_FILE, OPENVINO_FILE, cache_root, read_manifest
from .outputs import VECTOR, normalise
from .ov_core import openvino_core

if TYPE_CHECKING:
    import torch

    from .runtime import TorchRuntime

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino", "openvino-int8")
# The Python module that provides each exported backend.
MODULE_OF = {"onnxruntime": "onnxruntime", "openvino": "openvino", "openvino-int8": "openvino"}
# What each backend reads: both run the ONNX export; OpenVINO also IR, fp32 or int8
# (`exporting.quantize`).
READS = {"onnxruntime": ("onnx",), "openvino": ("onnx", "openvino", "openvino-int8"),
         "openvino-int8": ("openvino-int8",)}


class ExportedBackend:
    """What the exported backends share: TorchRuntime's attributes (but `model`) and
    `run`, read from the model folder and the export's manifest."""

    backend = ""

    def __init__(self, directory: str | Path, *, info: ModelInfo, spec: str = "",
                 fingerprint: str = "", folder: Path | None = None,
                 threads: int | None = None) -> None:
        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        if manifest.get("format") not in READS[self.backend]:
            raise ModelError(f"{self.directory}: holds a '{manifest.get('format')}' export, "
                             f"which {self.backend} does not run")
        self.manifest = manifest
        self.info = info
        self.spec = spec
        self.fingerprint = fingerprint
        self.folder = folder
        self.preprocess: Preprocess = info.preprocess
        self.device = "cpu"
        self.precision = "int8" if manifest.get("format") == "openvino-int8" else "fp32"
        self.heads: list[HeadSpec] = info.scored_heads
        self.outputs: tuple[str, ...] = tuple(manifest["outputs"])
        self.dims: dict[str, int] = {k: int(v) for k, v in manifest.get("dims", {}).items()}
        # All the cores for one batch at a time: the callers run batches one after another.
        self.threads = max(1, threads or os.cpu_count() or 1)

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    @property
    def vector_dim(self) -> int:
        if VECTOR not in self.outputs:
            raise ModelError(f"{self.spec or self.directory}: the export gives no search vector")
        return self.dims[VECTOR]

    def _check(self, wanted: Collection[str]) -> None:
        missing = [name for name in wanted if name not in self.outputs]
        if missing:
            raise ModelError(f"{self.spec or self.directory} ({self.backend}) gives no "
                             f"{', '.join(missing)} (it gives: {', '.join(self.outputs)})")

    def run(self, batch: np.ndarray | torch.Tensor, outputs: Collection[str] | None = None
            ) -> dict[str, np.ndarray]:
        """The named outputs for a batch of pre-processed photos (N x 3 x H x W; a CPU
        tensor converts through NumPy's array protocol)."""
        wanted = tuple(outputs) if outputs is not None else self.outputs
        self._check(wanted)
        images = np.ascontiguousarray(batch, dtype=np.float32)
        accepted = [(3, *shape) for shape in self.preprocess.shapes]
        if images.ndim != 4 or tuple(images.shape[1:]) not in accepted:
            raise ModelError(f"{self.spec or self.directory}: exported for batches of "
                             + " or ".join("N x " + " x ".join(map(str, a)) for a in accepted)
                             + f", got {' x '.join(map(str, images.shape))}")
        if not len(images):
            return {name: np.zeros((0, self.dims.get(name, 0)), np.float32) for name in wanted}
        values = self._infer(images, wanted)
        if VECTOR in values:  # int8 rounding leaves it off unit length (median 1.026)
            values[VECTOR] = normalise(values[VECTOR])
        return values

    def _infer(self, images: np.ndarray, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class OnnxRuntimeBackend(ExportedBackend):
    """An ONNX export on ONNX Runtime's CPU provider (its sessions are thread-safe)."""

    backend = "onnxruntime"

    def __init__(self, directory: str | Path, **kwargs) -> None:
        super().__init__(directory, **kwargs)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initialisers are noise
        path = self.directory / ONNX_FILE
        try:
            self._session = ort.InferenceSession(str(path), options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  (ORT raises its own untyped errors)
            raise ModelError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc

    def _infer(self, images: np.ndarray, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
        values = self._session.run(list(wanted), {INPUT_NAME: images})
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(wanted, values,
                                                                         strict=True)}


class OpenVinoBackend(ExportedBackend):
    """OpenVINO IR on the CPU plugin, asked for f32 (it would pick bf16 on CPUs that have
    it, which the agreement check did not measure)."""

    backend = "openvino"

    def __init__(self, directory: str | Path, **kwargs) -> None:
        super().__init__(directory, **kwargs)
        ir = self.directory / OPENVINO_FILE
        path = ir if ir.is_file() else self.directory / ONNX_FILE
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": self.threads,
                                  "INFERENCE_PRECISION_HINT": "f32",
                                  "PERFORMANCE_HINT": "LATENCY"}
        blobs = compiled_cache()
        if blobs is not None:  # compiled once per model and CPU: ~0.5 s off each start
            config["CACHE_DIR"] = str(blobs)
        # One compiled model per input shape: a graph of fixed height and width is
        # OpenVINO's fast path, and a model with canvases has a few such shapes.
        self._compiled: dict[tuple[int, int], Any] = {}
        core = openvino_core()
        try:
            if len(self.preprocess.shapes) == 1:
                self._compiled[self.preprocess.shape] = core.compile_model(str(path), "CPU",
                                                                           config)
            else:
                for height, width in self.preprocess.shapes:
                    graph = core.read_model(str(path))
                    graph.reshape({graph.input(0): [-1, 3, height, width]})
                    self._compiled[height, width] = core.compile_model(graph, "CPU", config)
        except Exception as exc:  # noqa: BLE001  (OpenVINO raises RuntimeError for all)
            raise ModelError(f"{path}: OpenVINO cannot load it ({exc})") from exc
        self._ports = {shape: {name: compiled.output(name) for name in self.outputs}
                       for shape, compiled in self._compiled.items()}

    def _infer(self, images: np.ndarray, wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
        # A request per call: one shared request would not be safe across threads. The
        # batch is read in place (share_inputs): copying it cost 12 ms a batch of 32.
        shape = (int(images.shape[2]), int(images.shape[3]))
        result = self._compiled[shape].create_infer_request().infer({0: images},
                                                                    share_inputs=True)
        ports = self._ports[shape]
        return {name: np.array(result[ports[name]], dtype=np.float32) for name in wanted}


class OpenVinoInt8Backend(OpenVinoBackend):
    """An int8 export (`exporting.quantize`) on OpenVINO."""

    backend = "openvino-int8"


def compiled_cache() -> Path | None:
    """Where OpenVINO keeps compiled models between processes (`$FASHIONLENS_CACHE`/
    openvino), or None when that folder cannot be written (then it compiles each time)."""
    folder = cache_root() / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


BACKENDS: dict[str, type[ExportedBackend]] = {"onnxruntime": OnnxRuntimeBackend,
                                              "openvino": OpenVinoBackend,
                                              "openvino-int8": OpenVinoInt8Backend}
Runtime: TypeAlias = "TorchRuntime | ExportedBackend"


def installed(runtime: str) -> bool:
    """Whether a backend's Python package is installed (without importing it)."""
    return importlib.util.find_spec(MODULE_OF[runtime]) is not None


def choose_runtime(runtime: str) -> str:
    """'auto' -> openvino if installed, else onnxruntime, else torch; others as given."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime}: not one of {', '.join(RUNTIMES)}")
    if runtime != "auto":
        return runtime
    return next((name for name in ("openvino", "onnxruntime") if installed(name)), "torch")
