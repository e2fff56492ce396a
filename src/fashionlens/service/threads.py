"""A one-thread executor whose thread never holds up the process's exit.

`concurrent.futures.ThreadPoolExecutor` joins its worker threads when the interpreter
exits, so one long job (a forward pass, a catalog write stuck behind a huge request)
kept `fashionlens serve` alive after SIGTERM. The service's inference and catalog
threads run here instead, on a daemon thread: shutting down stops taking work, cancels
what is queued and waits for the running job only as long as it is told to. A catalog
write cut off by the process's exit is safe: SQLite rolls back an unfinished
transaction, and the index file is replaced atomically.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_STOP = object()


class DaemonThreadExecutor(Executor):
    """Runs submitted callables one at a time, in order, on one daemon thread."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            future: Future = Future()
            self._jobs.put((future, fn, args, kwargs))
            return future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False,
                 timeout: float | None = None) -> bool:
        """Stop taking work; with `wait`, wait up to `timeout` seconds (None: for ever)
        for the thread to finish. Returns whether it has finished."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if cancel_futures:
                    while True:
                        try:
                            job = self._jobs.get_nowait()
                        except queue.Empty:
                            break
                        if job is not _STOP:
                            job[0].cancel()
                self._jobs.put(_STOP)
        if wait and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()
