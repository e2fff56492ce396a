"""fashionlens: garment classifiers trained on a shop's own photos.

The command line and (later) the web service are thin layers over this API:

    from fashionlens import load_config, train, Predictor
    result = train(load_config("configs/clothing10.yaml"))
    Predictor(result.model_dir).predict_one("photo.jpg")
"""

from .config import RunConfig, load_config
from .errors import FashionLensError
from .evaluation.evaluate import evaluate
from .inference import DEFAULT_MODEL, Prediction, Predictor
from .models import create_model, load_model
from .training.run import RunResult, train

__version__ = "0.1.0"

__all__ = ["DEFAULT_MODEL", "FashionLensError", "Prediction", "Predictor", "RunConfig",
           "RunResult", "create_model", "evaluate", "load_config", "load_model", "train"]
