"""Handing freed memory back to the operating system during long passes over photos.

Why: glibc's allocator keeps the memory a process frees for reuse, and a pass over tens of
thousands of photos (decode, letterbox, a batch tensor, the model's activations, each
freed again) leaves it holding far more than it uses. Measured (`run_dataset` over the
29,213 training photos of configs/fashion-stage2.yaml, the colour statistics only, AMD
EPYC, 2 cores): peak resident memory 11.9 GB, and 11.3 GB still held at the end, for 30 MB
of results (`refit-heads` peaked at 11.3 GB); with `malloc_trim` every `TRIM_EVERY`
batches, 1.9 GB, and the pass took 117 s instead of 131 s.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

TRIM_EVERY = 20  # batches between trims


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_freed_memory() -> bool:
    """Return the allocator's free pages to the OS (glibc); False where there is no way."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
