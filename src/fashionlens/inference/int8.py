"""Whether `--runtime auto` runs a model's int8 export here (`exporting.quantize` makes
one): only where its accuracy passed and it is faster on the CPU at hand, as measured in
the export on a CPU like this one, else timed once here and kept in the user cache.
Needs OpenVINO only when it times; no torch.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

from ..errors import ModelError
from ..precision import cpu_description
from .export_cache import ONNX_FILE, OPENVINO_FILE, cache_root, read_manifest
from .ov_core import openvino_core

log = logging.getLogger(__name__)

INT8_FORMAT = "openvino-int8"
# The most accuracy int8 may lose (fraction, i.e. 0.5 points) to be run by default.
MAX_ACCURACY_LOSS = 0.005
TIMING_BATCH = 32


def compile_for_cpu(model, threads: int):
    """A model (path or OpenVINO model) compiled for this CPU in fp32, as the backends run
    it: what the int8 and fp32 timings compare."""
    return openvino_core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                  "INFERENCE_PRECISION_HINT": "f32",
                                                  "PERFORMANCE_HINT": "LATENCY"})


def images_per_second(compiled, images: np.ndarray, repeat: int = 5) -> float:
    """Model-only throughput at batch 32: the median of `repeat` timed passes."""
    batch = images[:TIMING_BATCH]
    request = compiled.create_infer_request()
    request.infer({0: batch})  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        request.infer({0: batch})
        times.append(time.perf_counter() - start)
    return len(batch) / statistics.median(times)


CPU_KEYS = ("model", "cores", "avx512", "avx2", "int8_dot")


def _cpu_key() -> str:
    here = cpu_description()
    return ",".join(f"{k}={here.get(k)}" for k in CPU_KEYS)


def _faster_here(directory: Path, fp32_directory: Path, threads: int) -> bool:
    """Time the int8 and fp32 exports on this CPU (random inputs: speed does not depend on
    the pixels), once; the verdict is kept in the user cache."""
    manifest = read_manifest(directory)
    key = f"{manifest['weights_digest']}:{manifest.get('created')}:{_cpu_key()}"
    store = cache_root() / "int8-speed.json"
    store.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(store) + ".lock"):
        try:
            known = json.loads(store.read_text())
        except (OSError, json.JSONDecodeError):
            known = {}
        if key in known:
            return bool(known[key]["faster"])
        core = openvino_core()
        batch = np.random.default_rng(0).standard_normal(
            (TIMING_BATCH, *manifest["input"]["shape"][1:]), dtype=np.float32)
        fp32 = images_per_second(compile_for_cpu(core.read_model(str(fp32_directory / ONNX_FILE)),
                                           threads), batch, repeat=3)
        int8 = images_per_second(compile_for_cpu(core.read_model(str(directory / OPENVINO_FILE)),
                                           threads), batch, repeat=3)
        known[key] = {"fp32_images_per_s": round(fp32, 1), "int8_images_per_s": round(int8, 1),
                      "faster": int8 > fp32}
        log.info("int8 on this CPU: %.1f images/s against fp32 %.1f", int8, fp32)
        tmp = store.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=2))
        tmp.replace(store)
        return int8 > fp32


def runs_int8_here(directory: Path, fp32_directory: Path, threads: int | None = None) -> bool:
    """Whether `--runtime auto` should run this int8 export: its accuracy passed, and it
    is faster on this CPU (as measured in the export on a CPU like this one, else timed
    here once)."""
    import os

    try:
        manifest = read_manifest(directory)
    except ModelError:
        return False
    if not manifest.get("accuracy_ok"):
        return False
    measured = manifest.get("cpu") or {}
    here = cpu_description()
    if all(measured.get(k) == here.get(k) for k in CPU_KEYS):
        return bool(manifest.get("recommended"))
    try:
        return _faster_here(directory, fp32_directory, threads or os.cpu_count() or 1)
    except (OSError, RuntimeError) as exc:  # a read-only home, an OpenVINO failure
        log.warning("int8 not timed on this CPU (%s); running fp32", exc)
        return False
