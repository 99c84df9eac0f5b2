"""Fair groups (issue 13, item 1): waiting jobs of different groups take turns, so one
tenant's 10,000 jobs do not starve another tenant's 10. Measured with a real worker."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from aiojobs_redis import ConfigurationError, JobOptions, Queue, Worker, task

from .invariants import check_invariants

ran: list[str] = []


@task(name="fair.work")
async def work(group: str) -> None:
    ran.append(group)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    ran.clear()


def grouped(group: str) -> JobOptions:
    return JobOptions(group=group)


async def run_all(queue: Queue, concurrency: int = 1) -> None:
    worker = Worker(queue, tasks=[work], concurrency=concurrency, handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 120)


async def test_a_small_tenant_is_not_starved_by_a_big_one(queue: Queue) -> None:
    big = [work.options(group="big").call("big") for _ in range(10_000)]
    for start in range(0, len(big), 2000):
        await queue.enqueue_many(big[start:start + 2000])
    await queue.enqueue_many([work.options(group="small").call("small") for _ in range(10)])
    await run_all(queue, concurrency=10)
    assert len(ran) == 10_010
    last_small = max(i for i, g in enumerate(ran) if g == "small")
    print(f"\nthe small tenant's 10 jobs, enqueued after 10,000 of the big one's, all"
          f" started by start #{last_small + 1} of 10,010")
    # taking turns, its 10 jobs are done within about 2 x 10 starts (+ one fetch's worth)
    assert last_small < 40
    await check_invariants(queue.client, queue.keys)


async def test_backlogged_groups_share_the_workers_equally(queue: Queue) -> None:
    for group, n in (("a", 3000), ("b", 300), ("c", 300)):
        await queue.enqueue_many([work.options(group=group).call(group) for _ in range(n)])
    await run_all(queue, concurrency=5)
    first = Counter(ran[:600])
    print(f"\nshares of the first 600 starts: {dict(first)}")
    # while all three have jobs waiting, each gets a third (within a fetch's worth)
    for group in "abc":
        assert 190 <= first[group] <= 210, first


async def test_jobs_without_a_group_are_one_more_flow(queue: Queue) -> None:
    await queue.enqueue_many([work.call("none") for _ in range(500)])
    await queue.enqueue_many([work.options(group="t").call("t") for _ in range(50)])
    await run_all(queue)
    last_t = max(i for i, g in enumerate(ran) if g == "t")
    assert last_t < 110, "the grouped tenant interleaves with the ungrouped backlog"


async def test_priority_still_comes_first(queue: Queue) -> None:
    await queue.enqueue_many([work.options(group="x").call("x") for _ in range(20)])
    await queue.enqueue(work.options(group="y", priority=5), "urgent")
    await run_all(queue)
    assert ran[0] == "urgent"


def test_group_is_checked() -> None:
    for bad in ("", "x" * 201, 5):
        with pytest.raises(ConfigurationError, match="group"):
            JobOptions(group=bad)  # type: ignore[arg-type]
