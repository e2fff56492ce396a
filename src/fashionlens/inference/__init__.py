"""Using trained models: the Predictor and the bundled default model.

Two layers live here, with `fashionlens.exporting` (what builds exports) between them:
below it, what runs a model (`runtime`, `backends`, `outputs`, `export_cache` reading
an export, `int8`, `photos`, `unknown`, `holder`); above it, what loads one for a user,
exporting on first use (`loading`, `predictor`). tests/test_import_structure.py keeps
the arrows pointing down.

The names below load on first use (module `__getattr__`), so that importing a lower
module of this package does not load the Predictor and what it loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_MODEL": ".predictor",
    "SAMPLE_PHOTOS": ".predictor",
    "Prediction": ".predictor",
    "Predictor": ".predictor",
    "collect_images": ".predictor",
}

__all__ = ["DEFAULT_MODEL", "SAMPLE_PHOTOS", "Prediction", "Predictor", "collect_images"]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from .predictor import DEFAULT_MODEL, SAMPLE_PHOTOS, Prediction, Predictor, collect_images


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)
