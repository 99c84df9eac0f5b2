"""A Redis ACL user with only the commands and key pattern the docs list can run
producers and workers (docs/guarantees.md#acl)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import FixedBackoff, JobFailed, Queue, Worker, current_job, task
from aiojobs_redis._redis_server import RedisServer

pytestmark = pytest.mark.faults

#: the rule documented in docs/guarantees.md (kept in step by test_docs_list_the_acl)
ACL_RULE = (
    "on >ajr-secret ~ajr:* resetchannels "
    "-@all "
    # from clients
    "+evalsha +script|load +ping +info +time +hello "
    "+hget +hmget +hexists +hset +hdel +hgetall "
    "+zadd +zcard +zrange +zrem +zscore +zremrangebyscore +wait "
    "+xread +xrange +xrevrange +bzpopmin "
    "+get +set +del +exists +scan "
    # inside the scripts (Redis checks those too)
    "+incr +incrby +hincrby +xadd +zpopmin +zrangebyscore +zremrangebyrank"
)


@task(name="acl.double", attempts=2, backoff=FixedBackoff(delay_s=0))
async def double(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    if current_job().attempt == 1 and x == 3:
        raise RuntimeError("retry me")
    return 2 * x


async def test_least_privilege_user_runs_producer_and_worker(
    redis_server: RedisServer, client: aioredis.Redis, queue_name: str
) -> None:
    """Invariant: enqueue, results, retries, progress of events, worker heartbeats,
    stalled checks, schedules, metrics, pause/resume and obliterate all work for a user
    limited to the documented commands and the ajr:* keys."""
    await client.acl_setuser("ajr", reset=True, enabled=True, passwords=["+ajr-secret"],
                             keys=["ajr:*"], commands=ACL_RULE.split()[4:])
    url = f"redis://ajr:ajr-secret@127.0.0.1:{redis_server.port}/0"
    try:
        async with Queue.from_url(url, name=queue_name) as queue:
            jobs = await queue.enqueue_many([double.call(i) for i in range(10)])
            bad = await queue.enqueue(double, -1)
            await queue.pause()
            await queue.resume()
            worker = Worker(queue, tasks=[double], concurrency=4)
            await asyncio.wait_for(worker.run(burst=True), 30)
            assert [await j.result(timeout=5) for j in jobs] == [2 * i for i in range(10)]
            with pytest.raises(JobFailed):
                await bad.result(timeout=5)
            assert await queue.retry_failed() == 1
            assert (await queue.counts())
            await queue.obliterate(force=True)
    finally:
        await client.acl_deluser("ajr")
    print(f"\nACL user with {len(ACL_RULE.split()) - 5} commands on ~ajr:* ran producer and"
          " worker")


def test_docs_list_the_acl() -> None:
    """docs/guarantees.md shows exactly the rule this test proves sufficient."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "guarantees.md").read_text()
    block = text.split("ACL SETUSER ajr ", 1)[1].split("```", 1)[0]
    assert block.split() == ACL_RULE.replace(">ajr-secret", ">PASSWORD").split()
