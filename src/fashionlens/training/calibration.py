"""The photos of a run config, to calibrate and measure an int8 export of the model it
trained (`exporting.quantize`): the config's training photos calibrate, its validation
photos measure every head it has labels for. Here, not beside the quantiser, because it
reads a run's data as training does (torch), and exports sit below training."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np

from ..config import load_config
from ..errors import ModelError
from ..exporting.quantize import CalibrationPhoto
from ..models.info import read_info
from ..models.resolve import resolve_model
from .run import prepare_datasets

log = logging.getLogger(__name__)


def _interleaved(groups: list[list[CalibrationPhoto]], seed: int) -> list[CalibrationPhoto]:
    """One photo of each group in turn (each group shuffled): the first few hundred then
    hold every kind of photo, not mostly the largest source's."""
    rng = random.Random(seed)
    for group in groups:
        rng.shuffle(group)
    longest = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]


def run_config_photos(config_path: str | Path, model: str | Path | None, seed: int = 0
                      ) -> tuple[list[CalibrationPhoto], list[CalibrationPhoto]]:
    """(calibration, held-out) photos of the run config a model was trained with: its
    training photos to calibrate on, its validation photos to measure every head on that
    the config has labels for (a task whose classes differ from the model's head of that
    name measures nothing). Both interleave the config's sources. Needs the train extra."""
    ref = resolve_model(model)
    if ref.folder is None:
        raise ModelError(f"{ref.name}: int8 export needs a saved model folder")
    info = read_info(ref.folder)
    config = load_config(config_path)
    prepared = prepare_datasets(config, info.preprocess, config.seed)
    heads = {h.name: h for h in info.scored_heads}
    tasks = [t for t in prepared.tasks
             if t.name in heads and list(t.classes) == list(heads[t.name].classes)]
    skipped = [t.name for t in prepared.tasks if t not in tasks]
    if skipped:
        log.warning("%s: tasks not measured (no head of that name with the same classes): "
                    "%s", config_path, ", ".join(skipped))

    def truths(targets: dict[str, np.ndarray], row: int) -> dict[str, str | np.ndarray]:
        found: dict[str, str | np.ndarray] = {}
        for task in tasks:
            value = targets[task.name][row]
            if task.kind == "multilabel":
                found[task.name] = np.asarray(value, np.float32)
            elif int(value) >= 0:
                found[task.name] = task.classes[int(value)]
        return found

    def grouped(dataset, targets: dict[str, np.ndarray] | None) -> list[list[CalibrationPhoto]]:
        parts = getattr(dataset, "parts", [dataset])
        groups, row = [], 0
        for part in parts:
            group = []
            for sample in part.samples:
                group.append(CalibrationPhoto(
                    sample.path, truths=truths(targets, row) if targets is not None else None))
                row += 1
            groups.append(group)
        return groups

    calibration = _interleaved(grouped(prepared.train_ds, None), seed)
    held_out = _interleaved(grouped(prepared.val_ds, prepared.val_targets), seed)
    return calibration, held_out
