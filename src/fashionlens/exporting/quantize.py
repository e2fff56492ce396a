"""int8 OpenVINO models by post-training quantisation (NNCF), calibrated on the user's photos.

int8 trades a little accuracy for speed, and how much of each depends on the model, the
photos and the CPU (int8 dot-product instructions: VNNI, AMX). So it is measured, never
assumed: with labelled photos, `quantize_model` holds out the photos it did not calibrate
on, compares int8 against the fp32 export on them (accuracy of the first classification
head) and times both on this machine. The export is `recommended` only where int8 loses
at most `MAX_ACCURACY_LOSS` and is faster. `--runtime auto` runs it where its accuracy
passed and it is faster on the CPU at hand: the measurement in the export when the CPU is
like that one (`precision.cpu_description`), else timed once on first use here and kept
in the user cache. `--runtime openvino-int8` runs it regardless.

The quantised graph comes from the checked ONNX export (`inference.export_cache`), so
this module needs OpenVINO and NNCF, not torch.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ImageError, ModelError
from ..models.info import fingerprint_of, read_info, weights_digest
from ..models.resolve import resolve_model
from ..precision import cpu_description
from .export_cache import (
    INPUT_NAME,
    ONNX_FILE,
    OPENVINO_FILE,
    building,
    ensure_exported,
    exported_path,
    finish,
    graph_key,
    read_manifest,
)
from .outputs import PROBABILITIES

log = logging.getLogger(__name__)

INT8_FORMAT = "openvino-int8"
# The most accuracy int8 may lose (fraction, i.e. 0.5 points) to be run by default.
MAX_ACCURACY_LOSS = 0.005
# NNCF's advice for post-training quantisation: about 300 photos.
CALIBRATION_SIZE = 300
# Held-out photos for the accuracy comparison; fewer than MIN_HELD_OUT measure nothing.
HELD_OUT_SIZE = 1000
MIN_HELD_OUT = 50
TIMING_BATCH = 32


@dataclass
class CalibrationPhoto:
    path: Path
    label: str | None = None


def _arrays(photos: Sequence[CalibrationPhoto], pre, limit: int
            ) -> tuple[np.ndarray, list[CalibrationPhoto]]:
    """Up to `limit` readable photos as model inputs, and which they were."""
    from .predictor import prepare_photo

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


def _compile(model, threads: int):
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                  "INFERENCE_PRECISION_HINT": "f32",
                                                  "PERFORMANCE_HINT": "LATENCY"})


def _outputs(compiled, images: np.ndarray, name: str) -> np.ndarray:
    port = compiled.output(name)
    request = compiled.create_infer_request()
    parts = [np.array(request.infer({0: images[i:i + TIMING_BATCH]})[port])
             for i in range(0, len(images), TIMING_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _images_per_second(compiled, images: np.ndarray, repeat: int = 5) -> float:
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

    fp32 = ov.Core().read_model(str(source / ONNX_FILE))
    started = time.perf_counter()
    quantized = nncf.quantize(fp32, nncf.Dataset(list(calibration[:, None])),
                              subset_size=len(calibration),
                              preset=nncf.QuantizationPreset.PERFORMANCE)
    seconds = time.perf_counter() - started

    compiled_fp32, compiled_int8 = _compile(fp32, threads), _compile(quantized, threads)
    timing = calibration if len(calibration) >= TIMING_BATCH else np.resize(
        calibration, (TIMING_BATCH, *calibration.shape[1:]))
    speed = {"fp32_images_per_s": round(_images_per_second(compiled_fp32, timing), 1),
             "int8_images_per_s": round(_images_per_second(compiled_int8, timing), 1),
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


CPU_KEYS = ("model", "cores", "avx512", "avx2", "int8_dot")


def _cpu_key() -> str:
    here = cpu_description()
    return ",".join(f"{k}={here.get(k)}" for k in CPU_KEYS)


def _faster_here(directory: Path, fp32_directory: Path, threads: int) -> bool:
    """Time the int8 and fp32 exports on this CPU (random inputs: speed does not depend on
    the pixels), once; the verdict is kept in the user cache."""
    from filelock import FileLock

    from .export_cache import cache_root

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
        import openvino as ov

        core = ov.Core()
        batch = np.random.default_rng(0).standard_normal(
            (TIMING_BATCH, *manifest["input"]["shape"][1:]), dtype=np.float32)
        fp32 = _images_per_second(_compile(core.read_model(str(fp32_directory / ONNX_FILE)),
                                           threads), batch, repeat=3)
        int8 = _images_per_second(_compile(core.read_model(str(directory / OPENVINO_FILE)),
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
