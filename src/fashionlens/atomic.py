"""Files written all at once or not at all: the one way fashionlens replaces a file.

A temporary file is written beside the target, flushed to disk, then renamed over it, so
a reader (another process, the next run after a crash or a kill) sees the old file or the
new one, never half of one; on any error the temporary file is removed and the target is
left as it was.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(path: str | Path, *, text: bool = False, keep_mode: bool = False,
                **open_kwargs: Any) -> Iterator[IO]:
    """A file handle to write `path`'s new content into (binary unless `text`; other
    `open` arguments such as `encoding` or `newline` pass through). `keep_mode` gives the
    new file the permissions of the one it replaces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer (process and call), created exclusively: concurrent writers of one
    # target never share a temporary file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x" if text else "xb", **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if keep_mode and path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """JSON as the review queue and its decisions are written (indented, UTF-8)."""
    write_bytes_atomic(path, (json.dumps(payload, indent=1, ensure_ascii=False) + "\n").encode())
