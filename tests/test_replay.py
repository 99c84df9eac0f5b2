"""Calls sent again after a lost reply (Redis applied them, then the connection died):
nothing is done twice and nothing is stranded."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from aiojobs_redis import JobState, Queue, Retention, Worker, current_job, task
from aiojobs_redis._redis_server import RedisServer
from aiojobs_redis.ops import metrics
from aiojobs_redis.scripts import SCRIPTS

from .conftest import wait_until
from .invariants import check_invariants
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
    await check_invariants(queue.client, queue.keys)  # the burst worker has returned


@pytest.mark.parametrize("lean", [True, False], ids=["lean-path", "pipeline"])
async def test_an_enqueue_sent_again_does_not_bring_back_a_job_that_ran(
        proxy: ReplyLosingProxy, queue: Queue, lean: bool) -> None:
    """Completed jobs kept: none. The enqueue's reply is lost; before the producer's
    client sends it again, a worker runs the job and its record is deleted. The call sent
    again must answer as the first time (added) and add nothing."""
    RUNS.clear()
    keep_none = Queue(queue.client, name=queue.name, retention=Retention(completed_count=0))
    via_proxy = Queue.from_url(proxy.url, name=queue.name)
    if not lean:
        via_proxy._line = None  # the client's own pipeline and retries
    try:
        await via_proxy.enqueue(work, 0)  # the producer's connection is made
        proxy.lose_reply_to(SCRIPTS["add_jobs"].sha.encode())
        proxy.open.clear()  # the client's reconnection waits at the proxy
        sending = asyncio.create_task(via_proxy.enqueue(work, 1))
        await wait_until(lambda: proxy.lost == 1 and proxy.waiting == 1)
        await Worker(keep_none, tasks=[work], handle_signals=False).run(burst=True)
        assert list(RUNS.values()) == [1, 1] and sum((await queue.counts()).values()) == 0
        proxy.open.set()
        job = await sending
        assert not job.existed and await queue.job_info(job.id) is None, "it ran and is gone"
        assert (await queue.counts())[JobState.WAITING] == 0, "nothing came back"
        await check_invariants(queue.client, queue.keys)
    finally:
        await via_proxy.close()
        await keep_none.close()


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
    await check_invariants(queue.client, queue.keys)


async def test_producer_calls_sent_again_answer_as_the_first_time(
        proxy: ReplyLosingProxy, queue: Queue) -> None:
    """enqueue, retry, promote, remove: each reply lost once; the client's own retry
    re-sends the call, which must not answer 'exists', 'not failed' or 'no such job'."""
    from aiojobs_redis import JobOptions, TaskCall

    via_proxy = Queue.from_url(proxy.url, name=queue.name)
    try:
        proxy.lose_reply_to(SCRIPTS["add_jobs"].sha.encode())
        [job] = await via_proxy.enqueue_many([work.call(1)])
        assert proxy.lost == 1 and not job.existed
        await queue.enqueue("replay.work", 2, options=JobOptions(job_id="later",
                                                                 delay_s=3600))
        proxy.lose_reply_to(SCRIPTS["promote_job"].sha.encode())
        await via_proxy.job("later").promote()
        assert proxy.lost == 2 and (await queue.job("later").info()).state is JobState.WAITING
        proxy.lose_reply_to(SCRIPTS["remove_job"].sha.encode())
        await via_proxy.job("later").remove()
        assert proxy.lost == 3 and await queue.job_info("later") is None
        await queue.enqueue_many([TaskCall.by_name("replay.nothing",
                                                   options=JobOptions(job_id="f"))])
        await Worker(queue, tasks=[work], handle_signals=False).run(burst=True)
        assert (await queue.job("f").info()).state is JobState.FAILED  # unknown task
        proxy.lose_reply_to(SCRIPTS["retry_jobs"].sha.encode())
        await via_proxy.job("f").retry()
        assert proxy.lost == 4 and (await queue.job("f").info()).state is JobState.WAITING
        await check_invariants(queue.client, queue.keys)
    finally:
        await via_proxy.close()
