"""Handlers decide their outcome: ``raise Retry(...)`` and ``raise Unrecoverable(...)``,
against a real Redis (issue 13, item 3)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from redis.exceptions import ResponseError

from aiojobs_redis import (
    FixedBackoff,
    JobFailed,
    JobState,
    Queue,
    Retry,
    Unrecoverable,
    Worker,
    codec,
    current_job,
    task,
)

from .scripts.direct import fetch, run

NOW = FixedBackoff(delay_s=0)
tries: Counter[str] = Counter()


@task(name="out.not_yet", attempts=3, backoff=NOW)
async def not_yet(key: str, times: int, count_attempt: bool) -> int:
    """Ask to be retried ``times`` times, then return the attempt number it ended on."""
    tries[key] += 1
    if tries[key] <= times:
        raise Retry(f"try {tries[key]}", delay_s=0, count_attempt=count_attempt)
    return current_job().attempt


@task(name="out.later", attempts=1)
async def later(delay_s: float) -> None:
    raise Retry("upstream rate limit", delay_s=delay_s, count_attempt=False)


@task(name="out.bad_input", attempts=5, backoff=NOW)
async def bad_input() -> None:
    tries["bad_input"] += 1
    raise Unrecoverable("no such customer")


@task(name="out.sync_bad", attempts=5, backoff=NOW)
def sync_bad() -> None:
    raise Unrecoverable("sync handlers too")


@task(name="out.bad_retry", attempts=1)
async def bad_retry() -> None:
    raise Retry(delay_s=-1)


async def burst(queue: Queue, *tasks: Any) -> Worker:
    worker = Worker(queue, tasks=list(tasks), handle_signals=False, concurrency=4)
    await asyncio.wait_for(worker.run(burst=True), 30)
    return worker


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    tries.clear()


async def test_a_counted_retry_uses_up_attempts(queue: Queue) -> None:
    ok = await queue.enqueue(not_yet, "ok", 2, True)  # retried twice: ends on attempt 3
    out = await queue.enqueue(not_yet, "out", 5, True)  # more retries than its 3 attempts
    await burst(queue, not_yet)
    assert await ok.result(timeout=5) == 3
    info = await ok.info()
    assert info is not None and info.attempts == 3
    with pytest.raises(JobFailed) as failed:
        await out.result(timeout=5)
    assert failed.value.error == "Retry: try 3 (no attempts left)"
    assert tries["out"] == 3


async def test_a_retry_that_gives_its_attempt_back_runs_whatever_the_attempts(
        queue: Queue) -> None:
    job = await queue.enqueue(not_yet, "free", 7, False)  # 7 retries on 3 attempts
    await burst(queue, not_yet)
    assert await job.result(timeout=5) == 1, "every Retry gave its attempt back"
    assert tries["free"] == 8
    info = await job.info()
    assert info is not None and info.attempts == 1 and info.state is JobState.COMPLETED


async def test_retry_moves_a_running_job_back_to_delayed_with_its_delay(queue: Queue) -> None:
    job = await queue.enqueue(later, 3600)
    before = time.time()
    worker = Worker(queue, tasks=[later], handle_signals=False)
    runner = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(10):
            async for event in queue.events(since="0"):
                if event.event == "retrying" and event.job_id == job.id:
                    break
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 30)
    info = await job.info()
    assert info is not None and info.state is JobState.DELAYED
    assert info.error == "Retry: upstream rate limit"
    assert info.attempts == 0, "the attempt was given back"
    assert info.due_at is not None
    assert before + 3590 < info.due_at.timestamp() < time.time() + 3610


async def test_unrecoverable_fails_for_good_at_once(queue: Queue) -> None:
    jobs = [await queue.enqueue(bad_input), await queue.enqueue(sync_bad)]
    await burst(queue, bad_input, sync_bad)
    for job, message in zip(jobs, ["no such customer", "sync handlers too"], strict=True):
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=5)
        assert failed.value.error == f"Unrecoverable: {message}"
        info = await job.info()
        assert info is not None and info.attempts == 1 and info.max_attempts == 5
        assert info.traceback is not None and "raise Unrecoverable" in info.traceback
    assert tries["bad_input"] == 1


async def test_a_bad_retry_is_a_plain_failure_with_a_clear_message(queue: Queue) -> None:
    job = await queue.enqueue(bad_retry)
    await burst(queue, bad_retry)
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=5)
    assert failed.value.error.startswith("ValueError: Retry(delay_s=...) must be from 0 to")


def test_retry_checks_its_delay() -> None:
    for wrong in (-1, float("nan"), float("inf"), True, "5"):
        with pytest.raises(ValueError, match="Retry"):
            Retry(delay_s=wrong)  # type: ignore[arg-type]
    assert Retry("x", delay_s=0).delay_s == 0


async def test_fail_jobs_refuses_a_malformed_uncounted_flag_and_writes_nothing(
        queue: Queue) -> None:
    await queue.enqueue(later, 1)
    _, (job,) = await fetch(queue, 1)
    for row in [(job.id, job.token, "e", "tb", 0, 3),  # neither 1 nor 2
                (job.id, job.token, "e", "tb", -1, 1)]:  # uncounted needs a delay
        with pytest.raises(ResponseError, match="fail_jobs"):
            await run(queue, "fail_jobs", queue.events_maxlen, -1, -1, codec.pack([row]))
        info = await queue.job(job.id).info()
        assert info is not None and info.state is JobState.ACTIVE and info.attempts == 1
