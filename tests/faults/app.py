"""A worker application for the fault tests, run as a real process:

    python -m aiojobs_redis worker tests.faults.app:make_worker

Configured by environment: REDIS_URL, AJR_QUEUE, AJR_LEASE_MS, AJR_CONCURRENCY.
Each handler run is recorded in a list under the queue's hash tag, so the test can
count how often each job ran.
"""

from __future__ import annotations

import asyncio
import os

from aiojobs_redis import Queue, Worker, current_job, task


def runs_key(queue: str) -> str:
    return f"ajr:{{{queue}}}:test:runs"


@task(name="faults.work")
async def work(seconds: float) -> str:
    ctx = current_job()
    await ctx.queue.client.rpush(runs_key(ctx.queue.name), ctx.id)
    await asyncio.sleep(seconds)
    return ctx.id


def make_worker() -> Worker:
    queue = Queue.from_url(os.environ["REDIS_URL"], name=os.environ["AJR_QUEUE"])
    return Worker(
        queue,
        tasks=[work],
        concurrency=int(os.environ.get("AJR_CONCURRENCY", "5")),
        lease_ms=int(os.environ.get("AJR_LEASE_MS", "2000")),
        shutdown_timeout_s=float(os.environ.get("AJR_SHUTDOWN_S", "5")),
    )
