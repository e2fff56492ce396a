"""The one way to load a runtime for a model: which backend runs it, and its export,
made on first use (`exporting.ensure`).

`load_runtime(model, runtime)` picks: `torch` (eager PyTorch, every device and precision),
`onnxruntime`, `openvino`, `openvino-int8` (a calibrated int8 export, `exporting.quantize`),
or `auto` (OpenVINO if installed, else ONNX Runtime, else torch; OpenVINO int8 where a
recommended int8 export measured on a CPU like this one exists, `inference.int8`).
Backbones (no model folder) and non-CPU devices always run in torch. The export happens
on first use and is cached; the bundled models ship theirs.

This module sits above `fashionlens.exporting` (what builds exports), which sits above
what runs them (`inference.runtime`, `inference.backends`): Predictor, Embedder and
evaluation load through here. Nothing here imports torch unless torch is what runs.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..exporting.ensure import ensure_exported
from ..models.info import fingerprint_of, read_info
from ..models.resolve import resolve_model
from .backends import BACKENDS, MODULE_OF, Runtime, choose_runtime, installed
from .export_cache import find_exported
from .int8 import runs_int8_here

log = logging.getLogger(__name__)


def _on_cpu(device: Any) -> bool:
    """Whether `device` is the CPU, without importing torch for the plain spellings."""
    if str(device) in ("cpu", ""):
        return True
    if str(device) == "auto" and importlib.util.find_spec("torch") is None:
        return True
    from ..precision import resolve_device

    return resolve_device(device).type == "cpu"


def load_runtime(model: str | Path | None = None, runtime: str = "auto", *,
                 backbone: bool = False, pretrained: str = "embedded",
                 device: Any = "cpu", precision: str | None = None,
                 flag: str = "--model", threads: int | None = None,
                 int8: bool = True) -> Runtime:
    """A runtime for anything `models.resolve.resolve_model` names, on `runtime`.

    Exported backends need a model folder and the CPU: a backbone, or another device,
    runs in torch whatever was asked. They run fp32 (or int8, see `inference.int8`);
    an explicit bf16 stays in torch under 'auto' and is refused for a named backend, and
    an explicit fp32 keeps 'auto' off int8, as does `int8=False` (the embedders: stored
    vectors must not depend on the CPU that made them, and int8 ones sit at a median
    cosine of 0.975, min 0.88, to the fp32 ones of the same photo: 300 clothing photos).
    """
    chosen = choose_runtime(runtime)
    ref = resolve_model(model, backbone=backbone, flag=flag)
    if chosen != "torch" and (ref.folder is None or not _on_cpu(device)):
        if runtime != "auto":
            log.info("%s: runs in torch (%s has no %s export)", ref.name,
                     "a backbone" if ref.folder is None else f"device {device}", chosen)
        chosen = "torch"
    if chosen != "torch" and precision == "bf16":
        if runtime != "auto":
            raise ConfigError(f"--runtime {chosen} does not run bf16; bf16 needs --runtime "
                              "torch")
        chosen = "torch"
    if chosen == "torch":
        if importlib.util.find_spec("torch") is None:
            raise ConfigError(f"{ref.name} needs torch here ("
                              f"{'a backbone' if ref.folder is None else 'this runtime'}), "
                              "which this install lacks: pip install 'fashionlens[train]', "
                              "or --runtime openvino with a model folder")
        from .runtime import TorchRuntime

        return TorchRuntime.load(model, backbone=backbone, pretrained=pretrained,
                                 device=device, precision=precision, flag=flag)
    if not installed(chosen):
        raise ConfigError(f"--runtime {chosen}: the {MODULE_OF[chosen]} package is not "
                          f"installed (pip install {MODULE_OF[chosen]})")
    directory = ensure_exported(ref.folder, "openvino-int8" if chosen == "openvino-int8"
                                else "onnx")
    if runtime == "auto" and chosen == "openvino" and precision != "fp32" and int8:
        int8 = find_exported(ref.folder, "openvino-int8")
        if int8 is not None and runs_int8_here(int8, directory, threads):
            chosen, directory = "openvino-int8", int8
    info = read_info(ref.folder)
    return BACKENDS[chosen](directory, info=info, spec=ref.name,
                            fingerprint=fingerprint_of(ref.folder, info), folder=ref.folder,
                            threads=threads)
