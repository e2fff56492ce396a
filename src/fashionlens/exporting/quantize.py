"""int8 OpenVINO models by post-training quantisation (NNCF), calibrated on the user's photos.

int8 trades a little accuracy for speed, and how much of each depends on the model, the
photos and the CPU (int8 dot-product instructions: VNNI, AMX). So it is measured, never
assumed: with labelled photos, `quantize_model` holds out the photos it did not calibrate
on, compares int8 against the fp32 export on them and times both on this machine. A
folder per class or a labelled CSV measures the first classification head (accuracy); a
run config (`training.calibration`) measures every head it has labels for, each on the
photos that carry its label (accuracy; micro-F1 of the tags a multilabel head decides),
so a joint model passes only where no head loses. The export is `recommended` only where
int8 loses at most `MAX_ACCURACY_LOSS` on every measured head and is faster. `--runtime
auto` runs it where its accuracy passed and it is faster on the CPU at hand
(`inference.int8` decides); `--runtime openvino-int8` runs it regardless.

The quantised graph comes from the checked ONNX export (`exporting.ensure`), so this
module needs OpenVINO and NNCF, not torch.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
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
from ..inference.ov_core import openvino_core
from ..inference.photos import prepare_photo
from ..metrics import pooled_counts
from ..models.info import HeadSpec, fingerprint_of, predicted_tags, read_info, weights_digest
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
    """A photo to calibrate on or to measure with. `label`: the class of the model's
    first classification head (a folder per class, a labelled CSV). `truths`: per head
    name, its class (classification) or a 1 / 0 / NaN row over its tags (multilabel; NaN:
    not known), as a run config's photos carry them."""

    path: Path
    label: str | None = None
    truths: Mapping[str, str | np.ndarray] | None = None

    def truth(self, head: HeadSpec, first: bool) -> str | np.ndarray | None:
        if self.truths is not None:
            return self.truths.get(head.name)
        return self.label if first else None


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


def _outputs(compiled, images: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named outputs for every image, in one pass of the network."""
    ports = {name: compiled.output(name) for name in names}
    request = compiled.create_infer_request()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for i in range(0, len(images), TIMING_BATCH):
        result = request.infer({0: images[i:i + TIMING_BATCH]})
        for name, port in ports.items():
            parts[name].append(np.array(result[port]))
    return {name: np.concatenate(v) if v else np.zeros((0, 0), np.float32)
            for name, v in parts.items()}


def _kept_fp32(model) -> list[str]:
    """What stays in fp32: the first convolution, and every operation that reads the
    pixels with no convolution between (a colour-statistics head's histograms and the
    term that reads them, `models.colour`). Measured on the bundled `fashion` with the
    histograms in int8: baseColour 0.676 -> 0.034, colour 0.738 -> 0.470, season 0.665 ->
    0.526 (one scale for the taps and the histograms crushes the histograms)."""
    kept = set(_first_convolution(model))
    frontier = list(model.get_parameters())
    while frontier:
        node = frontier.pop()
        for output in node.outputs():
            for target in output.get_target_inputs():
                op = target.get_node()
                name = op.get_friendly_name()
                if op.get_type_name() in ("Convolution", "Result") or name in kept:
                    continue
                kept.add(name)
                frontier.append(op)
    return sorted(kept)


def _first_convolution(model) -> list[str]:
    """The layer that reads the photo's pixels, kept in fp32. Measured on the bundled
    `fashion` (AMD EPYC, 300 calibration photos, validation photos of its three kinds):
    with it in int8, colour lost 11.1 points and baseColour 10.6; in fp32, 3.1 and 0.8,
    for 1.27x instead of 1.34x the fp32 speed."""
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Convolution":
            return [op.get_friendly_name()]
    return []


def _known(head: HeadSpec, truth: str | np.ndarray | None) -> bool:
    if truth is None:
        return False
    if head.kind == "multilabel":
        return isinstance(truth, np.ndarray) and not np.isnan(truth).all()
    return truth in head.classes


def _head_figure(head: HeadSpec, scores: np.ndarray, truths: list) -> float:
    """Accuracy (classification), or the pooled F1 of the tags the head decides, their
    parents implied, over the known cells (multilabel)."""
    if head.kind != "multilabel":
        picks = scores.argmax(1)
        return float(np.mean([head.classes[k] == t for k, t in zip(picks, truths, strict=True)]))
    predicted = predicted_tags(scores, np.asarray(head.threshold_list()), head.max_tags,
                               head.parent_indices())
    tp, fp, fn = pooled_counts(predicted, np.stack(truths))
    return 2 * tp / max(2 * tp + fp + fn, 1)


def _head_figures(heads: list[HeadSpec], measured: list[CalibrationPhoto],
                  images: np.ndarray, compiled: dict, outputs: Sequence[str]) -> dict:
    """Per head with at least MIN_HELD_OUT photos carrying its label: fp32 and int8."""
    rows_of = {head.name: [i for i, p in enumerate(measured)
                           if _known(head, p.truth(head, k == 0))]
               for k, head in enumerate(heads) if head.name in outputs}
    rows_of = {name: rows for name, rows in rows_of.items() if len(rows) >= MIN_HELD_OUT}
    scores = {name: _outputs(network, images, list(rows_of)) if rows_of else {}
              for name, network in compiled.items()}
    figures: dict = {}
    for k, head in enumerate(heads):
        if head.name not in rows_of:
            continue
        rows = rows_of[head.name]
        truths = [measured[i].truth(head, k == 0) for i in rows]
        entry: dict = {"photos": len(rows),
                       "measure": "micro_f1" if head.kind == "multilabel" else "accuracy"}
        for name in compiled:
            entry[name] = round(_head_figure(head, scores[name][head.name][rows], truths), 4)
        entry["change_points"] = round(100 * (entry["int8"] - entry["fp32"]), 2)
        figures[head.name] = entry
    return figures


def quantize_model(model: str | Path | None, photos: Sequence[CalibrationPhoto], *,
                   out: str | Path | None = None, calibration_size: int = CALIBRATION_SIZE,
                   seed: int = 0, threads: int | None = None,
                   held_out: Sequence[CalibrationPhoto] | None = None) -> Path:
    """Write an int8 OpenVINO export of `model` calibrated on `photos` (labels, when
    given, are used to measure the change on the photos not calibrated on; `held_out`,
    when given, are the photos measured on instead, and the first of `photos`, in their
    order, only calibrate).
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
    if pre.canvases:
        raise ModelError(f"{ref.name}: reads photos at {len(pre.shapes)} input shapes "
                         "(canvases); int8 export calibrates one shape, so it is not "
                         "offered for this model: its fp32 export runs instead")
    source = ensure_exported(folder, "onnx")
    manifest = read_manifest(source)
    threads = threads or os.cpu_count() or 1

    order = list(photos)
    if held_out is None:  # else they come as the caller drew them (`run_config_photos`)
        random.Random(seed).shuffle(order)
    calibration, used = _arrays(order, pre, calibration_size)
    if len(calibration) < 10:
        raise ConfigError(f"int8 calibration needs at least 10 readable photos; "
                          f"{len(calibration)} of {len(order)} could be read")
    heads = [h for h in info.scored_heads if h.kind in ("classification", "multilabel")]
    if heads and heads[0].kind != "classification" and held_out is None:
        heads = heads[1:]  # a label names the first head's class: none to measure
    candidates = list(held_out) if held_out is not None else order[len(used):]
    rest = [p for p in candidates
            if any(_known(h, p.truth(h, k == 0)) for k, h in enumerate(heads))]
    measured_images, measured = _arrays(rest, pre, HELD_OUT_SIZE)

    fp32 = openvino_core().read_model(str(source / ONNX_FILE))
    started = time.perf_counter()
    kept_fp32 = _kept_fp32(fp32)
    quantized = nncf.quantize(fp32, nncf.Dataset(list(calibration[:, None])),
                              subset_size=len(calibration),
                              preset=nncf.QuantizationPreset.PERFORMANCE,
                              ignored_scope=nncf.IgnoredScope(names=kept_fp32, validate=False))
    seconds = time.perf_counter() - started

    compiled_fp32 = compile_for_cpu(fp32, threads)
    compiled_int8 = compile_for_cpu(quantized, threads)
    timing = calibration if len(calibration) >= TIMING_BATCH else np.resize(
        calibration, (TIMING_BATCH, *calibration.shape[1:]))
    speed = {"fp32_images_per_s": round(images_per_second(compiled_fp32, timing), 1),
             "int8_images_per_s": round(images_per_second(compiled_int8, timing), 1),
             "batch": TIMING_BATCH, "threads": threads}
    speed["speedup"] = round(speed["int8_images_per_s"] / speed["fp32_images_per_s"], 3)
    per_head = _head_figures(heads, measured, measured_images,
                             {"fp32": compiled_fp32, "int8": compiled_int8},
                             manifest["outputs"])
    # the first measured head's figures stand at the top, as they always have
    accuracy: dict = {"photos": len(measured)}
    if per_head:
        first = next(iter(per_head.values()))
        accuracy.update({k: first[k] for k in ("fp32", "int8", "change_points")})
        accuracy["photos"] = first["photos"]
        accuracy["heads"] = per_head
    worst = min(per_head, key=lambda h: per_head[h]["change_points"], default=None)
    faster = speed["int8_images_per_s"] > speed["fp32_images_per_s"]
    if worst is None:
        recommended, reason = False, (
            f"accuracy not measured: {len(measured)} labelled photos beyond the calibration "
            f"set (need {MIN_HELD_OUT}, labelled with the model's classes)")
    elif -per_head[worst]["change_points"] > 100 * MAX_ACCURACY_LOSS:
        named = f"{worst} " if len(per_head) > 1 else ""
        recommended, reason = False, (f"{named}loses {-per_head[worst]['change_points']:.2f} "
                                      f"points (more than {100 * MAX_ACCURACY_LOSS:g})")
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
            "accuracy_ok": worst is not None and (
                -per_head[worst]["change_points"] <= 100 * MAX_ACCURACY_LOSS),
            "recommended": recommended, "reason": reason,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        finish(tmp, target, written)
    return target

