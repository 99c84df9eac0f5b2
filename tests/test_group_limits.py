"""Group limits (issue 13, item 1, the per-key part): at most N starts per period and at
most M active per group (``JobOptions(group=...)``), across workers, in Redis. A job whose
group has no room is parked; the other groups' jobs run meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

import pytest

from aiojobs_redis import (
    ConfigurationError,
    GroupLimits,
    JobState,
    Queue,
    QueueLimits,
    TaskCall,
    Worker,
    task,
)
from aiojobs_redis.connection import AnyRedis

from .conftest import wait_until
from .invariants import check_invariants
from .test_worker import running

starts: dict[str, list[float]] = defaultdict(list)
active: Counter[str] = Counter()
peak: Counter[str] = Counter()


@task(name="glimits.call")
async def call_upstream(account: str, seconds: float = 0.0) -> None:
    starts[account].append(time.monotonic())
    active[account] += 1
    peak[account] = max(peak[account], active[account])
    try:
        if seconds:
            await asyncio.sleep(seconds)  # the upstream call: the limit is what is tested
    finally:
        active[account] -= 1


@pytest.fixture(autouse=True)
def _fresh() -> None:
    starts.clear()
    active.clear()
    peak.clear()


async def _script_calls(client: AnyRedis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window - 0.015:  # slack for reading two clocks
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _account(group: str, seconds: float = 0.0) -> TaskCall[None]:
    return call_upstream.options(group=group).call(group, seconds)


async def test_a_rate_limited_account_does_not_hold_up_the_others(
        queue: Queue, other_queue: Queue) -> None:
    # the API-quota case: the upstream allows 5 calls per 0.5 s per account
    await queue.set_limits(group_max_starts=5, group_per_s=0.5)
    assert await queue.limits() == QueueLimits(group_max_starts=5, group_per_s=0.5)
    await queue.enqueue_many([_account("big") for _ in range(20)])
    await queue.enqueue_many([_account("small") for _ in range(5)])
    await queue.enqueue_many([call_upstream.call("none") for _ in range(10)])
    workers = [Worker(queue, tasks=[call_upstream], concurrency=50, handle_signals=False),
               Worker(other_queue, tasks=[call_upstream], concurrency=50,
                      handle_signals=False)]
    before = await _script_calls(queue.client)
    t0 = time.monotonic()
    async with running(workers[0]), running(workers[1]):
        async def parked_now() -> bool:
            return len(starts["big"]) >= 5 and len(starts["none"]) == 10
        await wait_until(parked_now, timeout=15)
        counts = await queue.counts()
        # the 15 parked jobs of "big" still count as waiting
        assert counts[JobState.WAITING] == 15, counts

        async def all_started() -> bool:
            return len(starts["big"]) == 20
        await wait_until(all_started, timeout=15)
    calls = await _script_calls(queue.client) - before
    big, small = sorted(starts["big"]), starts["small"]
    print(f"\nbig: 20 starts in {big[-1] - big[0]:.2f} s; max per 0.5 s window:"
          f" {_max_in_window(big, 0.5)}; small and ungrouped done after"
          f" {max(small + starts['none']) - t0:.3f} s; {calls} script calls")
    assert _max_in_window(big, 0.5) == 5
    assert big[-1] - big[0] >= 1.5 - 0.02, "20 starts at 5 per 0.5 s take 1.5 s at least"
    # the others never waited for the big account's windows
    assert max(small + starts["none"]) - t0 < 0.45
    # idle, not polling: each worker asks again when a window opens (about 3 windows)
    assert calls < 150, calls
    await check_invariants(queue.client, queue.keys)
    assert await queue.counts() == {**await queue.counts(), JobState.WAITING: 0}
    assert not await queue.client.exists(queue.keys.group_prefix + "big:parked")


async def test_max_active_per_group_and_an_override(queue: Queue, other_queue: Queue) -> None:
    await queue.set_limits(group_max_active=2)
    await queue.set_group_limits("vip", max_active=5)
    assert await queue.group_limits("vip") == GroupLimits(max_active=5)
    assert await queue.group_limits("a") is None
    jobs = [_account(g, 0.1) for g in ("a", "b", "vip") for _ in range(12)]
    await queue.enqueue_many(jobs)
    workers = [Worker(queue, tasks=[call_upstream], concurrency=20, handle_signals=False),
               Worker(other_queue, tasks=[call_upstream], concurrency=20,
                      handle_signals=False)]
    await asyncio.wait_for(asyncio.gather(*(w.run(burst=True) for w in workers)), 60)
    assert sum(w.processed for w in workers) == 36
    print(f"\npeak active per group: {dict(peak)}")
    assert peak == Counter({"a": 2, "b": 2, "vip": 5})
    await check_invariants(queue.client, queue.keys)


async def test_parked_jobs_can_be_cancelled_changed_removed_drained(queue: Queue) -> None:
    await queue.set_limits(group_max_starts=1, group_per_s=60)
    jobs = [await queue.enqueue(call_upstream.options(group="g"), "g") for _ in range(6)]
    worker = Worker(queue, tasks=[call_upstream], concurrency=10, handle_signals=False)
    async with running(worker):
        async def parked() -> bool:
            n = await queue.client.zcard(queue.keys.group_prefix + "g:parked")
            return bool(len(starts["g"]) == 1 and n == 5)
        await wait_until(parked, timeout=15)
        assert (await queue.counts())[JobState.WAITING] == 5
        rest = [j for j in jobs if (await j.info()).state == JobState.WAITING]
        assert len(rest) == 5
        assert await rest[0].cancel() == JobState.CANCELLED
        assert await rest[1].change(priority=7) == JobState.WAITING
        assert await rest[2].change(delay_s=60) == JobState.DELAYED
        await queue.remove_job(rest[3].id)
        await check_invariants(queue.client, queue.keys)
        assert (await queue.counts())[JobState.WAITING] == 2
        assert await queue.drain() == 3  # the two parked and the delayed one
    assert (await queue.counts())[JobState.WAITING] == 0
    assert await queue.client.zcard(queue.keys.parked) == 0
    assert len(starts["g"]) == 1
    await check_invariants(queue.client, queue.keys)


async def test_lifting_the_limit_lets_parked_jobs_run(queue: Queue) -> None:
    await queue.set_limits(group_max_starts=1, group_per_s=60)
    await queue.enqueue_many([_account("g") for _ in range(50)])
    worker = Worker(queue, tasks=[call_upstream], concurrency=10, handle_signals=False)
    async with running(worker):
        async def parked() -> bool:
            return bool(await queue.client.zcard(queue.keys.group_prefix + "g:parked") == 49)
        await wait_until(parked, timeout=15)
        await queue.set_limits()  # wakes the idle worker

        async def done() -> bool:
            return len(starts["g"]) == 50
        await wait_until(done, timeout=15)
    await check_invariants(queue.client, queue.keys)
    assert await queue.client.hget(queue.keys.meta, "parked") == b"0"


async def test_obliterate_leaves_no_group_key(queue: Queue) -> None:
    await queue.set_limits(group_max_starts=1, group_per_s=60, group_max_active=1)
    await queue.set_group_limits("other", max_active=3)
    await queue.enqueue_many([_account("g") for _ in range(5)])
    worker = Worker(queue, tasks=[call_upstream], concurrency=10, handle_signals=False)
    async with running(worker):
        async def parked() -> bool:
            return bool(await queue.client.zcard(queue.keys.group_prefix + "g:parked") == 4)
        await wait_until(parked, timeout=15)
    assert await queue.obliterate() == 5
    left = [k async for k in queue.client.scan_iter(match=queue.keys.base + "*")]
    assert left == []


async def test_group_limits_are_checked(queue: Queue) -> None:
    for bad in ({"group_max_starts": 5}, {"group_max_active": 0},
                {"group_max_starts": 1, "group_per_s": -1}):
        with pytest.raises(ConfigurationError):
            await queue.set_limits(**bad)
    for group, limits in (("", {"max_active": 1}), ("x" * 201, {"max_active": 1}),
                          ("g", {"max_starts": 3}), ("g", {"max_active": -1})):
        with pytest.raises(ConfigurationError):
            await queue.set_group_limits(group, **limits)
    await queue.set_group_limits("g", max_starts=3, per_s=2)
    assert await queue.group_limits("g") == GroupLimits(max_starts=3, per_s=2)
    await queue.set_group_limits("g")
    assert await queue.group_limits("g") is None
