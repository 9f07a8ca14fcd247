"""An in-process micro-batcher: single items from concurrent requests run as one ORT call.

Two knobs, each named for the limit it sets (BentoML's adaptive batching): `max_batch_size`,
the most items in one call, and `max_wait_ms`, the longest the first item of a batch waits
for company. The wait is adaptive: a batch always takes what is already queued, and it only
waits for more when the last batch held several items, i.e. when requests are arriving
concurrently. A lone client (concurrency 1) therefore never pays the delay, and under load the
queue fills while ORT runs the previous batch, so batches are full anyway. The queue in front is bounded; when it is full the caller gets `Overloaded`
(the HTTP layer answers 503 with Retry-After) instead of waiting without end. Each item
carries its own future, so every caller gets its own row back whatever the order.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("histoserve.batching")

RunBatch = Callable[[np.ndarray], dict[str, np.ndarray]]
# Called after every batch with (batch size, seconds the ORT call took).
OnBatch = Callable[[int, float], None]


class Overloaded(RuntimeError):
    """The queue cannot take the items now; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future


class MicroBatcher:
    def __init__(self, run_batch: RunBatch, *, max_batch_size: int, max_wait_ms: float, max_queue: int,
                 on_batch: OnBatch | None = None, on_depth: Callable[[int], None] | None = None):
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1 and max_wait_ms >= 0")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_queue = max_queue
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task | None = None
        self._last_batch_seconds = 0.0
        self._last_batch_size = 0

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the worker on the running event loop (call from the lifespan)."""
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._worker = asyncio.get_running_loop().create_task(self._work(), name="micro-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        # Whoever still waits gets an answer rather than hanging.
        while self._queue is not None and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(Overloaded("the service is shutting down"))

    async def submit(self, items: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Queue every item of one request together, or none of them; await one result per item."""
        if self._queue is None or self._worker is None:
            raise RuntimeError("the batcher is not running")
        free = self.max_queue - self._queue.qsize()
        if len(items) > free:
            # A rough wait: the batches ahead, each as slow as the last one was.
            ahead = (self._queue.qsize() + self.max_batch_size - 1) // self.max_batch_size
            retry_after = max(1, round(ahead * self._last_batch_seconds + self.max_wait_ms / 1000))
            raise Overloaded(f"the queue holds {self._queue.qsize()} of {self.max_queue} items; "
                             f"this request needs {len(items)} places", retry_after)
        loop = asyncio.get_running_loop()
        queued = [_Item(x, loop.create_future()) for x in items]
        for item in queued:
            self._queue.put_nowait(item)  # cannot fail: room was checked and nothing awaited since
        self._on_depth(self._queue.qsize())
        return list(await asyncio.gather(*(item.future for item in queued)))

    async def _collect(self) -> list[_Item]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        wait_ms = self.max_wait_ms if self._last_batch_size > 1 else 0.0
        deadline = time.monotonic() + wait_ms / 1000
        while len(batch) < self.max_batch_size:
            # Take what is already queued without waiting, then wait out the rest of the delay.
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            self._on_depth(self._queue.qsize())
            # A caller that went away (client disconnect) no longer needs its row.
            batch = [item for item in batch if not item.future.done()]
            if not batch:
                continue
            started = time.perf_counter()
            try:
                outputs = await asyncio.to_thread(self.run_batch, np.stack([item.x for item in batch]))
            except Exception as e:  # the whole batch failed: every caller in it gets the error
                log.exception("batch of %d failed", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            seconds = time.perf_counter() - started
            self._last_batch_seconds = seconds
            self._last_batch_size = len(batch)
            self._on_batch(len(batch), seconds)
            for row, item in enumerate(batch):
                if not item.future.done():
                    item.future.set_result({name: value[row] for name, value in outputs.items()})
