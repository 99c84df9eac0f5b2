"""Redis out of memory (maxmemory with noeviction): enqueue fails clearly and writes
nothing; jobs already running can still finish; all is well once memory is back."""

from __future__ import annotations

import asyncio

import pytest

from aiojobs_redis import JobState, Queue, RedisOutOfMemory, Worker, task

from .test_worker import running


async def test_out_of_memory(queue: Queue) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    @task(name="long")
    async def long() -> str:
        started.set()
        await release.wait()
        return "finished under OOM"

    client = queue.client
    async with running(Worker(queue, tasks=[long])):
        job = await queue.enqueue(long)
        await asyncio.wait_for(started.wait(), 10)
        used = int((await client.info("memory"))["used_memory"])
        await client.config_set("maxmemory", str(max(used // 2, 1024 * 1024)))
        try:
            with pytest.raises(RedisOutOfMemory, match="enqueue"):
                await queue.enqueue(long)
            counts = await queue.counts()
            assert counts[JobState.WAITING] == 0, "no partial job"
            release.set()
            assert await job.result(timeout=10) == "finished under OOM"
        finally:
            release.set()
            await client.config_set("maxmemory", "0")
        again = await queue.enqueue(long)
        assert await again.result(timeout=10) == "finished under OOM"
