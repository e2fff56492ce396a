"""Copy a trained run into the package as a bundled model (fp16 weights) with its card.

    python tools/bundle_model.py runs/clothing10-final --name clothing10
    python tools/bundle_model.py runs/products-cpu --name products
    python tools/bundle_model.py runs/outfits-cpu --name outfits
    python tools/bundle_model.py runs/fashion-final --name fashion --canvases 288x192,168x224

Writes src/fashionlens/assets/models/NAME/ with model.safetensors (half precision, about
8 MB for EfficientNet-Lite0), model.json, the model card (README.md) with the run summary
it was written from (training.json) and the run's confusion matrices and training curves.
`--model NAME` then finds it, and `serve` loads it. A text alignment (`train-text`) is kept
when the new model makes the same search vectors as the run's model or the bundle it
replaces (only scoring heads were refit); otherwise the old one is removed and
`train-text` must run again.

The card's photo counts, time and memory come from the model folder's training.json (a
training run writes it; train-embedding and refit-heads carry their base model's), else
the run's metrics.json, or `--summary FILE` (a metrics.json or a training.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from fashionlens.data.preprocess import canvas_shape
from fashionlens.models import load_model, save_model
from fashionlens.models.card import stored_summary, write_model_card
from fashionlens.models.info import update_info, vector_names
from fashionlens.models.resolve import BUNDLED_DIR, DEFAULT_MODEL
from fashionlens.search.alignment import ALIGNMENT_FILE, carry_alignment, valid_alignment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the run folder (runs/NAME)")
    parser.add_argument("--name", required=True,
                        help="the bundled model's name (its folder under assets/models; "
                             f"{DEFAULT_MODEL.name!r} is the default model)")
    parser.add_argument("--summary", type=Path, default=None,
                        help="the run summary for the card (a metrics.json or a model's "
                             "training.json); default: the model folder's training.json, "
                             "else the run's metrics.json")
    parser.add_argument("--canvases", default=None, metavar="HxW,...",
                        help="further input shapes for photos of other aspect ratios "
                             "(`Preprocess.canvases`, e.g. 288x192,168x224); 'none' drops "
                             "them; default: the model's own")
    args = parser.parse_args()
    run = Path(args.run)
    target = BUNDLED_DIR / args.name
    model, info = load_model(run / "model")
    info.name = args.name
    if args.canvases is not None:
        info.preprocess = replace(info.preprocess, canvases=parse_canvases(args.canvases))
    # read before the target is replaced: --summary may be the bundle's own training.json
    summary = run_summary(run, args.summary)
    # what stays where the vectors stay (a refit of scoring heads): a text alignment (the
    # run's own, which refit-heads carries, else the replaced bundle's), and the names
    # catalogs made with either recorded for those vectors
    sources = [folder for folder in (run / "model", target) if (folder / "model.json").is_file()]
    alignments = [valid_alignment(folder) for folder in sources]
    earlier = {folder: vector_names(folder) for folder in sources}
    save_model(model, info, target, half=True)
    vectors, whole = vector_names(target)[:2]
    same = [n for names in earlier.values() if names[0] == vectors for n in names[1:]]
    kept = list(dict.fromkeys(n for n in same if n != whole))
    info.earlier_fingerprints = {"vectors": vectors, "fingerprints": kept} if kept else None
    update_info(target, {"earlier_fingerprints": info.earlier_fingerprints})
    write_model_card(target, info, summary)
    if any(carry_alignment(a, target) for a in alignments):
        print(f"kept the text alignment: {target} makes the same search vectors")
    elif (target / ALIGNMENT_FILE).is_file():  # the old model's: it would mislead
        (target / ALIGNMENT_FILE).unlink()
        print(f"removed {target / ALIGNMENT_FILE}: the search vectors changed; run "
              f"`fashionlens train-text ... --model {args.name}` again")
    for figure in sorted(run.glob("confusion*.png")) + [run / "curves.png"]:
        if figure.is_file():
            shutil.copy2(figure, target / figure.name)
    print(f"bundled {run} as {target}")


def parse_canvases(text: str) -> tuple[tuple[int, int], ...]:
    """'288x192,168x224' -> ((288, 192), (168, 224)); 'none' -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(canvas_shape(part.lower().split("x")) for part in text.split(","))
    except ValueError as exc:
        raise SystemExit(f"--canvases {text}: {exc} (write HEIGHTxWIDTH,...)") from None


def run_summary(run: Path, given: Path | None) -> dict | None:
    """What the card reads about training: `given`, else the summary kept in the model
    folder (a training run writes it; train-embedding and refit-heads carry their base's,
    while their own metrics.json is about the embedding or the refit), else the run's
    metrics.json; None when none was recorded."""
    if given is not None:
        return json.loads(given.read_text())
    stored = stored_summary(run / "model")
    if stored is not None:
        return stored
    if (run / "metrics.json").is_file():
        return json.loads((run / "metrics.json").read_text())
    return None


if __name__ == "__main__":
    main()
