"""A worker asked to stop while idle stops at once, whatever its blocking wait is doing."""

from __future__ import annotations

import asyncio
import time

from aiojobs_redis import Queue, Worker, task

from .conftest import wait_until


@task(name="shutdown.noop")
async def noop() -> None:
    return None


async def test_idle_worker_stops_within_a_second(queue: Queue) -> None:
    slowest = 0.0
    for pause in (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3):
        worker = Worker(queue, tasks=[noop], handle_signals=False)
        runner = asyncio.create_task(worker.run())
        await wait_until(lambda w=worker: w.state == "running", interval=0.001)
        await asyncio.sleep(pause)  # the idle wait (BZPOPMIN, up to 5 s) has begun or not
        started = time.monotonic()
        worker.stop()
        await asyncio.wait_for(runner, 10)
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 1.0, f"a stop took {slowest:.2f} s"
