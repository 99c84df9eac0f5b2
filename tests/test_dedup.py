"""Deduplication and debounce (issue 13, item 4), against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from aiojobs_redis import ConfigurationError, JobOptions, JobState, Queue, Worker, codec, task

from .conftest import wait_until
from .invariants import check_invariants
from .scripts import direct


@task(name="dedup.echo")
async def echo(x: int) -> int:
    return x


async def test_same_key_within_the_window_yields_the_first_job(queue: Queue) -> None:
    first = await queue.enqueue(echo.options(dedup_key="user:1", dedup_ttl_s=60), 1)
    again = await queue.enqueue(echo.options(dedup_key="user:1", dedup_ttl_s=60), 2)
    other = await queue.enqueue(echo.options(dedup_key="user:2", dedup_ttl_s=60), 3)
    assert again.id == first.id and again.existed and not first.existed
    assert other.id != first.id
    # in one batch too: the first call opens the window, the second finds it
    a, b = await queue.enqueue_many([echo.options(dedup_key="k", dedup_ttl_s=60).call(4),
                                     echo.options(dedup_key="k", dedup_ttl_s=60).call(5)])
    assert b.id == a.id
    await asyncio.wait_for(Worker(queue, tasks=[echo], handle_signals=False).run(burst=True),
                           30)
    assert [await j.result(timeout=5) for j in (first, other, a)] == [1, 3, 4]
    # the window outlives the job: still the same job (BullMQ's TTL mode)
    assert (await queue.enqueue(echo.options(dedup_key="user:1", dedup_ttl_s=60), 9)).id \
        == first.id


async def test_the_window_expires_by_itself(queue: Queue) -> None:
    first = await queue.enqueue(echo.options(dedup_key="w", dedup_ttl_s=0.05), 1)
    window = queue.keys.dedup_prefix + "w"
    assert 0 < await queue.client.pttl(window) <= 50
    async def gone() -> bool:  # Redis expires it; nothing else deletes it
        return not await queue.client.exists(window)
    await wait_until(gone, 5)
    later = await queue.enqueue(echo.options(dedup_key="w", dedup_ttl_s=60), 2)
    assert later.id != first.id and not later.existed


async def test_a_removed_job_frees_its_window(queue: Queue) -> None:
    first = await queue.enqueue(echo.options(dedup_key="r", dedup_ttl_s=60), 1)
    await first.remove()
    second = await queue.enqueue(echo.options(dedup_key="r", dedup_ttl_s=60), 2)
    assert second.id != first.id


async def test_debounce_replaces_the_arguments_and_postpones(queue: Queue) -> None:
    opts = {"dedup_key": "search", "dedup_ttl_s": 60, "debounce": True}
    first = await queue.enqueue(echo.options(**opts, delay_s=3600), 1)
    due_first = (await first.info()).due_at
    second = await queue.enqueue(echo.options(**opts, delay_s=7200), 2)
    assert second.id == first.id
    info = await first.info()
    assert info.args == [2] and info.state is JobState.DELAYED
    assert info.due_at is not None and due_first is not None and info.due_at > due_first
    # without a delay: the pending job runs now, with the last arguments
    third = await queue.enqueue(echo.options(dedup_key="search", dedup_ttl_s=60,
                                             debounce=True), 3)
    assert third.id == first.id
    assert (await first.info()).state is JobState.WAITING
    await asyncio.wait_for(Worker(queue, tasks=[echo], handle_signals=False).run(burst=True),
                           30)
    assert await first.result(timeout=5) == 3
    # the job has run: a debounced enqueue now adds a new job
    fourth = await queue.enqueue(echo.options(dedup_key="search", dedup_ttl_s=60,
                                              debounce=True), 4)
    assert fourth.id != first.id
    counts = await queue.counts()
    assert counts[JobState.COMPLETED] == 1 and counts[JobState.WAITING] == 1
    await check_invariants(queue.client, queue.keys)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="dedup_ttl_s"):
        JobOptions(dedup_key="x")
    with pytest.raises(ConfigurationError, match="dedup_key"):
        JobOptions(dedup_key="", dedup_ttl_s=1)
    with pytest.raises(ConfigurationError, match="dedup_ttl_s"):
        JobOptions(dedup_key="x", dedup_ttl_s=0)
    with pytest.raises(ConfigurationError, match="debounce"):
        JobOptions(dedup_key="x", dedup_ttl_s=1, debounce="yes")  # type: ignore[arg-type]


async def test_a_malformed_dedup_row_is_refused_and_nothing_is_written(queue: Queue) -> None:
    good = ["ok", "t", codec.encode_args("t", (), {}), codec.encode_options(JobOptions()),
            0, 1, -1, -1]
    for bad in ({"dedup": "", "ttl_ms": 1000}, {"dedup": "k", "ttl_ms": 0},
                {"dedup": "k", "ttl_ms": 1000, "debounce": 2}, {"debounce": 1},
                {"expires_ms": 0}, ["k", 1000]):
        with pytest.raises(ResponseError, match="add_jobs"):
            await direct.run(queue, "add_jobs", queue.events_maxlen,
                             codec.pack([good, ["bad", *good[1:], bad]]),
                             queue.keys.dedup_prefix)
    assert sum((await queue.counts()).values()) == 0
    assert not [k async for k in queue.client.scan_iter(match=queue.keys.base + "*")
                if not k.endswith(b":seq")]
