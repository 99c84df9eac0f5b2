"""Scripts flushed from Redis (restart, SCRIPT FLUSH): a batch keeps its order."""

from __future__ import annotations

import secrets
from typing import Any

import redis.asyncio as aioredis

from aiojobs_redis import Queue, TaskCall, codec
from aiojobs_redis.scripts import SCRIPTS, Batch

from .direct import fetch


def _add_one(queue: Queue, batch: Batch) -> None:
    rows: list[list[Any]] = []
    queue._job_argv(TaskCall.by_name("t"), rows, None)
    script = SCRIPTS["add_jobs"]
    batch.add(script, script.keys_of(queue.keys),
              [queue.keys.job_prefix, queue.events_maxlen, codec.pack(rows)])


def _fetch(queue: Queue, batch: Batch) -> int:
    script = SCRIPTS["fetch_jobs"]
    return batch.add(script, script.keys_of(queue.keys), [
        queue.keys.job_prefix, queue.events_maxlen, 1, 30_000, "w", secrets.token_hex(4), 1000,
        queue.keys.fetch_prefix])


async def test_one_missing_script_reloads_them_all(queue: Queue, client: aioredis.Redis) -> None:
    await client.script_flush()
    await fetch(queue, 1)  # meets NOSCRIPT
    loaded = await client.script_exists(*(s.sha for s in SCRIPTS.values()))
    assert all(loaded), [n for n, ok in zip(SCRIPTS, loaded, strict=True) if not ok]


async def test_batch_after_flush_runs_in_order(queue: Queue, client: aioredis.Redis) -> None:
    """The sequence that made a burst worker stop with work left: after a flush, a batch
    of a fetch alone, then a batch of a write and a fetch that must see the write."""
    await client.script_flush()
    first = Batch()
    _fetch(queue, first)
    await first.execute(queue.client)
    second = Batch()
    _add_one(queue, second)
    at = _fetch(queue, second)
    results = await second.execute(queue.client)
    assert (len(results[at]) - 1) > 0, "the fetch ran before the add of its own batch"
    assert not second.reordered


async def test_reorder_by_another_client_is_reported(queue: Queue,
                                                     client: aioredis.Redis) -> None:
    """Another process that loads one script only leaves a mixed state: the batch's
    later call runs first, and the batch says so."""
    await client.script_flush()
    await client.script_load(SCRIPTS["fetch_jobs"].source)
    batch = Batch()
    _add_one(queue, batch)
    _fetch(queue, batch)
    await batch.execute(queue.client)
    assert batch.reordered


async def test_a_burst_worker_finishes_the_queue_across_script_flushes(
        queue: Queue, client: aioredis.Redis) -> None:
    """Issue 11, defect 10, end to end: the scripts are flushed while a burst worker runs
    (from a handler, between its round trips); the worker reloads them, keeps each round
    trip in order, and stops only once every job is done, not with work left."""
    from aiojobs_redis import JobState, Worker, current_job, task

    flushed: list[str] = []

    @task(name="reload.flushing")
    async def flushing(i: int) -> int:
        if i % 25 == 0:  # four flushes over the run, each between two round trips
            await client.script_flush()
            flushed.append(current_job().id)
        return i

    jobs = await queue.enqueue_many([flushing.call(i) for i in range(100)])
    worker = Worker(queue, tasks=[flushing], concurrency=5, handle_signals=False)
    await worker.run(burst=True)
    assert len(flushed) == 4
    assert worker.processed == 100
    assert (await queue.counts())[JobState.COMPLETED] == 100
    assert [await j.result(timeout=1) for j in jobs] == list(range(100))
