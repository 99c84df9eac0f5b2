"""Job logs, changing a waiting job's priority or delay, and expiry of waiting jobs
(issue 13, item 6), against a real Redis."""

from __future__ import annotations

import asyncio
import itertools

import anyio.from_thread
import pytest
from redis.exceptions import ResponseError

from aiojobs_redis import (
    ConfigurationError,
    FixedBackoff,
    JobNotFound,
    JobOptions,
    JobState,
    JobStateError,
    LeaseLost,
    Queue,
    Worker,
    current_job,
    task,
)
from aiojobs_redis.testing import run_until_idle
from aiojobs_redis.worker.context import JobContext, WorkerContext

from .invariants import check_invariants
from .scripts import direct


@task(name="edits.chatty", attempts=2, backoff=FixedBackoff(delay_s=0))
async def chatty(lines: int) -> None:
    ctx = current_job()
    for i in range(lines):
        await ctx.log(f"step {i} of attempt {ctx.attempt}")
    if ctx.attempt == 1:
        raise ValueError("first attempt fails")


@task(name="edits.sync_chatty")
def sync_chatty() -> None:
    anyio.from_thread.run(current_job().log, "from a thread " + "x" * 3000)


order: list[str] = []


@task(name="edits.record")
async def record(name: str) -> None:
    order.append(name)


async def burst(queue: Queue, *tasks: object) -> Worker:
    worker = Worker(queue, tasks=list(tasks), handle_signals=False,  # type: ignore[arg-type]
                    concurrency=1)
    await asyncio.wait_for(worker.run(burst=True), 30)
    return worker


async def test_a_job_keeps_its_log_across_attempts_capped(queue: Queue) -> None:
    job = await queue.enqueue(chatty, 60)
    sync = await queue.enqueue(sync_chatty)
    await burst(queue, chatty, sync_chatty)
    await job.result(timeout=5)
    lines = await job.logs()
    assert len(lines) == 100, "the last 100 of 120 lines"
    assert lines[0].text == "step 20 of attempt 1" and lines[0].attempt == 1
    assert lines[-1].text == "step 59 of attempt 2" and lines[-1].attempt == 2
    assert all(a.at <= b.at for a, b in itertools.pairwise(lines))
    (line,) = await sync.logs()
    assert line.text.startswith("from a thread") and len(line.text) == 2000
    assert await queue.job((await queue.enqueue(record, "quiet")).id).logs() == []
    with pytest.raises(JobNotFound):
        await queue.job_logs("no-such-job")


async def test_only_the_lease_holder_writes_the_log(queue: Queue) -> None:
    await queue.enqueue("t", options=JobOptions(job_id="held"))
    await direct.fetch(queue, 1)
    ctx = JobContext(id="held", queue=queue, task="t", attempt=1, max_attempts=1,
                     token="not-the-token", worker=WorkerContext("w", (queue,)))
    with pytest.raises(LeaseLost):
        await ctx.log("an old attempt")
    assert await queue.job("held").logs() == []


async def test_changing_priority_reorders_waiting_jobs(queue: Queue) -> None:
    order.clear()
    for name in ("a", "b", "c"):
        await queue.enqueue(record.options(job_id=name), name)
    assert await queue.job("c").change(priority=10) is JobState.WAITING
    assert await queue.change_job("a", priority=0) is JobState.WAITING  # keeps its place
    await burst(queue, record)
    assert order == ["c", "a", "b"]


async def test_changing_the_delay_moves_a_job_between_waiting_and_delayed(
        queue: Queue) -> None:
    order.clear()
    await queue.enqueue(record.options(job_id="later"), "later")
    await queue.enqueue(record.options(job_id="now", delay_s=3600), "now")
    assert await queue.change_job("later", delay_s=3600) is JobState.DELAYED
    assert await queue.change_job("now", delay_s=0, priority=5) is JobState.WAITING
    info = await queue.job("later").info()
    assert info.state is JobState.DELAYED and info.due_at is not None
    await run_until_idle(queue, record)  # what is due; "later" is not waited for
    assert order == ["now"]
    assert await queue.change_job("later", delay_s=7200) is JobState.DELAYED
    await check_invariants(queue.client, queue.keys)


async def test_a_running_or_finished_job_cannot_change(queue: Queue) -> None:
    done = await queue.enqueue(record, "x")
    await burst(queue, record)
    with pytest.raises(JobStateError, match="it is completed"):
        await done.change(priority=1)
    await queue.enqueue("t", options=JobOptions(job_id="busy"))
    await direct.fetch(queue, 1)
    with pytest.raises(JobStateError, match="it is active"):
        await queue.change_job("busy", delay_s=1)
    with pytest.raises(JobNotFound):
        await queue.change_job("nope", priority=1)
    with pytest.raises(ConfigurationError):
        await queue.change_job("busy")
    with pytest.raises(ConfigurationError):
        await queue.change_job("busy", priority=5000)
    with pytest.raises(ResponseError, match="change_job"):  # the script checks too
        await direct.run(queue, "change_job", queue.events_maxlen, "", "busy", "5000", "")


async def test_a_job_not_started_before_it_expires_never_runs(queue: Queue) -> None:
    order.clear()
    stale = await queue.enqueue(record.options(expires_s=0.001), "stale")
    fresh = await queue.enqueue(record.options(expires_s=3600), "fresh")
    await asyncio.sleep(0.01)  # past the 1 ms deadline (by Redis's clock, which is ms)
    await burst(queue, record)
    assert order == ["fresh"]
    info = await stale.info()
    assert info.state is JobState.FAILED and info.attempts == 0
    assert info.error is not None and info.error.startswith("Expired:")
    assert (await fresh.info()).state is JobState.COMPLETED
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await queue.client.xrange(
        queue.keys.events)  # type: ignore[assignment]
    assert b"expired" in [fields[b"e"] for _, fields in entries]
    await check_invariants(queue.client, queue.keys)


def test_expires_s_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="expires_s"):
        JobOptions(expires_s=0)
