"""Dynamic micro-batching: requests that arrive together share one model call.

Handlers `await batcher.predict(pixels)`. One collector task on the event loop takes the
oldest waiting image, adds whatever else is waiting up to `max_batch_size`, waits at most
`max_latency_ms` for more when that is above zero, and runs the batch on a single model thread,
so the event loop never blocks on the model and the runtime is never called concurrently.

With `max_latency_ms` 0 nothing ever waits for company: a request alone is run at once, and
requests that arrived while the model was busy form the next batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

logger = logging.getLogger("imgclf.serve")

# Called after each model call with (batch size, seconds the call took).
BatchObserver = Callable[[int, float], None]


class BatcherClosed(RuntimeError):
    """The batcher was stopped, so no new image is accepted."""


class MicroBatcher:
    """Group single images into batches for `predict_batch` and return each image's output row.

    Args:
        predict_batch: called on the model thread with uint8 pixels (N, height, width, 3);
            returns one output row per image, shape (N, classes).
        max_batch_size: most images in one call, >= 1.
        max_latency_ms: how long the first image of a batch waits for others; 0 never waits.
        on_batch: optional observer called after each call with its size and duration.
    """

    def __init__(self, predict_batch: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 8,
                 max_latency_ms: float = 0.0, on_batch: Optional[BatchObserver] = None):
        self._predict_batch = predict_batch
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_latency_s = max(0.0, float(max_latency_ms)) / 1000.0
        self._on_batch = on_batch
        self._queue: Optional[asyncio.Queue] = None
        self._collector: Optional[asyncio.Task] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._closed = False

    def start(self) -> None:
        """Start the collector task; call from the event loop that will serve requests."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgclf-model")
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name="imgclf-batcher")

    @property
    def waiting(self) -> int:
        """Images queued and not yet in a model call."""
        return self._queue.qsize() if self._queue is not None else 0

    async def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Queue one image (height, width, 3) and return its output row when its batch is done.

        Raises:
            BatcherClosed: after `stop`.
            Exception: whatever the model call raised, for every image of that batch.
        """
        if self._closed or self._queue is None:
            raise BatcherClosed("the model is not accepting requests (the server is stopping)")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((pixels, future))
        return await future

    async def stop(self) -> None:
        """Finish every queued image, then stop the collector and the model thread."""
        self._closed = True
        if self._queue is not None and self._collector is not None:
            await self._queue.join()
            self._collector.cancel()
            try:
                await self._collector
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            await self._fill(batch)
            # A request cancelled by its timeout while queued needs no model time.
            live = [(pixels, future) for pixels, future in batch if not future.cancelled()]
            try:
                if live:
                    await self._run(loop, live)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _fill(self, batch: list) -> None:
        while len(batch) < self.max_batch_size and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if self.max_latency_s <= 0 or len(batch) >= self.max_batch_size:
            return
        deadline = time.monotonic() + self.max_latency_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                return

    async def _run(self, loop: asyncio.AbstractEventLoop, live: list) -> None:
        started = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self._executor, self._predict_batch,
                                                 np.stack([pixels for pixels, _ in live]))
        except Exception as error:  # handed to every waiting request, which logs it with its id
            for _, future in live:
                if not future.done():
                    future.set_exception(error)
            return
        if self._on_batch is not None:
            self._on_batch(len(live), time.perf_counter() - started)
        for (_, future), row in zip(live, outputs):
            if not future.done():
                future.set_result(row)
