"""Give freed memory back to the system once a burst of requests is over.

Under load, photos are decoded on several threads and batches of up to `max_batch`
tensors pass through the model; glibc keeps the freed memory in its per-thread arenas,
so after a busy minute the server stayed about 15 % larger than at the start although
nothing was still in use. When the service has handled requests and then been idle for
`idle_s` seconds, `malloc_trim(0)` hands those free pages back (once per idle period; a
no-op where the C library is not glibc).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None on other C libraries."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class IdleTrimmer:
    """Calls `trim` after `activity()` has stopped changing for `idle_s` seconds."""

    def __init__(self, activity: Callable[[], int], idle_s: float = 5.0,
                 trim: Callable[[], None] | None = None) -> None:
        self.activity = activity
        self.idle_s = idle_s
        self.trim = trim if trim is not None else _malloc_trim()
        self.trims = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.trim is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch(),
                                                                name="memory-trim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        seen = self.activity()
        trimmed = True  # nothing to give back before the first request
        while True:
            await asyncio.sleep(self.idle_s)
            now = self.activity()
            if now != seen:
                seen, trimmed = now, False
            elif not trimmed:
                trimmed = True
                await asyncio.get_running_loop().run_in_executor(None, self._trim_once)

    def _trim_once(self) -> None:
        assert self.trim is not None
        try:
            self.trim()
            self.trims += 1
        except Exception:  # noqa: BLE001 - trimming is an optimisation, never an error
            log.debug("malloc_trim failed", exc_info=True)
