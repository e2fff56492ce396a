"""fashionlens: garment classifiers trained on a shop's own photos.

The command line and the web service are thin layers over this API:

    from fashionlens import load_config, train, Predictor
    result = train(load_config("configs/clothing10.yaml"))
    Predictor(result.model_dir).predict_one("photo.jpg")

The names below load on first use (module `__getattr__`), so that `import fashionlens`,
and with it `fashionlens --help`, does not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

__version__ = "0.1.0"

# Public name -> the module (relative to this package) that defines it.
_EXPORTS = {
    "DEFAULT_MODEL": ".models.resolve",
    "FashionLensError": ".errors",
    "Prediction": ".inference.predictor",
    "Predictor": ".inference.predictor",
    "RunConfig": ".config",
    "RunResult": ".training.run",
    "create_model": ".models.registry",
    "evaluate": ".evaluation.evaluate",
    "load_config": ".config",
    "load_model": ".models.artifact",
    "train": ".training.run",
}

__all__ = ["DEFAULT_MODEL", "FashionLensError", "Prediction", "Predictor", "RunConfig",
           "RunResult", "create_model", "evaluate", "load_config", "load_model", "train"]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from .config import RunConfig, load_config
    from .errors import FashionLensError
    from .evaluation.evaluate import evaluate
    from .inference.predictor import Prediction, Predictor
    from .models.artifact import load_model
    from .models.registry import create_model
    from .models.resolve import DEFAULT_MODEL
    from .training.run import RunResult, train


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
