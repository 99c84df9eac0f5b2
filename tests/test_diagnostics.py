"""What the worker says about a risky Redis and a blocked event loop."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from aiojobs_redis import Queue, Worker, task

from .test_worker import running


@task(name="blocker")
async def blocker(seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 - blocks the event loop: what the watchdog is for


@task(name="nothing")
async def nothing() -> None:
    return None


async def test_persistence_off_and_eviction_warn_once_at_start(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    await queue.client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with caplog.at_level(logging.WARNING, logger="aiojobs_redis"):
            await asyncio.wait_for(Worker(queue, tasks=[nothing]).run(burst=True), 10)
    finally:
        await queue.client.config_set("maxmemory-policy", "noeviction")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("maxmemory-policy is 'allkeys-lru'" in m for m in messages) == 1
    assert sum("persistence is off" in m for m in messages) == 1


async def test_blocked_event_loop_is_reported_with_the_job(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="aiojobs_redis.worker"):
        async with running(Worker(queue, tasks=[blocker])):
            job = await queue.enqueue(blocker, 1.5)
            await job.result(timeout=20)
    blocked = [r.getMessage() for r in caplog.records if "event loop blocked" in r.getMessage()]
    mine = [m for m in blocked if f"blocker:{job.id}" in m]
    assert len(mine) == 1, f"one line per blocked episode: {blocked}"
    ended = [r.getMessage() for r in caplog.records if "was blocked for" in r.getMessage()]
    assert ended and float(ended[0].split("blocked for ")[1].split(" s")[0]) >= 1.0
