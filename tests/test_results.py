"""Waiting for results: woken by the event stream, many waiters on one listener."""

from __future__ import annotations

import asyncio

import pytest

from aiojobs_redis import JobFailed, Queue, ResultTimeout, Worker, task

from .test_worker import running


@task(name="double")
async def double(x: int) -> int:
    return 2 * x


@task(name="gate")
async def gate() -> str:
    return "opened"


async def test_thousands_of_waiters_share_one_listener(queue: Queue) -> None:
    jobs = await queue.enqueue_many([double.call(i) for i in range(2000)])
    clients_before = len(await queue.client.client_list())
    waiters = [asyncio.create_task(j.result(timeout=60)) for j in jobs]
    await asyncio.sleep(0)  # let every waiter register
    async with running(Worker(queue, tasks=[double], concurrency=50)):
        results = await asyncio.gather(*waiters)
        clients_during = len(await queue.client.client_list())
    assert results == [2 * i for i in range(2000)]
    # the worker's own few connections plus one listener, not one per waiter
    assert clients_during - clients_before < 15


async def test_result_timeout_and_late_completion(queue: Queue) -> None:
    job = await queue.enqueue(gate)
    with pytest.raises(ResultTimeout):
        await job.result(timeout=0.05)
    async with running(Worker(queue, tasks=[gate])):
        assert await job.result(timeout=10) == "opened"
    assert await job.result(timeout=0) == "opened", "a finished job answers at once"


async def test_failed_result_raises_with_the_error(queue: Queue) -> None:
    job = await queue.enqueue("double", "not a number", "extra")
    async with running(Worker(queue, tasks=[double])):
        with pytest.raises(JobFailed, match="arguments do not fit"):
            await job.result(timeout=10)
