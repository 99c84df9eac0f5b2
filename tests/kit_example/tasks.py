"""The tasks of a tiny example project, tested by check_tasks.py with the fixtures of the
aiojobs_redis pytest plugin (tests/test_testing_kit.py runs it as test_tasks.py)."""

from __future__ import annotations

from typing import Protocol

from aiojobs_redis import FixedBackoff, current_job, task


class Gateway(Protocol):
    async def charge(self, order: str, cents: int) -> str: ...


@task(name="thumbnail")
async def thumbnail(image: str, width: int) -> str:
    """Reports its progress and returns the thumbnail's name."""
    await current_job().progress(50)
    name = f"{image.removesuffix('.png')}-{width}.png"
    await current_job().progress(100)
    return name


@task(name="charge", attempts=3, backoff=FixedBackoff(delay_s=60))
async def charge(order: str, cents: int) -> str:
    """Charges through the gateway the worker's startup hook put in its state; on the last
    attempt it gives up politely instead of raising."""
    job = current_job()
    gateway: Gateway = job.worker.state["gateway"]
    try:
        return await gateway.charge(order, cents)
    except ConnectionError:
        if job.attempt < job.max_attempts:
            raise  # retried after the backoff
        return f"{order}: gave up after {job.attempt} attempts"
