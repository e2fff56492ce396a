"""Where a model's exports live, and finding a current one to run: no torch needed.

An export sits beside its model (`<model folder>/export/<format>/`; the bundled models
ship theirs there) or, for a folder we may not write to, in a user cache folder
(`$FASHIONLENS_CACHE` or `~/.cache/fashionlens/`, then `<model name>-<weights digest>/`).
An export's `export.json` records the weights digest and what shapes the graph; one that
no longer matches its model is stale. Writing one, and making a missing or stale one on
first use (which needs torch), is `fashionlens.exporting`'s: this module only reads.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import ModelError
from ..models.info import WEIGHTS_FILE, ModelInfo, read_info, weights_digest
from ..models.resolve import BUNDLED_DIR

FORMATS = ("onnx", "openvino", "openvino-int8")  # the last: exporting.quantize
CACHE_ENV = "FASHIONLENS_CACHE"
EXPORT_DIR = "export"
MANIFEST = "export.json"
ONNX_FILE = "model.onnx"
OPENVINO_FILE = "model.xml"  # its weights: model.bin beside it
INPUT_NAME = "images"


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ModelError(f"--format {fmt}: not one of {', '.join(FORMATS)}")


def read_manifest(directory: Path) -> dict:
    """An export's `export.json`; ModelError naming the file when missing or unreadable."""
    path = Path(directory) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{directory}: not an exported model (no {MANIFEST})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: unreadable ({exc})") from exc


def model_digest(folder: str | Path) -> str:
    """The digest of the model's weights that a current export records; ModelError naming
    the file when the weights are missing or unreadable: an export cannot be checked
    against weights that are gone, nor the vectors it makes named (`fingerprint_of`)."""
    try:
        return weights_digest(folder)
    except OSError as exc:
        what = "is missing" if isinstance(exc, FileNotFoundError) else \
            f"cannot be read ({exc.strerror or exc})"
        raise ModelError(f"{folder}: weights file {WEIGHTS_FILE} {what}; an export in "
                         f"{EXPORT_DIR}/ is run only as a copy of those weights: restore "
                         f"{Path(folder) / WEIGHTS_FILE}") from None


def cache_root() -> Path:
    """Where exports of models we may not write beside go: $FASHIONLENS_CACHE or
    ~/.cache/fashionlens."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fashionlens"


def is_bundled(folder: Path) -> bool:
    return Path(folder).resolve().parent == BUNDLED_DIR.resolve()


def beside_path(folder: str | Path, fmt: str) -> Path:
    """The export folder inside the model folder (where the bundled models ship theirs)."""
    check_format(fmt)
    return Path(folder).resolve() / EXPORT_DIR / fmt


def cached_path(folder: str | Path, fmt: str) -> Path:
    """The export folder in the user cache, keyed by the model's name and weights."""
    check_format(fmt)
    folder = Path(folder).resolve()
    key = f"{folder.name}-{model_digest(folder)}"
    if not is_bundled(folder):  # two read-only folders may share a name and weights
        key += "-" + hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    return cache_root() / key / fmt


def graph_key(info: ModelInfo) -> str:
    """What shapes the exported graph besides the weights: the architecture, each head's
    name, kind and size, the embedding settings and the input size (not thresholds)."""
    described = {"architecture": info.architecture,
                 "heads": [[h.name, h.kind, len(h.classes)] for h in info.heads],
                 "embedding": info.embedding, "input": list(info.preprocess.shape)}
    if info.preprocess.canvases:  # (models without them keep the keys they had)
        described["canvases"] = [list(c) for c in info.preprocess.canvases]
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def is_current(directory: Path, folder: Path, fmt: str, digest: str | None = None) -> bool:
    """Whether `directory` holds a `fmt` export of the model in `folder` as it is now."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (manifest.get("format") == fmt
            and manifest.get("weights_digest") == (digest or model_digest(folder))
            and manifest.get("graph_key") == graph_key(read_info(folder)))


def find_exported(folder: str | Path, fmt: str) -> Path | None:
    """A current `fmt` export of the model in `folder`, beside it or cached; else None."""
    folder = Path(folder).resolve()
    digest = model_digest(folder)
    for candidate in (beside_path(folder, fmt), cached_path(folder, fmt)):
        if is_current(candidate, folder, fmt, digest):
            return candidate
    return None
