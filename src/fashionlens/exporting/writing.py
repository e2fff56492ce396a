"""Writing an export where `inference.export_cache` finds it: built aside in a private
folder, listed in its manifest and renamed into place, so a half-written export never
exists under its name."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelError
from ..inference.export_cache import MANIFEST, beside_path, cached_path, is_bundled


def exported_path(folder: str | Path, fmt: str) -> Path:
    """Where a new `fmt` export of the model in `folder` is written: beside a user's
    writable model, else in the cache (the installed package is left as shipped)."""
    folder = Path(folder).resolve()
    if not is_bundled(folder) and os.access(folder, os.W_OK):
        return beside_path(folder, fmt)
    return cached_path(folder, fmt)


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
