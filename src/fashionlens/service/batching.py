"""Micro-batching: requests that arrive within a few milliseconds share one forward pass.

On a CPU a batch of 8 photos costs far less than 8 single passes, and while one batch
runs the next one fills up, so under load the batch size grows by itself and latency
stays flat. The forward pass runs on a dedicated executor (one thread: the model already
uses every core), never on the event loop.

The worker task is created per event loop on first use, so the batcher works the same
under uvicorn and under a test client that starts its own loop.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")


class MicroBatcher(Generic[In, Out]):
    """Collects submitted items into batches for `run_batch(items) -> results`.

    `run_batch` gets a list and returns a list of the same length, in order. If it
    raises, every request of that batch gets the exception.
    """

    def __init__(self, run_batch: Callable[[list[In]], Sequence[Out]], executor: Executor,
                 *, max_batch: int = 16, max_wait_ms: float = 4.0, name: str = "batch") -> None:
        self.run_batch = run_batch
        self.executor = executor
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.name = name
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Queue] = (
            weakref.WeakKeyDictionary())
        self._tasks: set[asyncio.Task] = set()
        # Counters for /readyz and the load test: how well requests are being grouped.
        self.batches = 0
        self.items = 0

    @property
    def mean_batch(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    def _queue(self) -> asyncio.Queue:
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = asyncio.Queue()
            task = loop.create_task(self._worker(queue), name=f"{self.name}-batcher")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return queue

    async def submit(self, item: In) -> Out:
        """Queue one item and wait for its result."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue().put((item, future))
        return await future

    async def _collect(self, queue: asyncio.Queue) -> list[tuple[Any, asyncio.Future]]:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _worker(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(queue)
            live = [(item, fut) for item, fut in batch if not fut.done()]  # skip cancelled
            if not live:
                continue
            try:
                results = await loop.run_in_executor(
                    self.executor, self.run_batch, [item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"{self.name}: {len(results)} results for "
                                       f"{len(live)} items")
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                log.exception("%s: batch of %d failed", self.name, len(live))
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(live)
            for (_, fut), result in zip(live, results, strict=True):
                if not fut.done():
                    fut.set_result(result)
