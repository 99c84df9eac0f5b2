"""Dead-letter queues with redrive (issue 13, item 5), against a real Redis."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from aiojobs_redis import (
    ConfigurationError,
    FixedBackoff,
    JobState,
    Queue,
    Retention,
    Worker,
    codec,
    current_job,
    task,
)
from aiojobs_redis.producer.dead_letter import move_to_dead_letter

from .invariants import check_invariants

healthy: set[str] = set()


@task(name="dlq.flaky", attempts=2, backoff=FixedBackoff(delay_s=0))
async def flaky(kind: str) -> str:
    await current_job().log(f"attempt {current_job().attempt}")
    if kind not in healthy:
        raise ValueError(f"upstream down for {kind}")
    return f"{kind} ok"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    healthy.clear()


@pytest.fixture
async def pair(client: aioredis.Redis) -> AsyncIterator[tuple[Queue, Queue]]:
    name = f"dlq-{secrets.token_hex(3)}"
    origin = Queue(client, name=name, dead_letter=f"{name}.dead")
    dead = origin.dead_letter_queue()
    assert dead is not None
    try:
        yield origin, dead
    finally:
        await origin.obliterate(force=True)
        await dead.obliterate(force=True)
        await origin.close()
        await dead.close()


async def burst(queue: Queue) -> None:
    worker = Worker(queue, tasks=[flaky], handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 30)


async def test_a_job_failed_for_good_moves_with_its_history(pair: tuple[Queue, Queue]) -> None:
    origin, dead = pair
    job = await origin.enqueue(flaky, "billing")
    ok = await origin.enqueue(flaky, "fine")
    healthy.add("fine")
    await burst(origin)
    assert await ok.result(timeout=5) == "fine ok"
    assert await origin.job_info(job.id) is None, "gone from its origin"
    info = await dead.job(job.id).info()
    assert info.state is JobState.FAILED and info.attempts == 2
    assert info.error == "ValueError: upstream down for billing"
    assert info.traceback and "upstream down" in info.traceback
    assert [line.text for line in await dead.job(job.id).logs()] == ["attempt 1", "attempt 2"]
    origin_field = await dead.client.hget(dead.keys.job(job.id), "origin")
    assert origin_field == origin.name.encode()
    assert (await dead.counts())[JobState.FAILED] == 1
    await check_invariants(origin.client, origin.keys)
    await check_invariants(dead.client, dead.keys)


@task(name="dlq.payment", attempts=1, dead_letter="payments-dead")
async def payment(amount: int) -> int:
    raise ValueError(f"card declined for {amount}")


async def test_a_task_names_its_own_dead_letter_queue(pair: tuple[Queue, Queue]) -> None:
    """A task's dead_letter takes its failed jobs; the other tasks' go to the queue's."""
    origin, dead = pair
    own = Queue(origin.client, name="payments-dead")
    try:
        paid = await origin.enqueue(payment, 12)
        other = await origin.enqueue(flaky, "billing")
        worker = Worker(origin, tasks=[flaky, payment], handle_signals=False)
        await asyncio.wait_for(worker.run(burst=True), 30)
        assert (await own.job(paid.id).info()).error == "ValueError: card declined for 12"
        assert (await dead.job(other.id).info()).state is JobState.FAILED
        assert await dead.job_info(paid.id) is None and await own.job_info(other.id) is None
        assert payment.options(priority=3).dead_letter == "payments-dead"
        assert await own.redrive() == 1
        assert (await origin.job(paid.id).info()).state is JobState.WAITING
        with pytest.raises(ConfigurationError, match="queue name"):
            task(name="bad", dead_letter="no spaces allowed")(payment.fn)
    finally:
        await own.obliterate(force=True)


async def test_redrive_sends_jobs_back_as_new_attempts_filtered(
        pair: tuple[Queue, Queue]) -> None:
    origin, dead = pair
    jobs = [await origin.enqueue(flaky, kind) for kind in ("a", "b", "c")]
    await burst(origin)
    assert (await dead.counts())[JobState.FAILED] == 3
    healthy.update({"a", "b", "c"})
    assert await dead.redrive(error="for b") == 1
    assert await dead.redrive(task="no.such.task") == 0
    assert await dead.redrive(limit=1) == 1
    assert await dead.redrive() == 1
    assert (await dead.counts())[JobState.FAILED] == 0
    await burst(origin)
    assert sorted([await j.result(timeout=5) for j in jobs]) == ["a ok", "b ok", "c ok"]
    info = await jobs[0].info()
    assert info.state is JobState.COMPLETED and info.attempts == 1, "fresh attempts"


async def test_a_move_cut_short_is_finished_by_redrive(pair: tuple[Queue, Queue]) -> None:
    """The copy reached the dead-letter queue but the origin kept the job (a crash between
    the two steps): moving again adds nothing twice, and redrive retries it at home."""
    origin, dead = pair
    job = await origin.enqueue(flaky, "x")
    no_dlq = Queue(origin.client, name=origin.name)  # fails it without moving it
    worker = Worker(no_dlq, tasks=[flaky], handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 30)
    await no_dlq.close()
    add = __import__("aiojobs_redis.scripts", fromlist=["SCRIPTS"]).SCRIPTS["add_dead_jobs"]
    record = await origin.client.hgetall(origin.keys.job(job.id))
    flat = [v for kv in record.items() for v in kv if kv[0] not in (b"state", b"token")]
    await add(dead.client, add.keys_of(dead.keys),
              [dead.keys.job_prefix, dead.events_maxlen, -1, -1,
               codec.pack([[job.id, origin.name, flat]])])
    assert (await origin.job(job.id).info()).state is JobState.FAILED
    assert await move_to_dead_letter(origin, dead, [job.id]) == 1  # the copy: left alone
    assert await origin.job_info(job.id) is None
    healthy.add("x")
    await dead.redrive()
    await burst(origin)
    assert await job.result(timeout=5) == "x ok"


async def test_the_dead_letter_queue_has_its_own_retention(client: aioredis.Redis) -> None:
    name = f"dlqr-{secrets.token_hex(3)}"
    dead = Queue(client, name=f"{name}.dead", retention=Retention(failed_count=2))
    origin = Queue(client, name=name, dead_letter=dead)
    try:
        for kind in "pqrs":
            await origin.enqueue(flaky, kind)
        await burst(origin)
        assert (await origin.counts())[JobState.FAILED] == 0
        assert (await dead.counts())[JobState.FAILED] == 2, "the dead-letter queue's own limit"
        await check_invariants(dead.client, dead.keys)
    finally:
        await origin.obliterate(force=True)
        await dead.obliterate(force=True)
        await origin.close()
        await dead.close()


async def test_bad_settings_and_rows_are_refused(pair: tuple[Queue, Queue]) -> None:
    origin, dead = pair
    with pytest.raises(ConfigurationError):
        Queue(origin.client, name="same", dead_letter="same")
    with pytest.raises(ConfigurationError):
        Queue(origin.client, name="ok", dead_letter="no spaces")
    add = __import__("aiojobs_redis.scripts", fromlist=["SCRIPTS"]).SCRIPTS["add_dead_jobs"]
    for bad in (["", "o", []], ["id", "o", ["odd"]], ["id", "o", ["f"] * 402]):
        with pytest.raises(ResponseError, match="add_dead_jobs"):
            await add(dead.client, add.keys_of(dead.keys),
                      [dead.keys.job_prefix, dead.events_maxlen, -1, -1,
                       codec.pack([["good", "o", ["a", "b"]], bad])])
    assert sum((await dead.counts()).values()) == 0
