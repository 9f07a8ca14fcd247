"""The micro-batcher with fake runners: batching, lanes, per-caller results, limits, deadline, failures.

Every test orders events explicitly (a runner held on a threading.Event, and the test waiting until
the worker is inside it), so what is checked is behaviour, never how long something took. The
`asyncio.timeout` guards only turn a hang into a failure.
"""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from service.batching import MicroBatcher, Overloaded

GUARD_S = 60  # a hang fails the test instead of blocking the suite


class Runner:
    """Doubles its input; records the batches it saw; can be held until released."""

    def __init__(self, fail_on: float | None = None, held: bool = False, first_sleep: float = 0.0):
        self.batches: list[list[float]] = []
        self.fail_on = fail_on
        self.entered = threading.Event()
        self.release = threading.Event()
        if not held:
            self.release.set()
        self.first_sleep = first_sleep

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append([float(v) for v in x.reshape(len(x), -1)[:, 0]])
        if len(self.batches) == 1 and self.first_sleep:
            time.sleep(self.first_sleep)
        self.entered.set()
        self.release.wait(GUARD_S)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise RuntimeError("bad batch")
        return {"double": x * 2, "sum": x.reshape(len(x), -1).sum(1)}


def run(coro):
    async def guarded():
        async with asyncio.timeout(GUARD_S):
            return await coro
    return asyncio.run(guarded())


async def until(predicate) -> None:
    """Yield to the loop until `predicate()` holds (bounded by the test's guard)."""
    while not predicate():
        await asyncio.sleep(0.005)


async def held_first(b: MicroBatcher, runner: Runner, value: float = -5.0,
                     priority: str = "interactive") -> asyncio.Future:
    """Submit one item and wait until the worker is inside the runner with it."""
    first = asyncio.ensure_future(b.submit([np.full(3, value)], priority=priority))
    await until(runner.entered.is_set)
    return first


def test_queued_items_share_batches_and_each_gets_its_own_row():
    runner = Runner(held=True)

    async def main():
        b = MicroBatcher(runner, max_batch_size=4, max_wait_ms=0, max_queue=64)
        b.start()
        first = await held_first(b, runner)
        rest = [asyncio.ensure_future(b.submit([np.full(3, float(i))])) for i in range(10)]
        await until(lambda: b.depth == 10)
        runner.release.set()
        results = await asyncio.gather(*rest)
        await first
        await b.stop()
        return results

    results = run(main())
    for i, (out,) in enumerate(results):
        np.testing.assert_array_equal(out["double"], np.full(3, 2.0 * i))
        assert out["sum"] == 3.0 * i
    assert runner.sizes == [1, 4, 4, 2]


def test_one_request_larger_than_a_batch_is_split_and_comes_back_in_order():
    runner = Runner()

    async def main():
        b = MicroBatcher(runner, max_batch_size=4, max_wait_ms=0, max_queue=64)
        b.start()
        out = await b.submit(np.arange(10, dtype=np.float32)[:, None].repeat(3, 1))  # one stacked array
        await b.stop()
        return out

    out = run(main())
    assert runner.sizes == [4, 4, 2]
    assert [float(o["sum"]) for o in out] == [3.0 * i for i in range(10)]


def test_padded_batches_always_run_at_full_size_and_callers_get_only_their_rows():
    runner = Runner()

    async def main():
        b = MicroBatcher(runner, max_batch_size=4, max_wait_ms=0, max_queue=64, pad_to_max=True)
        b.start()
        lone = await b.submit([np.full(3, 7.0)])
        split = await b.submit(np.arange(6, dtype=np.float32)[:, None].repeat(3, 1))
        await b.stop()
        return lone, split

    lone, split = run(main())
    assert runner.sizes == [4, 4, 4]  # one input shape, whatever the batch held
    assert runner.batches[0][1:] == [0.0, 0.0, 0.0]  # a fresh buffer pads with zeros
    assert len(lone) == 1 and lone[0]["sum"] == 21.0
    assert [float(o["sum"]) for o in split] == [3.0 * i for i in range(6)]


def test_a_lone_client_never_waits_for_company():
    # After idle or single-item batches nobody else is coming: a 10-minute max_wait_ms must not be waited.
    runner = Runner()

    async def main():
        b = MicroBatcher(runner, max_batch_size=8, max_wait_ms=600_000, max_queue=8)
        b.start()
        for _ in range(3):
            await b.submit([np.zeros(1)])
        await b.stop()

    run(main())
    assert runner.sizes == [1, 1, 1]


def test_after_a_shared_batch_the_next_one_waits_for_company():
    runner = Runner()

    async def main():
        # A batch of 2 is full: the wait ends when the second item arrives, not at max_wait_ms.
        b = MicroBatcher(runner, max_batch_size=2, max_wait_ms=30_000, max_queue=8)
        b.start()
        await asyncio.gather(b.submit([np.zeros(1)]), b.submit([np.zeros(1)]))  # concurrent: one batch of 2
        first = asyncio.ensure_future(b.submit([np.ones(1)]))
        await asyncio.sleep(0.05)  # the second arrives later, well within max_wait_ms of the first
        second = asyncio.ensure_future(b.submit([np.ones(1)]))
        await asyncio.gather(first, second)
        await b.stop()

    run(main())
    assert runner.sizes == [2, 2]


def test_a_full_queue_raises_overloaded_and_queues_nothing():
    runner = Runner(held=True)

    async def main():
        b = MicroBatcher(runner, max_batch_size=1, max_wait_ms=0, max_queue=3)
        b.start()
        first = await held_first(b, runner)
        queued = asyncio.ensure_future(b.submit([np.ones(1), np.ones(1)]))
        await until(lambda: b.depth == 2)
        with pytest.raises(Overloaded) as e:
            await b.submit([np.ones(1), np.ones(1)])  # needs 2 places, 1 is free: all or nothing
        assert e.value.retry_after >= 1 and b.depth == 2
        runner.release.set()
        await first
        assert len(await queued) == 2
        await b.stop()

    run(main())


def test_interactive_items_go_first_and_background_fills_the_batch():
    runner = Runner(held=True)

    async def main():
        b = MicroBatcher(runner, max_batch_size=4, max_wait_ms=0, max_queue=8, max_background_queue=64)
        b.start()
        first = await held_first(b, runner, priority="background")
        tiles = asyncio.ensure_future(b.submit([np.full(1, 100.0 + i) for i in range(6)], priority="background"))
        await until(lambda: b.background_depth == 6)
        clicks = [asyncio.ensure_future(b.submit([np.full(1, float(i))])) for i in (1, 2)]  # arrive after the tiles
        await until(lambda: b.interactive_depth == 2)
        runner.release.set()
        rows = await tiles
        await asyncio.gather(first, *clicks)
        await b.stop()
        return rows

    rows = run(main())
    assert runner.batches == [[-5.0], [1.0, 2.0, 100.0, 101.0], [102.0, 103.0, 104.0, 105.0]]
    assert [float(r["sum"]) for r in rows] == [100.0 + i for i in range(6)]


def test_a_long_background_job_never_queues_interactive_requests_behind_it():
    runner = Runner(held=True)

    async def main():
        b = MicroBatcher(runner, max_batch_size=2, max_wait_ms=0, max_queue=4, max_background_queue=1000)
        b.start()
        first = await held_first(b, runner, priority="background")
        job = asyncio.ensure_future(b.submit([np.full(1, 1000.0 + i) for i in range(500)], priority="background"))
        await until(lambda: b.background_depth == 500)
        click = asyncio.ensure_future(b.submit([np.full(1, 7.0)]))
        await until(lambda: b.interactive_depth == 1)
        runner.release.set()
        await asyncio.gather(first, job, click)
        await b.stop()

    run(main())
    assert runner.batches[1][0] == 7.0  # the very next batch after the running one
    assert sum(runner.sizes) == 502


def test_background_work_is_never_refused_and_waits_for_room_in_its_own_lane():
    runner = Runner(held=True)

    async def main():
        b = MicroBatcher(runner, max_batch_size=2, max_wait_ms=0, max_queue=1, max_queue_wait_ms=1.0,
                         max_background_queue=4)
        b.start()
        first = await held_first(b, runner, priority="background")
        jobs = [asyncio.ensure_future(b.submit([np.full(1, 10.0 * j + i) for i in range(3)], priority="background"))
                for j in range(3)]
        await until(lambda: b.background_depth == 3)
        await asyncio.sleep(0.01)
        assert b.background_depth == 3  # the second job does not fit (3 + 3 > 4): it waits, it is not refused
        assert not any(j.done() for j in jobs)
        runner.release.set()
        results = await asyncio.gather(*jobs)
        await first
        await b.stop()
        return results

    results = run(main())
    for j, rows in enumerate(results):
        assert [float(r["sum"]) for r in rows] == [10.0 * j + i for i in range(3)]


def test_an_interactive_request_that_would_wait_past_the_deadline_is_refused_at_once():
    # The first batch sleeps 0.2 s: from then on a batch is estimated to take at least 0.2 s.
    runner = Runner(first_sleep=0.2)

    async def main():
        b = MicroBatcher(runner, max_batch_size=1, max_wait_ms=0, max_queue=8, max_queue_wait_ms=None)
        b.start()
        await b.submit([np.zeros(1)])
        runner.release.clear()
        runner.entered.clear()
        first = await held_first(b, runner)
        queued = asyncio.ensure_future(b.submit([np.ones(1)]))
        await until(lambda: b.interactive_depth == 1)
        b.max_queue_wait_ms = 50.0
        assert b.estimated_wait(1) >= 0.2  # one whole batch ahead of the next item
        with pytest.raises(Overloaded, match="would wait") as e:
            await b.submit([np.ones(1)])
        assert e.value.retry_after >= 1 and b.interactive_depth == 1  # refused without queueing
        tile = asyncio.ensure_future(b.submit([np.full(1, 3.0)], priority="background"))  # the deadline is not its
        await until(lambda: b.background_depth == 1)
        runner.release.set()
        await asyncio.gather(first, queued)
        (row,) = await tile
        await b.stop()
        return row

    assert float(run(main())["sum"]) == 3.0


def test_without_a_deadline_the_same_request_queues():
    runner = Runner(first_sleep=0.2)

    async def main():
        b = MicroBatcher(runner, max_batch_size=1, max_wait_ms=0, max_queue=8, max_queue_wait_ms=None)
        b.start()
        await b.submit([np.zeros(1)])
        runner.release.clear()
        runner.entered.clear()
        first = await held_first(b, runner)
        later = [asyncio.ensure_future(b.submit([np.ones(1)])) for _ in range(2)]
        await until(lambda: b.interactive_depth == 2)
        runner.release.set()
        await asyncio.gather(first, *later)
        await b.stop()

    run(main())
    assert runner.sizes == [1, 1, 1, 1]


def test_concurrent_batches_run_at_once_and_share_the_queue():
    inside, most = [0], [0]
    lock, release = threading.Lock(), threading.Event()

    def runner(x: np.ndarray) -> dict[str, np.ndarray]:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        release.wait(GUARD_S)
        with lock:
            inside[0] -= 1
        return {"sum": x.reshape(len(x), -1).sum(1)}

    async def main():
        b = MicroBatcher(runner, max_batch_size=1, max_wait_ms=0, max_queue=8, concurrent_batches=2)
        b.start()
        calls = [asyncio.ensure_future(b.submit([np.full(1, float(k))])) for k in range(3)]
        await until(lambda: most[0] == 2 and b.interactive_depth == 1)  # two running, the third queued
        # with batches of about 1 s and both workers busy, a new item has the queued one ahead of it: the
        # rest of the running batches, then half a batch (two workers share the queue), not a whole one
        b._batch_seconds = 1.0
        assert 1.0 < b.estimated_wait(1) <= 1.5
        release.set()
        rows = await asyncio.gather(*calls)
        await b.stop()
        return [float(r[0]["sum"]) for r in rows]

    assert run(main()) == [0.0, 1.0, 2.0]
    assert most[0] == 2


def test_one_request_at_a_time_stays_on_the_first_worker():
    threads = []

    def runner(x: np.ndarray) -> dict[str, np.ndarray]:
        threads.append(threading.current_thread().name)
        return {"sum": x.reshape(len(x), -1).sum(1)}

    async def main():
        b = MicroBatcher(runner, max_batch_size=4, max_wait_ms=0, max_queue=8, concurrent_batches=3)
        b.start()
        for k in range(6):
            await b.submit([np.full(1, float(k))])
        await b.stop()

    run(main())
    assert len(threads) == 6 and len(set(threads)) == 1, threads


def test_a_cancelled_request_never_reaches_the_runner():
    runner = Runner(held=True)

    async def main():
        b = MicroBatcher(runner, max_batch_size=4, max_wait_ms=0, max_queue=8)
        b.start()
        first = await held_first(b, runner)
        gone = asyncio.ensure_future(b.submit([np.full(1, 66.0)] * 3))
        kept = asyncio.ensure_future(b.submit([np.full(1, 9.0)]))
        await until(lambda: b.depth == 4)
        gone.cancel()  # the client disconnected
        runner.release.set()
        await asyncio.gather(first, kept)
        await b.stop()

    run(main())
    assert runner.batches == [[-5.0], [9.0]]


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


def test_stop_answers_everyone_still_waiting():
    runner = Runner(held=True)

    async def main():
        b = MicroBatcher(runner, max_batch_size=1, max_wait_ms=0, max_queue=8, max_background_queue=1)
        b.start()
        await held_first(b, runner)
        queued = asyncio.ensure_future(b.submit([np.ones(1)]))
        tile = asyncio.ensure_future(b.submit([np.ones(1)], priority="background"))
        waiting = asyncio.ensure_future(b.submit([np.ones(1)], priority="background"))  # lane full: waits for room
        await until(lambda: b.depth == 2)
        await asyncio.sleep(0.01)
        await b.stop()
        runner.release.set()
        for f in (queued, tile, waiting):
            with pytest.raises(Overloaded, match="shutting down"):
                await f

    run(main())


def test_knobs_and_priorities_are_validated():
    with pytest.raises(ValueError):
        MicroBatcher(Runner(), max_batch_size=0, max_wait_ms=1, max_queue=1)
    with pytest.raises(ValueError):
        MicroBatcher(Runner(), max_batch_size=1, max_wait_ms=1, max_queue=1, max_queue_wait_ms=-1)
    with pytest.raises(ValueError):
        MicroBatcher(Runner(), max_batch_size=1, max_wait_ms=1, max_queue=1, concurrent_batches=0)
    assert MicroBatcher(Runner(), max_batch_size=1, max_wait_ms=1, max_queue=1, max_queue_wait_ms=0).max_queue_wait_ms is None

    async def main():
        b = MicroBatcher(Runner(), max_batch_size=1, max_wait_ms=0, max_queue=1)
        b.start()
        with pytest.raises(ValueError, match="priority"):
            await b.submit([np.zeros(1)], priority="urgent")
        assert await b.submit([]) == []
        await b.stop()

    run(main())
