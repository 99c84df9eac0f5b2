"""A Redis ACL user with only the commands and key pattern the docs list can run
producers and workers (docs/guarantees.md#acl)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import (
    FixedBackoff,
    JobCancelled,
    JobFailed,
    Queue,
    Worker,
    chain,
    current_job,
    task,
)
from aiojobs_redis._redis_server import RedisServer
from aiojobs_redis.scripts.docs import script_commands

from ..conftest import hang, wait_until

pytestmark = pytest.mark.faults

#: the rule documented in docs/guarantees.md (kept in step by test_docs_list_the_acl)
ACL_RULE = (
    "on >ajr-secret ~ajr:* resetchannels &ajr:* "
    "-@all "
    # from clients
    "+evalsha +script|load +ping +info +time +hello "
    "+hget +hmget +hexists +hset +hdel +hgetall "
    "+zadd +zcard +zrange +zrem +zscore +zremrangebyscore +wait "
    "+xread +xrange +xrevrange +bzpopmin "
    "+get +set +del +exists +scan +subscribe +unsubscribe "
    # inside the scripts (Redis checks those too): a test compares with script_commands()
    "+incr +incrby +hincrby +hsetnx +hkeys +pexpire +publish "
    "+xadd +zpopmin +zrangebyscore +zremrangebyrank"
)


def _allowed() -> set[str]:
    return {word[1:].upper() for word in ACL_RULE.split() if word.startswith("+")}


@task(name="acl.double", attempts=2, backoff=FixedBackoff(delay_s=0))
async def double(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    if current_job().attempt == 1 and x == 3:
        raise RuntimeError("retry me")
    return 2 * x


@task(name="acl.forever")
async def forever() -> None:
    await hang()


async def test_least_privilege_user_runs_producer_and_worker(
    redis_server: RedisServer, client: aioredis.Redis, queue_name: str
) -> None:
    """Invariant: enqueue, results, retries, progress of events, worker heartbeats,
    stalled checks, schedules, metrics, pause/resume, a flow, cancelling a running job
    (through the cancel channel) and obliterate all work for a user limited to the
    documented commands, the ajr:* keys and the ajr:* channels."""
    await client.acl_setuser("ajr", reset=True, enabled=True, passwords=["+ajr-secret"],
                             keys=["ajr:*"], channels=["ajr:*"],
                             commands=ACL_RULE.split()[5:])
    url = f"redis://ajr:ajr-secret@127.0.0.1:{redis_server.port}/0"
    try:
        async with Queue.from_url(url, name=queue_name) as queue:
            jobs = await queue.enqueue_many([double.call(i) for i in range(10)])
            bad = await queue.enqueue(double, -1)
            steps = await queue.enqueue_flow(chain(double.call(1), double.fed(), double.fed()))
            await queue.pause()
            await queue.resume()
            worker = Worker(queue, tasks=[double], concurrency=4)
            await asyncio.wait_for(worker.run(burst=True), 30)
            assert [await j.result(timeout=5) for j in jobs] == [2 * i for i in range(10)]
            assert await steps[-1].result(timeout=5) == 8
            with pytest.raises(JobFailed):
                await bad.result(timeout=5)
            # a running job is cancelled by push (the lease renewal's fallback would take
            # lease/3 = 10 s): the worker may subscribe and the script may publish
            worker = Worker(queue, tasks=[forever], concurrency=4)
            running = asyncio.create_task(worker.run())
            try:
                long = await queue.enqueue(forever)
                await wait_until(lambda: _running(queue, long.id))
                await long.cancel()
                with pytest.raises(JobCancelled):
                    await long.result(timeout=3)
            finally:
                worker.stop()
                await running
            assert await queue.retry_failed() == 1
            assert (await queue.counts())
            await queue.obliterate(force=True)
    finally:
        await client.acl_deluser("ajr")
    print(f"\nACL user with {len(ACL_RULE.split()) - 6} commands on ~ajr:* ran producer and"
          " worker")


async def _running(queue: Queue, job_id: str) -> bool:
    info = await queue.job_info(job_id)
    return info is not None and info.state == "active"


def test_the_rule_allows_every_command_a_script_runs() -> None:
    """Redis checks the commands a script calls against the user's rule: the rule must
    name each of them (read from the scripts' sources)."""
    for name, commands in script_commands().items():
        missing = set(commands) - _allowed()
        assert not missing, f"{name} calls {sorted(missing)}, which ACL_RULE does not allow"


def test_docs_list_the_acl() -> None:
    """docs/guarantees.md shows exactly the rule this test proves sufficient."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "guarantees.md").read_text()
    block = text.split("ACL SETUSER ajr ", 1)[1].split("```", 1)[0]
    assert block.split() == ACL_RULE.replace(">ajr-secret", ">PASSWORD").split()
