"""Copy a trained run into the package as a bundled model (fp16 weights) with its card.

    python tools/bundle_model.py runs/clothing10-final            # as clothing10 (default)
    python tools/bundle_model.py runs/products-cpu --name products
    python tools/bundle_model.py runs/outfits-cpu --name outfits

Writes src/fashionlens/assets/models/NAME/ with model.safetensors (half precision, about
8 MB for EfficientNet-Lite0), model.json, the model card (README.md) and the run's
confusion matrices and training curves. `--model NAME` then finds it, and `serve` loads it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from fashionlens.models import load_model, save_model
from fashionlens.models.card import write_model_card
from fashionlens.models.resolve import BUNDLED_DIR, DEFAULT_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the run folder (runs/NAME)")
    parser.add_argument("--name", default=DEFAULT_MODEL.name, help="the bundled model's name")
    args = parser.parse_args()
    run = Path(args.run)
    target = BUNDLED_DIR / args.name
    model, info = load_model(run / "model")
    info.name = args.name
    save_model(model, info, target, half=True)
    summary = json.loads((run / "metrics.json").read_text()) \
        if (run / "metrics.json").is_file() else None
    write_model_card(target, info, summary)
    for figure in sorted(run.glob("confusion*.png")) + [run / "curves.png"]:
        if figure.is_file():
            shutil.copy2(figure, target / figure.name)
    print(f"bundled {run} as {target}")


if __name__ == "__main__":
    main()
