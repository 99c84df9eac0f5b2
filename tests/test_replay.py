"""Calls sent again after a lost reply (Redis applied them, then the connection died):
nothing is done twice and nothing is stranded."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator

import pytest

from aiojobs_redis import JobState, Queue, Worker, current_job, task
from aiojobs_redis._redis_server import RedisServer
from aiojobs_redis.ops import metrics
from aiojobs_redis.scripts import SCRIPTS

from .replay_proxy import ReplyLosingProxy

RUNS: Counter[str] = Counter()


@task(name="replay.work")
async def work(n: int) -> int:
    RUNS[current_job().id] += 1
    return n


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[ReplyLosingProxy]:
    p = await ReplyLosingProxy(redis_server.port).start()
    try:
        yield p
    finally:
        await p.close()


@pytest.mark.parametrize("script", ["fetch_jobs", "complete_jobs", "record_metrics"])
async def test_worker_round_trip_replayed_after_a_lost_reply(
        proxy: ReplyLosingProxy, queue: Queue, script: str) -> None:
    RUNS.clear()
    jobs = await queue.enqueue_many([work.call(i) for i in range(300)])
    via_proxy = Queue.from_url(proxy.url, name=queue.name)
    try:
        proxy.lose_reply_to(SCRIPTS[script].sha.encode())
        worker = Worker(via_proxy, tasks=[work], concurrency=20, handle_signals=False)
        await worker.run(burst=True)
    finally:
        await via_proxy.close()
    assert proxy.lost == 1, "the reply of one round trip was lost"
    assert worker.processed == 300
    assert set(RUNS.values()) == {1}, "each job ran once"
    infos = [await j.info() for j in jobs]
    assert all(i.state is JobState.COMPLETED and i.stalls == 0 for i in infos)
    snap = await metrics.snapshot(queue)
    assert snap.totals["completed"] == 300, "the metrics batch was counted once"


async def test_fetch_sent_again_hands_out_the_same_jobs(queue: Queue) -> None:
    from .scripts import direct

    await queue.enqueue_many([work.call(i) for i in range(5)])
    fetch = SCRIPTS["fetch_jobs"]
    args = [queue.keys.job_prefix, queue.events_maxlen, 3, 30_000, "w", "n1", 0,
            queue.keys.fetch_prefix]
    first = await fetch(queue.client, fetch.keys_of(queue.keys), args)
    again = await fetch(queue.client, fetch.keys_of(queue.keys), args)
    ids = [first[i] for i in range(1, len(first), 8)]
    assert len(ids) == 3 and [again[i] for i in range(1, len(again), 8)] == ids
    assert (await queue.counts())[JobState.WAITING] == 2, "no other job was taken"
    _, rest = await direct.fetch(queue, 5)
    assert len(rest) == 2
