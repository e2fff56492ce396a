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
