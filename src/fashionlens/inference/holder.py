"""What Predictor and Embedder share: the runtime they hold, under their public names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.preprocess import Preprocess, eval_array

if TYPE_CHECKING:
    from PIL import Image

    from .backends import Runtime
    from .unknown import UnknownScorer


class RuntimeHolder:
    """What a runtime holds, under the names its users (Predictor, Embedder) expose."""

    runtime: Runtime

    @property
    def model(self) -> Any:
        """The torch module (None behind an exported backend)."""
        return getattr(self.runtime, "model", None)

    @property
    def preprocess(self) -> Preprocess:
        return self.runtime.preprocess

    def transform(self, img: Image.Image) -> np.ndarray:
        """A decoded photo as this model's input (3 x H x W float32)."""
        return eval_array(img, self.runtime.preprocess)

    @property
    def spec(self) -> str:
        """How to name the model again: bundled models by name, not where installed."""
        return self.runtime.spec

    @property
    def fingerprint(self) -> str:
        return self.runtime.fingerprint

    @property
    def device(self) -> Any:
        return self.runtime.device

    @property
    def precision(self) -> str:
        """'bf16' or 'fp32': what the forward passes run in."""
        return self.runtime.precision

    def unknown_scorer(self) -> UnknownScorer | None:
        """The model's calibrated "not a garment" scorer (`inference.unknown`); None for a
        model never calibrated, a bare backbone, or a runtime lacking what it reads."""
        from .unknown import scorer_for

        info = getattr(self.runtime, "info", None)
        if info is None:
            return None
        folder = getattr(self.runtime, "folder", None)
        scorer = scorer_for(info, str(folder / "model.json") if folder else "model.json")
        if scorer is None or not set(scorer.outputs) <= set(self.runtime.outputs):
            return None
        return scorer
