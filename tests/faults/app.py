"""A worker application for the fault tests, run as a real process:

    python -m aiojobs_redis worker tests.faults.app:make_worker

Configured by environment: REDIS_URL, AJR_QUEUE, AJR_LEASE_MS, AJR_CONCURRENCY.
Each handler run is recorded in a hash under the queue's hash tag, one field per run
(``job id|lease token`` of the attempt, valued with the worker id), so the test can
count how often each job ran: a write replayed after a lost reply (a Redis crash) lands
on the same field, so it never counts as a second run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import Redis as SyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aiojobs_redis import JobContext, Queue, Retention, Worker, current_job, task

log = logging.getLogger("tests.faults.app")
T = TypeVar("T")

#: how long the test's own bookkeeping in a handler keeps retrying through an outage;
#: far longer than any outage a scenario makes, so a Redis restart never fails a job
#: because of the test's writes
BOOKKEEPING_DEADLINE_S = 90.0


def runs_key(queue: str) -> str:
    return f"ajr:{{{queue}}}:test:runs"


def run_field(ctx: JobContext) -> str:
    return f"{ctx.id}|{ctx.token}"  # the token has no '|'; an id might


def job_of_run(field: bytes | str) -> str:
    text = field.decode() if isinstance(field, bytes) else field
    return text.rsplit("|", 1)[0]


async def persist(write: Callable[[], Awaitable[T]]) -> T:
    """Run an idempotent write until Redis acknowledges it (redis-py's own retries can
    run out inside an outage), for at most BOOKKEEPING_DEADLINE_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOOKKEEPING_DEADLINE_S
    delay = 0.05
    while True:
        try:
            return await write()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            if loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def log_run(ctx: JobContext) -> None:
    client = ctx.queue.client
    await persist(lambda: client.hset(runs_key(ctx.queue.name), run_field(ctx),
                                      ctx.worker.worker_id))


@task(name="faults.work")
async def work(seconds: float) -> str:
    ctx = current_job()
    await log_run(ctx)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        log.info("handler of %s over: cancelled (token %s)", ctx.id, ctx.token)
        raise
    log.info("handler of %s over: returned (token %s)", ctx.id, ctx.token)  # a fact to wait on
    return ctx.id


@task(name="faults.collect")
async def collect(values: list[str]) -> int:
    """A flow's fan-in: fed the results (job ids) of the jobs it waited for."""
    await log_run(current_job())
    return len(values)


@task(name="faults.block_loop_once")
async def block_loop_once(seconds: float) -> str:
    """Blocks the event loop (time.sleep in an async def) the first time it runs: for
    ``seconds``, and on until another worker has taken the job over."""
    ctx = current_job()
    client = ctx.queue.client
    await log_run(ctx)
    key = f"ajr:{{{ctx.queue.name}}}:test:blocked:{ctx.id}"
    # the first run's token claims the key; replaying the SET keeps it (idempotent)
    await persist(lambda: client.set(key, ctx.token, nx=True))
    if await persist(lambda: client.get(key)) == ctx.token.encode():
        _block_until_taken_over(ctx, seconds)  # the misbehaviour under test
    return ctx.id


def _block_until_taken_over(ctx: JobContext, seconds: float) -> None:
    """Sleep ``seconds``, then on (at most BOOKKEEPING_DEADLINE_S in all) until the job's
    lease token is no longer this attempt's: another worker recovered it. A fact, not a
    time: on a loaded machine the other worker may start later than ``seconds``, and a
    lease that expired but was not recovered yet is still renewed by its holder."""
    started = time.monotonic()
    time.sleep(seconds)
    url = os.environ.get("REDIS_URL")
    if url is None:
        return
    with SyncRedis.from_url(url) as sync:  # the worker's own client needs its loop
        while time.monotonic() - started < BOOKKEEPING_DEADLINE_S:
            try:
                if sync.hget(ctx.queue.keys.job(ctx.id), "token") != ctx.token.encode():
                    return
            except (RedisConnectionError, RedisTimeoutError):
                pass
            time.sleep(0.05)


def make_worker() -> Worker:
    # keep every finished job for the test's history check (production keeps fewer)
    keep_all = Retention(completed_count=None, completed_age_s=3600, failed_count=None,
                         failed_age_s=3600)
    queue = Queue.from_url(os.environ["REDIS_URL"], name=os.environ["AJR_QUEUE"],
                           retention=keep_all)
    return Worker(
        queue,
        tasks=[work, block_loop_once, collect],
        concurrency=int(os.environ.get("AJR_CONCURRENCY", "5")),
        lease_ms=int(os.environ.get("AJR_LEASE_MS", "2000")),
        shutdown_timeout_s=float(os.environ.get("AJR_SHUTDOWN_S", "5")),
    )
