"""The one ending every benchmark shares: its JSON printed, and written where --out says."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out: Path | None = None) -> None:
    """Print `result` as indented JSON; with `out`, write the same text there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if out is not None:
        Path(out).write_text(text + "\n", encoding="utf-8")


def thresholds_origin(metrics: dict | None, head: str) -> str:
    """Which photos a model's tag thresholds were tuned on: whether its figures at those
    thresholds on the validation photos are held out or flattering."""
    refit = ((metrics or {}).get("refit") or {}).get(head) or {}
    tuned_on = (refit.get("decisions") or {}).get("thresholds_from")
    if refit.get("kept") and tuned_on:
        return f"{tuned_on} (refit-heads): held out from the validation photos"
    return "the validation photos (training's last step): not held out"
