"""The worker registry: dead workers' index entries are pruned by live workers."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from aiojobs_redis import Queue, Worker, live_workers, task
from tests.conftest import wait_until
from tests.test_worker import running


@task(name="registry.noop")
async def noop() -> None:
    return None


async def test_live_workers_prune_dead_entries_nobody_reads(
        queue: Queue, client: aioredis.Redis) -> None:
    """keys.md promises the workers ZSET holds live workers: a dead worker's entry must go
    although nothing lists the workers (only the listing used to prune)."""
    now_ms = int(time.time() * 1000)
    # a worker that died long ago: its record key expired, its index entry stayed
    await client.zadd(queue.keys.workers, {"dead-host:1:abc": now_ms - 60_000})
    async with running(Worker(queue, tasks=[noop], lease_ms=1000, handle_signals=False)) as w:
        await wait_until(lambda: _gone(client, queue), timeout=5)
        # the live worker itself stays indexed, with the time its record expires
        score = await client.zscore(queue.keys.workers, w.id)
        assert score is not None and score > time.time() * 1000
        assert [i.id for i in await live_workers(queue.client, queue.keys)] == [w.id]


async def _gone(client: aioredis.Redis, queue: Queue) -> bool:
    return await client.zscore(queue.keys.workers, "dead-host:1:abc") is None
