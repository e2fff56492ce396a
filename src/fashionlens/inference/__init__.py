"""Using trained models: the Predictor and the bundled default model."""

from .predictor import DEFAULT_MODEL, SAMPLE_PHOTOS, Prediction, Predictor, collect_images

__all__ = ["DEFAULT_MODEL", "SAMPLE_PHOTOS", "Prediction", "Predictor", "collect_images"]
