"""A current export of a model, made on first use: what `inference.loading` runs an
exported backend from. No torch unless one has to be made (`exporting.export`)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from filelock import FileLock

from ..errors import ModelError
from ..inference.export_cache import CACHE_ENV, EXPORT_DIR, find_exported, is_current
from .writing import exported_path

log = logging.getLogger(__name__)


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
    from .export import export_model  # torch: imported only to make one

    with FileLock(str(target.parent / f".{fmt}.lock")):
        if not is_current(target, folder, fmt):
            log.info("exporting %s to %s (first use; cached in %s)", folder, fmt, target)
            export_model(folder, fmt, target)
    return target
