"""The micro-batcher with a fake runner: batching, per-caller results, limits, overload, failures."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import MicroBatcher, Overloaded


class Runner:
    """Doubles its input and records the batch sizes it saw."""

    def __init__(self, delay: float = 0.0, fail_on: float | None = None):
        self.sizes: list[int] = []
        self.delay = delay
        self.fail_on = fail_on

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.sizes.append(len(x))
        time.sleep(self.delay)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise RuntimeError("bad batch")
        return {"double": x * 2, "sum": x.reshape(len(x), -1).sum(1)}


def run(coro):
    return asyncio.run(coro)


def test_concurrent_items_share_batches_and_each_gets_its_own_row():
    runner = Runner(delay=0.01)

    async def main():
        b = MicroBatcher(runner, max_batch_size=4, max_wait_ms=20, max_queue=64)
        b.start()
        results = await asyncio.gather(*(b.submit([np.full(3, float(i))]) for i in range(10)))
        await b.stop()
        return results

    results = run(main())
    for i, (out,) in enumerate(results):
        np.testing.assert_array_equal(out["double"], np.full(3, 2.0 * i))
        assert out["sum"] == 3.0 * i
    assert sum(runner.sizes) == 10
    assert max(runner.sizes) == 4 and len(runner.sizes) < 10


def test_a_lone_client_never_waits_for_company():
    # After idle or single-item batches nobody else is coming: waiting max_wait_ms would only add latency.
    runner = Runner()

    async def main():
        b = MicroBatcher(runner, max_batch_size=8, max_wait_ms=5000, max_queue=8)
        b.start()
        started = time.perf_counter()
        for _ in range(3):
            await b.submit([np.zeros(1)])
        elapsed = time.perf_counter() - started
        await b.stop()
        return elapsed

    elapsed = run(main())
    assert elapsed < 4.0  # one wait of max_wait_ms alone would be 5 s
    assert runner.sizes == [1, 1, 1]


def test_after_a_shared_batch_the_next_one_waits_for_company():
    runner = Runner()

    async def main():
        b = MicroBatcher(runner, max_batch_size=8, max_wait_ms=2000, max_queue=8)
        b.start()
        await asyncio.gather(b.submit([np.zeros(1)]), b.submit([np.zeros(1)]))  # concurrent: one batch of 2
        first = asyncio.ensure_future(b.submit([np.ones(1)]))
        await asyncio.sleep(0.05)  # the second arrives later, within max_wait_ms of the first
        second = asyncio.ensure_future(b.submit([np.ones(1)]))
        await asyncio.gather(first, second)
        await b.stop()

    run(main())
    assert runner.sizes == [2, 2]


def test_a_full_queue_raises_overloaded_and_queues_nothing():
    release = threading.Event()

    def held(x):
        release.wait(5)
        return {"y": x}

    async def main():
        b = MicroBatcher(held, max_batch_size=1, max_wait_ms=0, max_queue=3)
        b.start()
        first = asyncio.ensure_future(b.submit([np.zeros(1)]))
        await asyncio.sleep(0.05)  # the worker holds the first item
        queued = asyncio.ensure_future(b.submit([np.ones(1), np.ones(1)]))
        await asyncio.sleep(0.01)
        assert b.depth == 2
        with pytest.raises(Overloaded) as e:
            await b.submit([np.ones(1), np.ones(1)])  # needs 2 places, 1 is free: all or nothing
        assert e.value.retry_after >= 1 and b.depth == 2
        release.set()
        await first
        assert len(await queued) == 2
        await b.stop()

    run(main())


def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on():
    runner = Runner(fail_on=-1.0)

    async def main():
        b = MicroBatcher(runner, max_batch_size=8, max_wait_ms=5, max_queue=8)
        b.start()
        with pytest.raises(RuntimeError, match="bad batch"):
            await b.submit([np.full(2, -1.0)])
        (out,) = await b.submit([np.full(2, 3.0)])
        await b.stop()
        return out

    np.testing.assert_array_equal(run(main())["double"], np.full(2, 6.0))


def test_knobs_are_validated():
    with pytest.raises(ValueError):
        MicroBatcher(Runner(), max_batch_size=0, max_wait_ms=1, max_queue=1)
