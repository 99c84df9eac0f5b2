"""Natural batching of concurrent enqueues: calls made while one is on its way to Redis
go together in the next round trip; each caller still gets its own jobs, or the error of
the round trip its jobs were in."""

from __future__ import annotations

import asyncio

from aiojobs_redis import JobState, Queue, RedisOutOfMemory, task
from aiojobs_redis.connection import AnyRedis


@task(name="batching.noop")
async def noop(i: int) -> int:
    return i


async def _script_calls(client: AnyRedis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_concurrent_enqueues_share_round_trips(queue: Queue) -> None:
    await queue.client.config_resetstat()
    jobs = await asyncio.gather(*(queue.enqueue(noop, i) for i in range(200)))
    calls = await _script_calls(queue.client)
    # the first call goes alone; the 199 made meanwhile go together in one more
    assert calls <= 5, f"{calls} script calls for 200 concurrent enqueues"
    assert len({j.id for j in jobs}) == 200 and not any(j.existed for j in jobs)
    infos = await queue._job_infos([j.id for j in jobs])
    assert [i.args if i else None for i in infos] == [[i] for i in range(200)]
    assert (await queue.counts())[JobState.WAITING] == 200


async def test_each_caller_gets_its_own_statuses(queue: Queue) -> None:
    await queue.enqueue(noop.options(job_id="taken"), 0)
    first, again, fresh, window, same_window = await asyncio.gather(
        queue.enqueue(noop, 1),
        queue.enqueue(noop.options(job_id="taken"), 2),
        queue.enqueue(noop.options(job_id="fresh"), 3),
        queue.enqueue(noop.options(dedup_key="k", dedup_ttl_s=60), 4),
        queue.enqueue(noop.options(dedup_key="k", dedup_ttl_s=60), 5))
    assert not first.existed and again.existed and again.id == "taken"
    assert fresh.id == "fresh" and not fresh.existed
    assert same_window.id == window.id and same_window.existed
    assert (await queue.counts())[JobState.WAITING] == 4


async def test_a_refused_round_trip_fails_every_caller_in_it(queue: Queue) -> None:
    client = queue.client
    used = int((await client.info("memory"))["used_memory"])
    await client.config_set("maxmemory", str(max(used // 2, 1024 * 1024)))
    try:
        results = await asyncio.gather(*(queue.enqueue(noop, i) for i in range(50)),
                                       return_exceptions=True)
    finally:
        await client.config_set("maxmemory", "0")
    assert all(isinstance(r, RedisOutOfMemory) for r in results), results[:3]
    assert (await queue.counts())[JobState.WAITING] == 0, "no partial job"
    # and the queue's batching is not stuck: the next calls go through
    jobs = await asyncio.gather(*(queue.enqueue(noop, i) for i in range(10)))
    assert (await queue.counts())[JobState.WAITING] == len(jobs) == 10


async def test_a_cancelled_caller_does_not_disturb_the_others(queue: Queue) -> None:
    calls = [asyncio.ensure_future(queue.enqueue(noop, i)) for i in range(20)]
    await asyncio.sleep(0)  # every call has started: one on its way, 19 waiting
    calls[5].cancel()
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(done[5], asyncio.CancelledError)
    assert sum(1 for d in done if not isinstance(d, BaseException)) == 19
