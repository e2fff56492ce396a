"""Predicting for photos with a saved model: every head's answer, per photo.

Single process: photos are decoded by a small thread pool (Pillow releases the GIL
while decoding, and JPEG draft mode decodes big photos at reduced scale) while the
runtime (`inference.runtime`) runs the model on batches. Photos are read by
`inference.photos`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.images import load_image
from ..data.preprocess import tta_arrays
from ..errors import FashionLensError, ImageError
from ..models.info import HeadSpec, ModelInfo, describe
from ..models.resolve import DEFAULT_MODEL, SAMPLE_PHOTOS
from .backends import Runtime
from .holder import RuntimeHolder
from .loading import load_runtime
from .outputs import PROBABILITIES
from .photos import collect_images, decoded_batches, prepare_photo
from .unknown import UnknownScorer, answer, check_threshold

__all__ = ["DEFAULT_MODEL", "SAMPLE_PHOTOS", "Prediction", "Predictor", "collect_images"]


@dataclass
class Prediction:
    """One photo's answer. `tasks` holds every head's (`models.heads.describe`): for a
    classification head `{"label", "probability", "top_k"}`, for a multilabel head
    `{"tags", "scores"}`. A one-task classifier also fills the top-level `label`,
    `probability` and `top_k` (the first release's answer). `unknown_score` (0-1, higher
    = less like a garment the model knows) and `unknown` (at or above the threshold)
    come from `inference.unknown`; both are None for a model never calibrated."""

    path: str
    label: str | None = None
    probability: float | None = None
    top_k: list[dict] = field(default_factory=list)
    error: str | None = None
    tasks: dict[str, dict] = field(default_factory=dict)
    unknown_score: float | None = None
    unknown: bool | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        out: dict = {"path": self.path}
        if self.label is not None:
            out.update(label=self.label, probability=self.probability, top_k=self.top_k)
        out.update(unknown_score=self.unknown_score, unknown=self.unknown)
        out["tasks"] = self.tasks
        return out


class Predictor(RuntimeHolder):
    """Loads a model once; predicts for paths, bytes or PIL images.

    `model` is anything `models.resolve.resolve_model` accepts: None or 'default', a
    bundled model's name, a model folder or a run folder. `runtime` picks what runs it
    (`inference.loading.load_runtime`: torch, onnxruntime, openvino or auto).
    """

    def __init__(self, model: str | Path | None = None, device: str = "cpu",
                 precision: str | None = None, threads: int = 2,
                 threshold: float | None = None, runtime: str = "auto",
                 unknown_threshold: float | None = None) -> None:
        self.runtime = load_runtime(model, runtime, device=device, precision=precision)
        self.threads = threads
        self.threshold = threshold  # replaces every multilabel head's own thresholds
        # replaces the model's own "not a garment" threshold (`inference.unknown`)
        self.unknown_threshold = check_threshold(unknown_threshold)
        if not self.heads:
            raise FashionLensError(f"{self.spec}: this model has no heads that predict "
                                   "(an embedding-only model: use it for search)")
        self.unknown: UnknownScorer | None = self.unknown_scorer()
        # One run gives every head and what the unknown score reads (the search vector).
        self.outputs = [h.name for h in self.heads]
        if self.unknown is not None:
            self.outputs += [o for o in self.unknown.outputs if o not in self.outputs]

    @property
    def model_dir(self) -> Path:
        return self.runtime.folder

    @property
    def info(self) -> ModelInfo:
        return self.runtime.info

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    @property
    def model_info(self) -> ModelInfo:
        return self.info

    @property
    def heads(self) -> list[HeadSpec]:
        return self.info.scored_heads

    def _prepare(self, source) -> np.ndarray:
        return prepare_photo(source, self.info.preprocess)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.runtime.run(batch, (PROBABILITIES,))[PROBABILITIES]

    def scores(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every head's scores for a batch, by head name (and the search vector when the
        unknown score reads it)."""
        return self.runtime.run(batch, self.outputs)

    def unknown_line(self, threshold: float | None = None) -> float | None:
        """The unknown_score from which a photo counts as not a garment: `threshold` when
        given, else this predictor's override, else the model's calibrated threshold;
        None for a model never calibrated."""
        if self.unknown is None:
            return None
        if threshold is not None:
            return threshold
        return (self.unknown_threshold if self.unknown_threshold is not None
                else self.unknown.threshold)

    def unknown_fields(self, outputs: dict[str, np.ndarray],
                       threshold: float | None = None) -> dict:
        """`unknown_score` and `unknown` of one photo, from its outputs (`scores`' for
        that photo): the one place the CLI, the service and the catalog get them."""
        if self.unknown is None:
            return answer(None, None)
        batch = {name: np.asarray(values)[None] for name, values in outputs.items()}
        score = float(self.unknown.score_outputs(batch)[0])
        return answer(self.unknown, score, self.unknown_line(threshold))

    def _result(self, name: str, scores: dict[str, np.ndarray], top_k: int) -> Prediction:
        tasks = {h.name: describe(h, scores[h.name].tolist(), top_k, self.threshold)
                 for h in self.heads}
        unknown = self.unknown_fields(scores)
        if not self.info.single_label:
            return Prediction(path=name, tasks=tasks, **unknown)
        first = tasks[self.heads[0].name]
        return Prediction(path=name, label=first["label"], probability=first["probability"],
                          top_k=first["top_k"], tasks=tasks, **unknown)

    def predict_one(self, source, top_k: int = 3, tta: bool = False, name: str | None = None
                    ) -> Prediction:
        """Predict one photo; raises ImageError when it cannot be read."""
        label = name or (str(source) if isinstance(source, str | Path) else "<image>")
        if tta:
            img = source if hasattr(source, "mode") else load_image(source, name=label)
            views = self.scores(tta_arrays(img, self.info.preprocess))
            scores = {name: values.mean(0) for name, values in views.items()}
        else:
            batch = self.scores(prepare_photo(source, self.info.preprocess, label)[None])
            scores = {name: values[0] for name, values in batch.items()}
        return self._result(label, scores, top_k)

    def predict_paths(self, paths: Sequence[str | Path], top_k: int = 3, batch_size: int = 32,
                      tta: bool = False) -> Iterator[Prediction]:
        """Yield one Prediction per path, in order; unreadable photos carry an error."""
        if tta:
            for path in paths:
                try:
                    yield self.predict_one(path, top_k, tta=True)
                except ImageError as exc:
                    yield Prediction(path=str(path), error=exc.reason)
            return

        for decoded in decoded_batches(paths, self._prepare, batch_size, self.threads):
            scores = decoded.map(self.scores) or {}
            by_pos = {i: {name: values[row] for name, values in scores.items()}
                      for row, i in enumerate(decoded.rows)}
            for i, path in enumerate(decoded.sources):
                if i in by_pos:
                    yield self._result(str(path), by_pos[i], top_k)
                else:
                    yield Prediction(path=str(path), error=decoded.errors[i].reason)


def tta_outputs(runtime: Runtime, dataset, outputs: list[str]
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Named outputs averaged over test-time views for every readable photo of a
    PhotoDataset, and the rows they belong to."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    rows = []
    for index in range(len(dataset)):
        try:
            img = dataset.image(index)
        except ImageError as exc:
            dataset.record_skipped([exc])
            continue
        views = tta_arrays(img, runtime.preprocess)
        for name, values in runtime.run(views, outputs).items():
            parts[name].append(values.mean(0))
        rows.append(index)
    return {name: np.stack(v) if v else np.zeros((0, 0)) for name, v in parts.items()}, \
        np.asarray(rows, dtype=np.int64)
