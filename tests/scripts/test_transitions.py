"""Each transition script, through the Queue API or called as a worker calls it.
Runs on a standalone server and on a cluster-mode server (see conftest)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aiojobs_redis import JobNotFound, JobOptions, JobState, JobStateError, Queue, TaskCall

from . import direct


async def test_add_jobs_waiting_and_duplicate_id(squeue: Queue) -> None:
    job = await squeue.enqueue("t", 1, options=JobOptions(job_id="one"))
    assert not job.existed
    again = await squeue.enqueue("t", 2, options=JobOptions(job_id="one"))
    assert again.existed and again.id == "one"
    info = await job.info()
    assert info.state is JobState.WAITING and info.args == [1], "the first definition stays"
    assert (await squeue.counts())[JobState.WAITING] == 1


async def test_add_jobs_delayed_then_fetch_promotes_when_due(squeue: Queue) -> None:
    job = await squeue.enqueue("t", options=JobOptions(delay_s=0.2))
    assert (await job.info()).state is JobState.DELAYED
    next_due, jobs = await direct.fetch(squeue, 10)
    assert jobs == [] and 0 < next_due <= 200
    await asyncio.sleep(next_due / 1000 + 0.01)  # wait exactly until Redis says it is due
    next_due, jobs = await direct.fetch(squeue, 10)
    assert [j.id for j in jobs] == [job.id] and next_due == -1


async def test_fetch_takes_by_priority_then_fifo(squeue: Queue) -> None:
    calls = [("low", -5), ("a", 0), ("high", 7), ("b", 0), ("c", 0)]
    for name, priority in calls:
        await squeue.enqueue("t", options=JobOptions(job_id=name, priority=priority))
    _, jobs = await direct.fetch(squeue, 2)
    assert [j.id for j in jobs] == ["high", "a"]
    _, jobs = await direct.fetch(squeue, 10)
    assert [j.id for j in jobs] == ["b", "c", "low"]
    assert all(j.attempt == 1 for j in jobs)


async def test_paused_queue_gives_nothing(squeue: Queue) -> None:
    await squeue.enqueue("t")
    await squeue.pause()
    assert await squeue.is_paused()
    assert (await direct.fetch(squeue, 5))[1] == []
    await squeue.resume()
    assert len((await direct.fetch(squeue, 5))[1]) == 1


async def test_complete_is_fenced_by_token_and_idempotent(squeue: Queue) -> None:
    job = await squeue.enqueue("t")
    _, (fetched,) = await direct.fetch(squeue, 1)
    assert await direct.complete(squeue, fetched, token="stale") == -2
    assert (await job.info()).state is JobState.ACTIVE
    assert await direct.complete(squeue, fetched, b"\x2a") == 1
    assert await direct.complete(squeue, fetched, b"\x2b") == 0, "a repeated call changes nothing"
    assert await job.result(timeout=1) == 42


async def test_fail_retries_then_fails_for_good(squeue: Queue) -> None:
    job = await squeue.enqueue("t", options=JobOptions(attempts=2))
    _, (first,) = await direct.fetch(squeue, 1)
    assert await direct.fail(squeue, first, 0) == 2
    info = await job.info()
    assert info.state is JobState.WAITING and info.error == "ValueError: x"
    _, (second,) = await direct.fetch(squeue, 1)
    assert second.attempt == 2
    assert await direct.fail(squeue, first, 0) == -2, "the first attempt's token is stale"
    assert await direct.fail(squeue, second, 0) == 1
    info = await job.info()
    assert info.state is JobState.FAILED and info.attempts == 2 and info.traceback == "tb"


async def test_fail_with_delay_goes_to_delayed(squeue: Queue) -> None:
    job = await squeue.enqueue("t", options=JobOptions(attempts=3))
    _, (fetched,) = await direct.fetch(squeue, 1)
    assert await direct.fail(squeue, fetched, 60_000) == 2
    info = await job.info()
    assert info.state is JobState.DELAYED and info.due_at is not None


async def test_fail_without_retry_when_delay_is_minus_one(squeue: Queue) -> None:
    job = await squeue.enqueue("t", options=JobOptions(attempts=5))
    _, (fetched,) = await direct.fetch(squeue, 1)
    assert await direct.fail(squeue, fetched, -1) == 1
    assert (await job.info()).state is JobState.FAILED


async def test_extend_leases_reports_lost_ones(squeue: Queue) -> None:
    await squeue.enqueue("t", options=JobOptions(job_id="a"))
    await squeue.enqueue("t", options=JobOptions(job_id="b"))
    _, (a, b) = await direct.fetch(squeue, 2, lease_ms=1000)
    lost, cancel = await direct.run(squeue, "extend_leases", 60_000, a.id, a.token, b.id,
                                    "wrong")
    assert cancel == []
    assert lost == [b"b"]
    deadline = await squeue.client.zscore(squeue.keys.active, "a")
    assert deadline is not None and deadline > (await squeue.now()).timestamp() * 1000 + 50_000


async def test_recovered_job_goes_to_the_front_of_its_band(squeue: Queue) -> None:
    """A job recovered from a dead worker has waited already: it does not queue again
    behind the jobs enqueued since."""
    await squeue.enqueue("t", options=JobOptions(job_id="early"))
    await direct.fetch(squeue, 1, lease_ms=1)
    for i in range(3):
        await squeue.enqueue("t", options=JobOptions(job_id=f"later{i}"))
    await asyncio.sleep(0.01)
    assert await direct.run(squeue, "recover_stalled", squeue.events_maxlen, 3, 100) == [1, 0, 0]
    assert await squeue.job_ids(JobState.WAITING) == ["early", "later0", "later1", "later2"]


async def test_recover_stalled_waits_for_redis_to_serve_a_while(squeue: Queue) -> None:
    """The serving clock: after a gap (nothing served for longer than gap_ms: a pause, an
    outage) nothing is recovered until Redis has served gap_ms again."""
    await squeue.enqueue("t")
    await direct.fetch(squeue, 1, lease_ms=1)
    await asyncio.sleep(0.01)
    first = await direct.run(squeue, "recover_stalled", squeue.events_maxlen, 3, 100, -1, -1, 300)
    assert first[:2] == [0, 0] and first[2] < 0, "a new clock starts, silently"
    await asyncio.sleep(0.1)
    second = await direct.run(squeue, "recover_stalled", squeue.events_maxlen, 3, 100, -1, -1, 300)
    assert second[:2] == [0, 0] and 0 < second[2] <= 200
    await asyncio.sleep(0.5)  # a gap longer than 300 ms: Redis "paused"; the clock restarts
    third = await direct.run(squeue, "recover_stalled", squeue.events_maxlen, 3, 100, -1, -1, 300)
    assert third[:2] == [0, 0] and third[2] > 250
    for _ in range(10):  # served without a gap for 300 ms: recovery runs
        await asyncio.sleep(0.05)
        reply = await direct.run(squeue, "recover_stalled", squeue.events_maxlen, 3, 100, -1,
                                 -1, 300)
        if reply[2] == 0:
            break
    assert reply == [1, 0, 0]


async def test_recover_stalled_requeues_then_fails(squeue: Queue) -> None:
    job = await squeue.enqueue("t")
    _, (fetched,) = await direct.fetch(squeue, 1, lease_ms=1)
    await asyncio.sleep(0.01)
    assert await direct.run(squeue, "recover_stalled", squeue.events_maxlen, 1, 100) == [1, 0, 0]
    info = await job.info()
    assert info.state is JobState.WAITING and info.stalls == 1 and info.attempts == 0
    assert await direct.complete(squeue, fetched) == -2, "the old worker's outcome is refused"
    _, (again,) = await direct.fetch(squeue, 1, lease_ms=1)
    assert again.attempt == 1, "a stall gives the attempt back"
    await asyncio.sleep(0.01)
    assert await direct.run(squeue, "recover_stalled", squeue.events_maxlen, 1, 100) == [0, 1, 0]
    info = await job.info()
    assert info.state is JobState.FAILED and info.error and info.error.startswith("Stalled")


async def test_return_jobs_puts_them_first(squeue: Queue) -> None:
    await squeue.enqueue("t", options=JobOptions(job_id="first"))
    await squeue.enqueue("t", options=JobOptions(job_id="second"))
    _, (first,) = await direct.fetch(squeue, 1)
    assert await direct.run(squeue, "return_jobs", squeue.events_maxlen, first.id,
                            first.token) == [1]
    _, jobs = await direct.fetch(squeue, 5)
    assert [j.id for j in jobs] == ["first", "second"] and jobs[0].attempt == 1


async def test_update_progress_fenced(squeue: Queue) -> None:
    job = await squeue.enqueue("t")
    _, (fetched,) = await direct.fetch(squeue, 1)
    ok = await direct.run(squeue, "update_progress", squeue.events_maxlen, job.id,
                          fetched.token, b"\x32")
    stale = await direct.run(squeue, "update_progress", squeue.events_maxlen, job.id, "x", b"\x33")
    assert (ok, stale) == (1, -2)
    assert (await job.info()).progress == 50


async def test_remove_refuses_active_and_removes_others(squeue: Queue) -> None:
    waiting = await squeue.enqueue("t")
    active = await squeue.enqueue("t")
    await squeue.remove_job(waiting.id)
    with pytest.raises(JobNotFound):
        await waiting.info()
    _, (fetched,) = await direct.fetch(squeue, 1)
    assert fetched.id == active.id
    with pytest.raises(JobStateError):
        await active.remove()
    with pytest.raises(JobNotFound):
        await squeue.remove_job("nope")


async def test_retry_and_promote(squeue: Queue) -> None:
    job = await squeue.enqueue("t")
    _, (fetched,) = await direct.fetch(squeue, 1)
    await direct.fail(squeue, fetched, -1)
    await job.retry()
    info = await job.info()
    assert info.state is JobState.WAITING and info.attempts == 0
    with pytest.raises(JobStateError):
        await job.retry()
    later = await squeue.enqueue("t", options=JobOptions(delay_s=3600))
    await later.promote()
    assert (await later.info()).state is JobState.WAITING
    with pytest.raises(JobStateError):
        await later.promote()


async def test_drain_and_obliterate(squeue: Queue) -> None:
    await squeue.enqueue_many([_call() for _ in range(2500)])
    await squeue.enqueue("t", options=JobOptions(delay_s=60))
    await direct.fetch(squeue, 1)
    assert await squeue.drain() == 2500
    counts = await squeue.counts()
    assert counts[JobState.ACTIVE] == 1 and counts[JobState.WAITING] == 0
    with pytest.raises(JobStateError):
        await squeue.obliterate()
    assert await squeue.obliterate(force=True) == 1
    assert not [k async for k in squeue.client.scan_iter(match=f"ajr:{{{squeue.name}}}:*")]


def _call() -> TaskCall[Any]:
    return TaskCall.by_name("t")


async def test_worker_end_to_end(squeue: Queue) -> None:
    """A worker, results, retries and retry_failed on this server kind."""
    from aiojobs_redis import FixedBackoff, Worker, current_job, task

    @task(name="e2e", attempts=2, backoff=FixedBackoff(delay_s=0))
    async def e2e(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        if current_job().attempt == 1 and x % 3 == 0:
            raise RuntimeError("first attempt of a multiple of 3")
        return x * 10

    jobs = await squeue.enqueue_many([e2e.call(i) for i in range(30)])
    bad = await squeue.enqueue(e2e, -1)
    await asyncio.wait_for(Worker(squeue, tasks=[e2e], concurrency=8).run(burst=True), 30)
    assert [await j.result(timeout=5) for j in jobs] == [i * 10 for i in range(30)]
    assert (await bad.info()).state is JobState.FAILED
    assert await squeue.retry_failed() == 1
    assert (await bad.info()).state is JobState.WAITING
