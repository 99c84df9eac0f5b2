"""Queue limits across workers (issue 13, item 1, the queue-wide part): at most N starts
per period, at most M jobs active at once, against a real Redis with real workers."""

from __future__ import annotations

import asyncio
import time

import pytest

from aiojobs_redis import ConfigurationError, Queue, QueueLimits, Worker, task
from aiojobs_redis.connection import AnyRedis

from .test_worker import running

starts: list[float] = []
active_now = 0
active_peak = 0


@task(name="limits.stamp")
async def stamp() -> None:
    starts.append(time.monotonic())


@task(name="limits.hold")
async def hold(seconds: float) -> None:
    global active_now, active_peak
    active_now += 1
    active_peak = max(active_peak, active_now)
    try:
        await asyncio.sleep(seconds)  # the work itself: the limit is what is tested
    finally:
        active_now -= 1


@pytest.fixture(autouse=True)
def _fresh() -> None:
    global active_now, active_peak
    starts.clear()
    active_now = active_peak = 0


async def _fetch_calls(client: AnyRedis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_the_rate_limit_holds_exactly_across_workers_without_polling(
        queue: Queue, other_queue: Queue) -> None:
    await queue.set_limits(max_starts=5, per_s=0.5)
    assert await queue.limits() == QueueLimits(max_starts=5, per_s=0.5)
    await queue.enqueue_many([stamp.call() for _ in range(20)])
    # two workers, each of another process's size: the limit is the queue's, in Redis
    first = Worker(queue, tasks=[stamp], concurrency=50, handle_signals=False)
    other = Worker(other_queue, tasks=[stamp], concurrency=50, handle_signals=False)
    before = await _fetch_calls(queue.client)
    async with running(first), running(other):
        deadline = time.monotonic() + 15
        while len(starts) < 20:
            assert time.monotonic() < deadline, f"{len(starts)} of 20 started"
            await asyncio.sleep(0.05)  # reading the test's own list, not Redis
    calls = await _fetch_calls(queue.client) - before
    starts.sort()
    # no window of 0.5 s saw more than 5 starts (a little slack for the clocks' reading)
    for i in range(len(starts) - 5):
        assert starts[i + 5] - starts[i] >= 0.5 - 0.02, (i, starts[i + 5] - starts[i])
    span = starts[-1] - starts[0]
    assert span >= 1.5 - 0.02, "20 starts at 5 per 0.5 s take at least 1.5 s"
    # idle, not polling: each worker asks when the window opens again (about 4 windows),
    # plus its outcome reports, lease renewals and heartbeats
    print(f"\n20 starts in {span:.2f} s; {calls} script calls by both workers",
          [round(t - starts[0], 3) for t in starts])
    assert calls < 150, calls


async def test_max_active_holds_across_workers(queue: Queue, other_queue: Queue) -> None:
    await queue.set_limits(max_active=3)
    await queue.enqueue_many([hold.call(0.05) for _ in range(15)])
    workers = [Worker(queue, tasks=[hold], concurrency=10, handle_signals=False),
               Worker(other_queue, tasks=[hold], concurrency=10, handle_signals=False)]
    await asyncio.wait_for(asyncio.gather(*(w.run(burst=True) for w in workers)), 60)
    assert sum(w.processed for w in workers) == 15
    assert active_peak == 3, "both workers share the queue's max_active"


async def test_limits_can_be_cleared_and_are_checked(queue: Queue) -> None:
    await queue.set_limits(max_starts=1, per_s=60, max_active=2)
    await queue.set_limits()
    assert await queue.limits() == QueueLimits()
    await queue.enqueue_many([stamp.call() for _ in range(10)])
    worker = Worker(queue, tasks=[stamp], handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 30)
    assert worker.processed == 10
    for bad in ({"max_starts": 5}, {"max_starts": 0, "per_s": 1},
                {"max_starts": 5, "per_s": 0}, {"max_active": 0},
                {"max_active": True}, {"max_starts": 5, "per_s": float("nan")}):
        with pytest.raises(ConfigurationError):
            await queue.set_limits(**bad)
