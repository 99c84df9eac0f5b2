"""A Redis that stops serving for a while (a stall: DEBUG SLEEP, a slow fork or fsync, a
VM pause, a failover pause) does not make live workers' jobs run twice: time during
which Redis served nothing does not count against their leases."""

from __future__ import annotations

import asyncio
import functools
from collections import Counter

import redis.asyncio as aioredis

from aiojobs_redis import JobState, Queue, TaskCall, Worker, current_job, task

from .conftest import wait_until
from .invariants import check_invariants
from .test_worker import running

RUNS: Counter[str] = Counter()


@task(name="pause.second")
async def one_second() -> None:
    RUNS[current_job().id] += 1
    await asyncio.sleep(1.0)


async def test_a_redis_pause_of_most_of_a_lease_runs_nothing_twice(
        queue: Queue, client: aioredis.Redis) -> None:
    RUNS.clear()
    other = Queue(queue.client, name=queue.name)
    jobs = await queue.enqueue_many([TaskCall.by_name("pause.second") for _ in range(60)])
    try:
        async with running(Worker(queue, tasks=[one_second], concurrency=10, lease_ms=2000,
                                  handle_signals=False)), \
                running(Worker(other, tasks=[one_second], concurrency=10, lease_ms=2000,
                               handle_signals=False)):
            for _ in range(3):
                await wait_until(lambda: _active(queue, 15), timeout=20)
                done = (await queue.counts())[JobState.COMPLETED]
                # Redis serves nobody for 1.9 s of a 2 s lease; every worker is alive
                await client.client_pause(1900, all=True)
                await client.ping()  # answered once the pause is over
                await wait_until(functools.partial(_completed_more_than, queue, done), timeout=20)
            await asyncio.gather(*(j.result(timeout=60) for j in jobs))
    finally:
        await other.close()
    twice = sorted(i for i, n in RUNS.items() if n > 1)
    stalls = [(await j.info()).stalls for j in jobs]
    assert not twice, f"{len(twice)} of {len(jobs)} jobs ran twice: {twice[:5]}"
    assert sum(stalls) == 0
    await check_invariants(client, queue.keys)  # both workers have stopped


async def _completed_more_than(queue: Queue, n: int) -> bool:
    return (await queue.counts())[JobState.COMPLETED] > n


async def _active(queue: Queue, n: int) -> bool:
    return (await queue.counts())[JobState.ACTIVE] >= n
