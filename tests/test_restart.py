"""A producer's call rides out a Redis restart of a few seconds (its retry budget is a
time, not a count of full-jitter retries that can be spent in a few hundred ms)."""

from __future__ import annotations

import asyncio
import time

from aiojobs_redis import Queue, TaskCall
from aiojobs_redis._redis_server import RedisServer

from .invariants import check_invariants


async def test_an_enqueue_outlasts_a_restart_of_two_seconds() -> None:
    with RedisServer(appendonly=True, appendfsync="always") as server:
        async with Queue.from_url(server.url, name="restart") as q:
            await q.enqueue_many([TaskCall.by_name("t")])  # connected
            for _ in range(3):
                server.kill()
                call = asyncio.create_task(q.enqueue_many([TaskCall.by_name("t")]))
                await asyncio.sleep(2.0)  # Redis is away for 2 s
                assert not call.done(), "the call gave up while Redis was away"
                started = time.monotonic()
                await asyncio.to_thread(server.start)
                [job] = await asyncio.wait_for(call, 10)
                assert time.monotonic() - started < 3
                assert await job.info()
            assert sum((await q.counts()).values()) == 4
            await check_invariants(q.client, q.keys)


async def test_a_call_gives_up_once_its_budget_is_spent() -> None:
    """...and a Redis that stays away is reported after the budget (5 s), not after an
    open-ended number of nested retries."""
    from aiojobs_redis import RedisUnavailable
    from aiojobs_redis.connection import OUTAGE_BUDGET_S

    with RedisServer() as server:
        async with Queue.from_url(server.url, name="away") as q:
            await q.enqueue_many([TaskCall.by_name("t")])
            server.kill()
            started = time.monotonic()
            try:
                await q.enqueue_many([TaskCall.by_name("t")])
            except RedisUnavailable:
                pass
            else:
                raise AssertionError("the call succeeded without Redis")
            waited = time.monotonic() - started
    assert OUTAGE_BUDGET_S - 0.5 < waited < OUTAGE_BUDGET_S + 3, waited
