"""A worker application for the fault tests, run as a real process:

    python -m aiojobs_redis worker tests.faults.app:make_worker

Configured by environment: REDIS_URL, AJR_QUEUE, AJR_LEASE_MS, AJR_CONCURRENCY.
Each handler run is recorded in a list under the queue's hash tag, so the test can
count how often each job ran.
"""

from __future__ import annotations

import asyncio
import os
import time

from aiojobs_redis import Queue, Retention, Worker, current_job, task


def runs_key(queue: str) -> str:
    return f"ajr:{{{queue}}}:test:runs"


@task(name="faults.work")
async def work(seconds: float) -> str:
    ctx = current_job()
    await ctx.queue.client.rpush(runs_key(ctx.queue.name), ctx.id)
    await asyncio.sleep(seconds)
    return ctx.id


@task(name="faults.block_loop_once")
async def block_loop_once(seconds: float) -> str:
    """Blocks the event loop (time.sleep in an async def) the first time it runs."""
    ctx = current_job()
    client = ctx.queue.client
    await client.rpush(runs_key(ctx.queue.name), ctx.id)
    if await client.set(f"ajr:{{{ctx.queue.name}}}:test:blocked:{ctx.id}", 1, nx=True):
        time.sleep(seconds)  # noqa: ASYNC251 - the misbehaviour under test
    return ctx.id


def make_worker() -> Worker:
    # keep every finished job for the test's history check (production keeps fewer)
    keep_all = Retention(completed_count=None, completed_age_s=3600, failed_count=None,
                         failed_age_s=3600)
    queue = Queue.from_url(os.environ["REDIS_URL"], name=os.environ["AJR_QUEUE"],
                           retention=keep_all)
    return Worker(
        queue,
        tasks=[work, block_loop_once],
        concurrency=int(os.environ.get("AJR_CONCURRENCY", "5")),
        lease_ms=int(os.environ.get("AJR_LEASE_MS", "2000")),
        shutdown_timeout_s=float(os.environ.get("AJR_SHUTDOWN_S", "5")),
    )
