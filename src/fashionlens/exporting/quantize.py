"""int8 OpenVINO models by post-training quantisation (NNCF), calibrated on the user's photos.

int8 trades a little accuracy for speed, and how much of each depends on the model, the
photos and the CPU (int8 dot-product instructions: VNNI, AMX). So it is measured, never
assumed: with labelled photos, `quantize_model` holds out the photos it did not calibrate
on, compares int8 against the fp32 export on them (accuracy of the first classification
head) and times both on this machine. The export is `recommended` only where int8 loses
at most `MAX_ACCURACY_LOSS` and is faster. `--runtime auto` runs it where its accuracy
passed and it is faster on the CPU at hand (`inference.int8` decides); `--runtime
openvino-int8` runs it regardless.

The quantised graph comes from the checked ONNX export (`exporting.ensure`), so this
module needs OpenVINO and NNCF, not torch.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ImageError, ModelError
from ..inference.export_cache import (
    INPUT_NAME,
    ONNX_FILE,
    OPENVINO_FILE,
    graph_key,
    read_manifest,
)
from ..inference.int8 import (
    INT8_FORMAT,
    MAX_ACCURACY_LOSS,
    TIMING_BATCH,
    compile_for_cpu,
    images_per_second,
)
from ..inference.outputs import PROBABILITIES
from ..inference.ov_core import openvino_core
from ..inference.photos import prepare_photo
from ..models.info import fingerprint_of, read_info, weights_digest
from ..models.resolve import resolve_model
from ..precision import cpu_description
from .ensure import ensure_exported
from .writing import building, exported_path, finish

log = logging.getLogger(__name__)

# NNCF's advice for post-training quantisation: about 300 photos.
CALIBRATION_SIZE = 300
# Held-out photos for the accuracy comparison; fewer than MIN_HELD_OUT measure nothing.
HELD_OUT_SIZE = 1000
MIN_HELD_OUT = 50


@dataclass
class CalibrationPhoto:
    path: Path
    label: str | None = None


def _arrays(photos: Sequence[CalibrationPhoto], pre, limit: int
            ) -> tuple[np.ndarray, list[CalibrationPhoto]]:
    """Up to `limit` readable photos as model inputs, and which they were."""
    arrays, used = [], []
    for photo in photos:
        if len(arrays) >= limit:
            break
        try:
            arrays.append(prepare_photo(photo.path, pre))
        except ImageError as exc:
            log.warning("calibration: skipped %s (%s)", photo.path, exc.reason)
            continue
        used.append(photo)
    if not arrays:
        return np.zeros((0, 3, *pre.shape), np.float32), used
    return np.stack(arrays), used


def _outputs(compiled, images: np.ndarray, name: str) -> np.ndarray:
    port = compiled.output(name)
    request = compiled.create_infer_request()
    parts = [np.array(request.infer({0: images[i:i + TIMING_BATCH]})[port])
             for i in range(0, len(images), TIMING_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def quantize_model(model: str | Path | None, photos: Sequence[CalibrationPhoto], *,
                   out: str | Path | None = None, calibration_size: int = CALIBRATION_SIZE,
                   seed: int = 0, threads: int | None = None) -> Path:
    """Write an int8 OpenVINO export of `model` calibrated on `photos` (labels, when
    given, are used to measure the accuracy change on the photos not calibrated on).
    Returns the folder; its `export.json` holds the measurements and `recommended`."""
    try:
        import nncf
        import openvino as ov
    except ModuleNotFoundError as exc:
        raise ConfigError(f"int8 export needs {exc.name}: pip install nncf openvino "
                          "(both come with the train extra)") from exc
    import os

    ref = resolve_model(model)
    folder = ref.folder
    if folder is None:
        raise ModelError(f"{ref.name}: int8 export needs a saved model folder")
    info = read_info(folder)
    pre = info.preprocess
    source = ensure_exported(folder, "onnx")
    manifest = read_manifest(source)
    threads = threads or os.cpu_count() or 1

    order = list(photos)
    random.Random(seed).shuffle(order)
    calibration, used = _arrays(order, pre, calibration_size)
    if len(calibration) < 10:
        raise ConfigError(f"int8 calibration needs at least 10 readable photos; "
                          f"{len(calibration)} of {len(order)} could be read")
    scored = info.scored_heads
    classes = scored[0].classes if scored and scored[0].kind == "classification" else []
    rest = [p for p in order[len(used):] if p.label is not None and p.label in classes]
    held_out, kept = _arrays(rest, pre, HELD_OUT_SIZE)

    fp32 = openvino_core().read_model(str(source / ONNX_FILE))
    started = time.perf_counter()
    quantized = nncf.quantize(fp32, nncf.Dataset(list(calibration[:, None])),
                              subset_size=len(calibration),
                              preset=nncf.QuantizationPreset.PERFORMANCE)
    seconds = time.perf_counter() - started

    compiled_fp32 = compile_for_cpu(fp32, threads)
    compiled_int8 = compile_for_cpu(quantized, threads)
    timing = calibration if len(calibration) >= TIMING_BATCH else np.resize(
        calibration, (TIMING_BATCH, *calibration.shape[1:]))
    speed = {"fp32_images_per_s": round(images_per_second(compiled_fp32, timing), 1),
             "int8_images_per_s": round(images_per_second(compiled_int8, timing), 1),
             "batch": TIMING_BATCH, "threads": threads}
    speed["speedup"] = round(speed["int8_images_per_s"] / speed["fp32_images_per_s"], 3)
    accuracy: dict = {"photos": len(held_out)}
    if len(held_out) >= MIN_HELD_OUT and PROBABILITIES in manifest["outputs"]:
        truth = np.array([classes.index(p.label) for p in kept])
        for name, compiled in (("fp32", compiled_fp32), ("int8", compiled_int8)):
            picks = _outputs(compiled, held_out, PROBABILITIES).argmax(1)
            accuracy[name] = round(float((picks == truth).mean()), 4)
        accuracy["change_points"] = round(100 * (accuracy["int8"] - accuracy["fp32"]), 2)
    faster = speed["int8_images_per_s"] > speed["fp32_images_per_s"]
    if "int8" not in accuracy:
        recommended, reason = False, (
            f"accuracy not measured: {len(held_out)} labelled photos beyond the calibration "
            f"set (need {MIN_HELD_OUT}, labelled with the model's classes)")
    elif accuracy["fp32"] - accuracy["int8"] > MAX_ACCURACY_LOSS:
        recommended, reason = False, (f"loses {-accuracy['change_points']:.2f} points "
                                      f"(more than {100 * MAX_ACCURACY_LOSS:g})")
    elif not faster:
        recommended, reason = False, f"not faster here ({speed['speedup']:.2f}x)"
    else:
        recommended, reason = True, (f"{speed['speedup']:.2f}x faster, accuracy change "
                                     f"{accuracy['change_points']:+.2f} points")

    target = Path(out).expanduser().resolve() if out else exported_path(folder, INT8_FORMAT)
    with building(target) as tmp:
        ov.save_model(quantized, str(tmp / OPENVINO_FILE), compress_to_fp16=False)
        written = {
            "format": INT8_FORMAT, "model": ref.name, "architecture": info.architecture,
            "outputs": manifest["outputs"], "dims": manifest["dims"],
            "input": {"name": INPUT_NAME, "shape": ["batch", 3, *pre.shape]},
            "weights_digest": weights_digest(folder), "graph_key": graph_key(info),
            "fingerprint": fingerprint_of(folder, info), "preprocess": pre.to_dict(),
            "calibration": {"photos": len(calibration), "seconds": round(seconds, 1),
                            "seed": seed},
            "accuracy": accuracy, "speed": speed, "cpu": cpu_description(),
            "accuracy_ok": "int8" in accuracy and (
                accuracy["fp32"] - accuracy["int8"] <= MAX_ACCURACY_LOSS),
            "recommended": recommended, "reason": reason,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        finish(tmp, target, written)
    return target
