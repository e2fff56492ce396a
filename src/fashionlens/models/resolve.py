"""One way to name a model, resolved in one place.

Every command and API that takes a model accepts the same spellings:

- `default` (or nothing): the bundled default model;
- the name of a bundled model (a folder under `assets/models/`, e.g. `clothing10`);
- a model folder (holding `model.json`), or a run folder whose `model/` holds one;
- where a bare network will do (embeddings, metric learning), a backbone name such as
  `efficientnet_lite0` or any timm architecture.

A reference records a portable name: bundled models by name (not by where the package
happens to be installed), folders by their resolved path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_DIR = ASSETS / "models"
DEFAULT_NAME = "fashion"
DEFAULT_MODEL = BUNDLED_DIR / DEFAULT_NAME
SAMPLE_PHOTOS = ASSETS / "samples"
# The backbone used where a bare network will do and the bundled model is not installed.
DEFAULT_BACKBONE = "efficientnet_lite0"
# The artifact's description file, defined here (no torch) for models.artifact too.
META_FILE = "model.json"


@dataclass(frozen=True)
class ModelRef:
    """A resolved model name: a saved model folder, or a backbone to build."""

    name: str  # what to record: "default", a bundled name, a folder path, a backbone name
    folder: Path | None = None  # the artifact folder (None for a backbone)

    @property
    def is_backbone(self) -> bool:
        return self.folder is None


def bundled_models() -> dict[str, Path]:
    """The models shipped inside the package, by name."""
    if not BUNDLED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(BUNDLED_DIR.iterdir()) if (p / META_FILE).is_file()}


def _looks_like_path(spec: str) -> bool:
    return any(sep in spec for sep in ("/", "\\")) or spec.startswith(("~", "."))


def resolve_model(spec: str | Path | None = None, *, backbone: bool = False,
                  flag: str = "--model") -> ModelRef:
    """Resolve `spec` to a model folder (or, with `backbone=True`, a backbone name).

    Raises ModelError naming `flag` and what was typed when nothing matches.
    """
    text = "default" if spec is None or str(spec) in ("", "default") else str(spec)
    bundled = bundled_models()
    if text == "default":
        if DEFAULT_NAME in bundled:
            return ModelRef("default", bundled[DEFAULT_NAME])
        if backbone:  # an install without the bundled model still embeds
            return ModelRef(DEFAULT_BACKBONE)
        raise ModelError(f"{flag} default: the bundled model is not installed "
                         f"({DEFAULT_MODEL / META_FILE} is missing)")
    folder = Path(text).expanduser()
    if folder.is_dir():
        for candidate in (folder, folder / "model"):
            if (candidate / META_FILE).is_file():
                resolved = candidate.resolve()
                if resolved == bundled.get(DEFAULT_NAME, DEFAULT_MODEL).resolve():
                    return ModelRef("default", resolved)
                by_path = {p.resolve(): n for n, p in bundled.items()}
                return ModelRef(by_path.get(resolved, str(resolved)), resolved)
        raise ModelError(f"{flag} {text}: not a fashionlens model folder (no {META_FILE}, "
                         f"nor model/{META_FILE})")
    if text in bundled:
        return ModelRef(text, bundled[text])
    if _looks_like_path(text) or text.endswith(".json"):
        raise ModelError(f"{flag} {text}: no such model folder")
    if backbone:
        return ModelRef(text)
    names = ", ".join(["default", *bundled]) or "default"
    raise ModelError(f"{flag} {text}: no such model folder, and not a bundled model "
                     f"({names})")
