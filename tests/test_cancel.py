"""Cancel a job from any process (issue 13, item 2), against a real Redis: a waiting or
delayed job never runs; a running one is stopped on its worker through the queue's cancel
channel, recorded cancelled and fenced; a request its worker missed still holds."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from aiojobs_redis import (
    JobCancelled,
    JobOptions,
    JobState,
    JobStateError,
    Queue,
    Worker,
    current_job,
    task,
)
from aiojobs_redis.scripts import SCRIPTS

from .conftest import hang, wait_until
from .invariants import check_invariants
from .scripts import direct

started: dict[str, asyncio.Event] = {}
cleaned: list[str] = []


def _started(key: str) -> asyncio.Event:
    return started.setdefault(key, asyncio.Event())


@task(name="cancel.forever")
async def forever(key: str) -> None:
    _started(key).set()
    try:
        await hang()
    finally:
        cleaned.append(key)  # a handler cleans up on CancelledError


@task(name="cancel.stubborn")
async def stubborn(key: str) -> str:
    """Swallows the cancellation and returns: still recorded cancelled."""
    _started(key).set()
    try:
        await hang()
    except asyncio.CancelledError:
        return "finished anyway"
    return "never"


sync_seen: list[bool] = []
sync_started = threading.Event()


@task(name="cancel.sync")
def sync_loop() -> None:
    sync_started.set()
    ctx = current_job()
    sync_seen.append(ctx.cancel_event.wait(30))  # wakes when the cancel reaches its worker


@task(name="cancel.noop")
async def noop() -> None:
    return None


@asynccontextmanager
async def running(queue: Queue, *tasks: object, **kwargs: object) -> AsyncIterator[Worker]:
    worker = Worker(queue, tasks=list(tasks) or [forever, stubborn, noop],  # type: ignore[arg-type]
                    handle_signals=False, **kwargs)  # type: ignore[arg-type]
    runner = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: worker.cancels.subscribed.is_set(), 10)
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 30)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    started.clear()
    cleaned.clear()
    sync_seen.clear()
    sync_started.clear()


async def test_a_waiting_or_delayed_job_is_cancelled_and_never_runs(queue: Queue) -> None:
    waiting = await queue.enqueue(noop)
    delayed = await queue.enqueue(noop.options(delay_s=3600))
    other = await queue.enqueue(noop)
    assert await waiting.cancel(by="ops:ann") is JobState.CANCELLED
    assert await queue.cancel_job(delayed.id) is JobState.CANCELLED
    worker = Worker(queue, tasks=[noop], handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 30)
    assert worker.processed == 1
    await other.result(timeout=5)
    for job, by in ((waiting, "ops:ann"), (delayed, "api")):
        info = await job.info()
        assert info.state is JobState.CANCELLED and info.cancelled_by == by
        assert info.attempts == 0 and info.finished_at is not None
        with pytest.raises(JobCancelled, match=by):
            await job.result(timeout=5)
    counts = await queue.counts()
    assert counts[JobState.CANCELLED] == 2 and counts[JobState.DELAYED] == 0
    await check_invariants(queue.client, queue.keys)


async def test_cancelling_twice_or_a_finished_job_says_so(queue: Queue) -> None:
    job = await queue.enqueue(noop)
    assert await job.cancel() is JobState.CANCELLED
    with pytest.raises(JobStateError, match="it is cancelled"):
        await job.cancel()
    done = await queue.enqueue(noop)
    await asyncio.wait_for(Worker(queue, tasks=[noop], handle_signals=False).run(burst=True),
                           30)
    with pytest.raises(JobStateError, match="it is completed"):
        await done.cancel()
    from aiojobs_redis import JobNotFound
    with pytest.raises(JobNotFound):
        await queue.cancel_job("no-such-job")
    refused = [k async for k in queue.client.scan_iter(match=queue.keys.op_prefix + "*")]
    assert len(refused) == 1, "only the success is remembered; a refusal writes nothing"


async def test_a_running_job_is_stopped_on_its_worker_within_milliseconds(
        queue: Queue) -> None:
    """The figure of the note: from cancel_job's reply to the outcome recorded."""
    latencies: list[float] = []
    async with running(queue, forever, concurrency=4):
        for i in range(20):
            key = f"lat{i}"
            job = await queue.enqueue(forever, key)
            await asyncio.wait_for(_started(key).wait(), 10)
            sent = time.perf_counter()
            assert await job.cancel(by="test") is JobState.ACTIVE
            with pytest.raises(JobCancelled):
                await job.result(timeout=10)
            latencies.append((time.perf_counter() - sent) * 1000)
            info = await job.info()
            assert info.state is JobState.CANCELLED and info.cancelled_by == "test"
            assert info.error == "Cancelled by test"
    assert sorted(cleaned) == sorted(f"lat{i}" for i in range(20)), "finally blocks ran"
    p50 = statistics.median(latencies)
    print(f"\ncancel of a running job -> cancelled recorded: p50 {p50:.2f} ms,"
          f" max {max(latencies):.2f} ms over {len(latencies)}")
    # a lease renewal (the fallback) comes only every lease/3 = 10 s: the push did this
    assert max(latencies) < 2000
    await check_invariants(queue.client, queue.keys)


async def test_a_handler_that_swallows_the_cancel_is_still_recorded_cancelled(
        queue: Queue) -> None:
    async with running(queue, stubborn):
        job = await queue.enqueue(stubborn, "s")
        await asyncio.wait_for(_started("s").wait(), 10)
        await job.cancel()
        with pytest.raises(JobCancelled):
            await job.result(timeout=10)


async def test_a_sync_handler_sees_the_cooperative_flag(queue: Queue) -> None:
    async with running(queue, sync_loop):
        job = await queue.enqueue(sync_loop)
        await asyncio.wait_for(asyncio.to_thread(sync_started.wait, 10), 15)
        await job.cancel()
        with pytest.raises(JobCancelled):
            await job.result(timeout=10)
        await wait_until(lambda: sync_seen == [True], 10)


async def test_a_request_the_worker_missed_arrives_with_the_lease_renewal(
        queue: Queue) -> None:
    """A worker that was not subscribed when the request was published (pub/sub is at
    most once) learns it from its next lease renewal."""
    async with running(queue, forever, lease_ms=1500):
        job = await queue.enqueue(forever, "missed")
        await asyncio.wait_for(_started("missed").wait(), 10)
        script = SCRIPTS["cancel_job"]
        k = queue.keys
        status = await script(queue.client, script.keys_of(k), [
            k.job_prefix, queue.events_maxlen, "", job.id, "nobody-listened", -1, -1,
            k.base + "not-the-cancel-channel"])
        assert status == [2]
        info = await job.info()
        assert info.state is JobState.ACTIVE and info.cancel_requested
        with pytest.raises(JobCancelled):
            await job.result(timeout=10)  # renewals every 0.5 s


async def test_a_pending_request_wins_over_a_retry_a_stall_and_a_hand_back(
        queue: Queue) -> None:
    """A running job whose worker never acts on the request (it died, it failed the
    attempt, it shut down) is cancelled when it leaves active, not retried."""
    ids = [f"j{i}" for i in range(3)]
    for job_id in ids:
        await queue.enqueue("t", options=JobOptions(job_id=job_id, attempts=5))
    _, (a, b, c) = await direct.fetch(queue, 3, lease_ms=1)
    for job in (a, b, c):
        assert await queue.cancel_job(job.id, by="ops") is JobState.ACTIVE
    assert await direct.fail(queue, a, 0) == 3  # a retry the request overrides
    statuses = await direct.run(queue, "return_jobs", queue.events_maxlen, b.id, b.token)
    assert statuses == [3]
    await asyncio.sleep(0.01)  # c's 1 ms lease has run out
    requeued, failed, _ = await direct.run(queue, "recover_stalled", queue.events_maxlen, 3,
                                           100, -1, -1, -1)
    assert (requeued, failed) == (0, 1)
    for job_id in ids:
        info = await queue.job(job_id).info()
        assert info.state is JobState.CANCELLED and info.cancelled_by == "ops"
    await check_invariants(queue.client, queue.keys)


async def test_a_worker_reports_a_cancel_fenced_by_its_lease(queue: Queue) -> None:
    await queue.enqueue("t", options=JobOptions(job_id="x"))
    _, (job,) = await direct.fetch(queue, 1)
    from aiojobs_redis import codec
    row = (job.id, "stale-token", "Cancelled", "", -1, 2)
    statuses = await direct.run(queue, "fail_jobs", queue.events_maxlen, -1, -1,
                                codec.pack([row]))
    assert statuses == [-2], "a worker that lost the lease cannot record the cancel"
    row = (job.id, job.token, "Cancelled", "", -1, 2)
    statuses = await direct.run(queue, "fail_jobs", queue.events_maxlen, -1, -1,
                                codec.pack([row]))
    assert statuses == [3]
    info = await queue.job("x").info()
    assert info.state is JobState.CANCELLED and info.cancelled_by is None
    assert info.error == "Cancelled by its worker"
