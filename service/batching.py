"""An in-process micro-batcher: items from concurrent requests run as one ORT call, in two lanes.

Two knobs set the batches, each named for the limit it sets (BentoML's adaptive batching):
`max_batch_size`, the most items in one call, and `max_wait_ms`, the longest the first item of
a batch waits for company. The wait is adaptive: a batch always takes what is already queued,
and it only waits for more when the last batch held several items, i.e. when requests are
arriving concurrently. A lone client (concurrency 1) therefore never pays the delay, and under
load the queue fills while ORT runs the previous batch, so batches are full anyway.

Two lanes share the one ORT session:

- `interactive` (HTTP requests): a bounded queue (`max_queue` items). A request that does not
  fit, or whose estimated wait exceeds `max_queue_wait_ms` (the items ahead of it in its lane and
  the recent batch times: Triton's and BentoML's bounded queue delay), gets `Overloaded` at once,
  which the HTTP layer answers with 503 and Retry-After, instead of waiting without end.
- `background` (slide tiles): its own bounded queue (`max_background_queue` items). A submit
  that does not fit waits for room instead of failing, and the deadline never applies: tiles
  are delayed, never dropped.

Every batch takes interactive items first and fills the rest with background items (at most
`max_background_batch` of them), so a slide job of thousands of tiles never puts an interactive
request behind its queue: it waits at most for the batch already running. Under continuous
interactive load that fills every batch the background lane waits; that is the intended order.

One future per request (not per item): a request's items may be split over several batches,
and its future resolves when its last row is in. The batch is copied into one preallocated
buffer per input shape and worker; `run_batch` must return arrays it owns (ORT does), not views
of its input.

`concurrent_batches` workers take batches from the same lanes, each running its batch in its own
thread (Triton's instance count, on one ORT session, whose `run` is thread-safe). On a small CPU,
two runs at once get more from the cores than one run spread over both: ORT's intra-op
parallelism stalls on the many small convolutions of a mobile network. Worker k joins in only
while workers 0..k-1 are all busy, so light load stays on worker 0.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np

log = logging.getLogger("histoserve.batching")

RunBatch = Callable[[np.ndarray], dict[str, np.ndarray]]
# Called after every batch with (batch size, seconds the ORT call took).
OnBatch = Callable[[int, float], None]
Priority = Literal["interactive", "background"]
PRIORITIES: tuple[str, ...] = ("interactive", "background")
# Weight of the newest batch in the running estimate of a batch's duration.
_EWMA = 0.3


class Overloaded(RuntimeError):
    """The queue cannot take the items now; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class _Request:
    """One caller's items, how many of them were taken into batches, and the rows that came back."""

    __slots__ = ("items", "future", "taken", "left", "rows")

    def __init__(self, items: Sequence[np.ndarray], future: asyncio.Future):
        self.items = items
        self.future = future
        self.taken = 0
        self.left = len(items)
        self.rows: list[dict[str, np.ndarray] | None] = [None] * len(items)


class _Lane:
    """A FIFO of requests and the count of their items not yet taken into a batch."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.requests: deque[_Request] = deque()
        self.depth = 0

    def put(self, request: _Request) -> None:
        self.requests.append(request)
        self.depth += len(request.items)

    def take(self, room: int, into: list[tuple[_Request, int, int]]) -> int:
        """Move up to `room` items into the batch as (request, first item, count); returns how many."""
        taken = 0
        while room > taken and self.requests:
            request = self.requests[0]
            pending = len(request.items) - request.taken
            if request.future.done():  # the caller went away (disconnect) or failed: drop what is left
                self.requests.popleft()
                self.depth -= pending
                continue
            count = min(pending, room - taken)
            into.append((request, request.taken, count))
            request.taken += count
            self.depth -= count
            taken += count
            if request.taken == len(request.items):
                self.requests.popleft()
        return taken

    def drain(self) -> list[_Request]:
        requests = list(self.requests)
        self.requests.clear()
        self.depth = 0
        return requests


class MicroBatcher:
    def __init__(self, run_batch: RunBatch, *, max_batch_size: int, max_wait_ms: float, max_queue: int,
                 max_queue_wait_ms: float | None = None, max_background_queue: int | None = None,
                 max_background_batch: int | None = None, concurrent_batches: int = 1, pad_to_max: bool = False,
                 on_batch: OnBatch | None = None, on_depth: Callable[[int], None] | None = None):
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0 or concurrent_batches < 1:
            raise ValueError("max_batch_size, max_queue and concurrent_batches must be >= 1 and max_wait_ms >= 0")
        if max_queue_wait_ms is not None and max_queue_wait_ms < 0:
            raise ValueError("max_queue_wait_ms must be >= 0 (0 or None: no deadline)")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_ms = max_wait_ms
        self.max_queue = max_queue
        self.max_queue_wait_ms = max_queue_wait_ms or None
        self.max_background_batch = min(max_background_batch or max_batch_size, max_batch_size)
        self.concurrent_batches = concurrent_batches
        # Every run at max_batch_size rows (the rows past the batch are zeros or an earlier batch's, and their
        # outputs are dropped): ORT's CUDA convs are set up again at each new input shape (bench.gpu, round 13).
        self.pad_to_max = pad_to_max
        if self.max_background_batch < 1:
            raise ValueError("max_background_batch must be >= 1")
        self._interactive = _Lane(max_queue)
        self._background = _Lane(max_background_queue or 4 * max_batch_size)
        if self._background.capacity < 1:
            raise ValueError("max_background_queue must be >= 1")
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._arrived: asyncio.Event | None = None  # set when items are queued
        self._room: asyncio.Event | None = None  # set when background items leave the queue
        self._workers: list[asyncio.Task] = []
        self._executors: list[ThreadPoolExecutor] = []  # one thread per worker: its runs stay in that thread
        self._batch_seconds = 0.0  # running estimate of one batch's duration
        self._running_since: dict[int, float] = {}  # worker -> perf_counter() when its running batch started
        self._last_batch_size = 0

    # --- state

    @property
    def depth(self) -> int:
        """Items queued in both lanes and not yet in a batch."""
        return self._interactive.depth + self._background.depth

    @property
    def interactive_depth(self) -> int:
        return self._interactive.depth

    @property
    def background_depth(self) -> int:
        return self._background.depth

    def estimated_wait(self, items: int) -> float:
        """Seconds until the last of `items` new interactive items would start running (an estimate)."""
        running = 0.0
        if len(self._running_since) == self.concurrent_batches:  # every worker busy: the first to finish
            now = time.perf_counter()
            running = max(0.0, self._batch_seconds - max(now - t for t in self._running_since.values()))
        ahead = (self._interactive.depth + items - 1) // self.max_batch_size  # whole batches before its last one
        return running + ahead * self._batch_seconds / self.concurrent_batches

    # --- lifecycle

    def start(self) -> None:
        """Start the worker on the running event loop (call from the lifespan)."""
        self._arrived, self._room = asyncio.Event(), asyncio.Event()
        self._executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"micro-batcher-{i}")
                           for i in range(self.concurrent_batches)]
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._work(i), name=f"micro-batcher-{i}")
                         for i in range(self.concurrent_batches)]

    async def stop(self) -> None:
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        # Whoever still waits gets an answer rather than hanging.
        for request in self._interactive.drain() + self._background.drain():
            if not request.future.done():
                request.future.set_exception(Overloaded("the service is shutting down"))
        if self._room is not None:
            self._room.set()  # background submits waiting for room see the batcher stopped
        for executor in self._executors:
            executor.shutdown(wait=False)
        self._executors = []

    # --- callers

    async def submit(self, items: Sequence[np.ndarray], *, priority: Priority = "interactive"
                     ) -> list[dict[str, np.ndarray]]:
        """Queue the items of one request (a list of arrays or one stacked array); one result per item.

        interactive: all items are queued or none (`Overloaded` when they do not fit or would wait past
        the deadline). background: waits for room in its own queue, never refused for load.
        """
        if not self._workers or self._arrived is None:
            raise RuntimeError("the batcher is not running")
        if priority not in PRIORITIES:
            raise ValueError(f"priority must be one of {PRIORITIES}, got {priority!r}")
        if len(items) == 0:
            return []
        if priority == "interactive":
            self._admit(len(items))
            lane = self._interactive
        else:
            lane = self._background
            # Wait while the lane is full; a request larger than the whole lane goes in once it is empty.
            while lane.depth and lane.depth + len(items) > lane.capacity:
                self._room.clear()
                await self._room.wait()
                if not self._workers:
                    raise Overloaded("the service is shutting down")
        request = _Request(items, asyncio.get_running_loop().create_future())
        lane.put(request)
        self._arrived.set()
        self._on_depth(self.depth)
        return await request.future

    def _admit(self, count: int) -> None:
        free = self.max_queue - self._interactive.depth
        if count > free:
            raise Overloaded(f"the queue holds {self._interactive.depth} of {self.max_queue} items; "
                             f"this request needs {count} places", self._retry_after(count))
        if self.max_queue_wait_ms is not None:
            wait = self.estimated_wait(count)
            if wait * 1000 > self.max_queue_wait_ms:
                raise Overloaded(f"this request would wait about {wait * 1000:.0f} ms in the queue; "
                                 f"the limit is {self.max_queue_wait_ms:g} ms", self._retry_after(count))

    def _retry_after(self, count: int) -> int:
        return max(1, math.ceil(self.estimated_wait(count) + self.max_wait_ms / 1000))

    # --- the worker

    def _take(self, room: int, batch: list[tuple[_Request, int, int]], background_taken: int) -> tuple[int, int]:
        """Interactive items first, then background ones; returns (items taken, of which background)."""
        taken = self._interactive.take(room, batch)
        background = 0
        background_room = min(room - taken, self.max_background_batch - background_taken)
        if background_room > 0 and self._background.depth:
            background = self._background.take(background_room, batch)
            self._room.set()
        return taken + background, background

    async def _collect(self, worker: int) -> tuple[list[tuple[_Request, int, int]], int]:
        assert self._arrived is not None
        batch: list[tuple[_Request, int, int]] = []
        size, background = 0, 0
        while size == 0:
            # worker k takes a batch only while workers 0..k-1 all run one: a lone client is always served
            # by worker 0, in one thread (any idle worker taking it measured slower at concurrency 1)
            if not self.depth or any(i not in self._running_since for i in range(worker)):
                self._arrived.clear()
                await self._arrived.wait()
                continue
            size, background = self._take(self.max_batch_size, batch, 0)
        if size < self.max_batch_size and self._last_batch_size > 1 and self.max_wait_ms > 0:
            # Requests are arriving concurrently: wait out the delay for company, taking arrivals as they come.
            deadline = time.monotonic() + self.max_wait_ms / 1000
            while size < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
                more, more_background = self._take(self.max_batch_size - size, batch, background)
                size, background = size + more, background + more_background
        return batch, size

    def _stack(self, batch: list[tuple[_Request, int, int]], size: int, buffers: dict[tuple, np.ndarray]
               ) -> np.ndarray:
        """Copy the batch's items into the worker's preallocated buffer for their shape and dtype."""
        first = np.asarray(batch[0][0].items[batch[0][1]])
        key = (first.shape, first.dtype.str)
        buffer = buffers.get(key)
        if buffer is None:
            buffer = buffers[key] = np.zeros((self.max_batch_size, *first.shape), dtype=first.dtype)
        row = 0
        for request, start, count in batch:
            for item in request.items[start : start + count]:
                buffer[row] = item  # raises for an item of another shape: the whole batch fails
                row += 1
        return buffer if self.pad_to_max else buffer[:size]

    async def _work(self, worker: int) -> None:
        loop = asyncio.get_running_loop()
        buffers: dict[tuple, np.ndarray] = {}  # this worker's: the other may be filling its own meanwhile
        while True:
            batch, size = await self._collect(worker)
            self._on_depth(self.depth)
            started = time.perf_counter()
            self._running_since[worker] = started
            if self.depth and worker + 1 < self.concurrent_batches:
                self._arrived.set()  # items are waiting: the next worker may take them now
            try:
                outputs = await loop.run_in_executor(self._executors[worker], self.run_batch,
                                                     self._stack(batch, size, buffers))
            except Exception as e:  # the whole batch failed: every caller in it gets the error
                log.exception("batch of %d failed", size)
                for request, _, _ in batch:
                    if not request.future.done():
                        request.future.set_exception(e)
                continue
            finally:
                self._running_since.pop(worker, None)
            seconds = time.perf_counter() - started
            self._batch_seconds = seconds if not self._batch_seconds else (
                _EWMA * seconds + (1 - _EWMA) * self._batch_seconds)
            self._last_batch_size = size
            self._on_batch(size, seconds)
            row = 0
            names = list(outputs)
            for request, start, count in batch:
                if not request.future.done():
                    for k in range(count):
                        request.rows[start + k] = {name: outputs[name][row + k] for name in names}
                    request.left -= count
                    if request.left == 0:
                        request.future.set_result(request.rows)
                row += count
