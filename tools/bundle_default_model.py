"""Copy a trained run into the package as the bundled default model (fp16 weights).

    python tools/bundle_default_model.py runs/clothing10-final

Writes src/fashionlens/assets/models/clothing10/ with model.safetensors (half precision,
about 8 MB), model.json, and the run's confusion matrix and training curves.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from fashionlens.inference.predictor import DEFAULT_MODEL
from fashionlens.models import load_model, save_model


def main(run_dir: str) -> None:
    run = Path(run_dir)
    model, info = load_model(run / "model")
    info.name = DEFAULT_MODEL.name
    save_model(model, info, DEFAULT_MODEL, half=True)
    for figure in ("confusion.png", "curves.png"):
        if (run / figure).is_file():
            shutil.copy2(run / figure, DEFAULT_MODEL / figure)
    print(f"bundled {run} as {DEFAULT_MODEL}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
