"""Where a model's exports live, and finding a current one: no torch needed.

An export sits beside its model (`<model folder>/export/<format>/`; the bundled models
ship theirs there) or, for a folder we may not write to, in a user cache folder
(`$FASHIONLENS_CACHE` or `~/.cache/fashionlens/`, then `<model name>-<weights digest>/`).
An export's `export.json` records the weights digest and what shapes the graph; one that
no longer matches its model is stale and is made again (`inference.export`, which needs
torch) on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from ..errors import ModelError
from ..models.info import ModelInfo, read_info, weights_digest
from ..models.resolve import BUNDLED_DIR

log = logging.getLogger(__name__)

FORMATS = ("onnx", "openvino", "openvino-int8")  # the last: inference.quantize
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
    key = f"{folder.name}-{weights_digest(folder)}"
    if not is_bundled(folder):  # two read-only folders may share a name and weights
        key += "-" + hashlib.sha256(str(folder).encode()).hexdigest()[:8]
    return cache_root() / key / fmt


def exported_path(folder: str | Path, fmt: str) -> Path:
    """Where a new `fmt` export of the model in `folder` is written: beside a user's
    writable model, else in the cache (the installed package is left as shipped)."""
    folder = Path(folder).resolve()
    if not is_bundled(folder) and os.access(folder, os.W_OK):
        return beside_path(folder, fmt)
    return cached_path(folder, fmt)


def graph_key(info: ModelInfo) -> str:
    """What shapes the exported graph besides the weights: the architecture, each head's
    name, kind and size, the embedding settings and the input size (not thresholds)."""
    described = {"architecture": info.architecture,
                 "heads": [[h.name, h.kind, len(h.classes)] for h in info.heads],
                 "embedding": info.embedding, "input": list(info.preprocess.shape)}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def is_current(directory: Path, folder: Path, fmt: str, digest: str | None = None) -> bool:
    """Whether `directory` holds a `fmt` export of the model in `folder` as it is now."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (manifest.get("format") == fmt
            and manifest.get("weights_digest") == (digest or weights_digest(folder))
            and manifest.get("graph_key") == graph_key(read_info(folder)))


def find_exported(folder: str | Path, fmt: str) -> Path | None:
    """A current `fmt` export of the model in `folder`, beside it or cached; else None."""
    folder = Path(folder).resolve()
    digest = weights_digest(folder)
    for candidate in (beside_path(folder, fmt), cached_path(folder, fmt)):
        if is_current(candidate, folder, fmt, digest):
            return candidate
    return None


def ensure_exported(folder: str | Path, fmt: str) -> Path:
    """The current `fmt` export of the model in `folder`, made first if missing or stale
    (which needs torch). A file lock keeps two processes from exporting one model at once."""
    folder = Path(folder).resolve()
    found = find_exported(folder, fmt)
    if found is not None:
        return found
    if fmt == "openvino-int8":  # calibrated on the user's photos: never made implicitly
        raise ModelError(f"{folder}: has no current int8 export; make one with `fashionlens "
                         "export MODEL --format openvino-int8 --calibrate PHOTOS`")
    if importlib.util.find_spec("torch") is None:
        raise ModelError(f"{folder}: has no current {fmt} export, and making one needs "
                         "torch, which this install lacks: pip install 'fashionlens[train]' "
                         "(or run `fashionlens export` where torch is installed and copy "
                         f"the {EXPORT_DIR}/ folder into the model folder)")
    target = exported_path(folder, fmt)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"{target.parent}: cannot create the export folder ({exc}); set "
                         f"{CACHE_ENV} to a writable folder") from exc
    from .export import export_model

    with FileLock(str(target.parent / f".{fmt}.lock")):
        if not is_current(target, folder, fmt):
            log.info("exporting %s to %s (first use; cached in %s)", folder, fmt, target)
            export_model(folder, fmt, target)
    return target


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def publish(tmp: Path, target: Path) -> None:
    """Rename the finished export into place, replacing an older export there."""
    umask = _umask()
    for path in tmp.iterdir():
        os.chmod(path, 0o666 & ~umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    if not target.exists():
        tmp.replace(target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    target.replace(old)
    tmp.replace(target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def building(target: Path) -> Iterator[Path]:
    """A private folder beside `target` to build an export in, removed if the build fails:
    a half-written export never exists under the target's name."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as exc:
        raise ModelError(f"{target}: cannot write the export there ({exc})") from exc
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def finish(tmp: Path, target: Path, manifest: dict) -> None:
    """List the built files in the manifest, write it, and move the export into place."""
    manifest["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())
                         if p.name != MANIFEST}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    publish(tmp, target)
