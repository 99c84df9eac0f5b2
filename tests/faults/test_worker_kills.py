"""Several worker processes share 5,000 jobs; one is SIGKILLed again and again."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from aiojobs_redis import JobState, Queue, Retention
from aiojobs_redis._redis_server import RedisServer

from ..conftest import wait_until
from .app import work
from .history import check_history
from .procs import kill, start_worker

pytestmark = pytest.mark.faults


async def test_repeated_sigkill_loses_nothing(redis_server: RedisServer, queue_name: str,
                                              tmp_path: Path) -> None:
    """Invariant: all 5,000 jobs complete, none is lost, and a job runs more than once
    only if it was active in a killed worker (its record shows the stall recovery)."""
    log = tmp_path / "workers.log"
    keep_all = Retention(completed_count=None, completed_age_s=3600)
    async with Queue.from_url(redis_server.url, name=queue_name, retention=keep_all) as queue:
        jobs = await queue.enqueue_many([work.call(0.02) for _ in range(5000)])
        steady = [start_worker(redis_server.url, queue_name, log=log, lease_ms=1500,
                               concurrency=20) for _ in range(2)]
        victim = start_worker(redis_server.url, queue_name, log=log, lease_ms=1500,
                              concurrency=20)
        kills = 0
        try:
            while (await queue.counts())[JobState.COMPLETED] < 4000 and kills < 8:
                await asyncio.sleep(0.6)
                kill(victim, signal.SIGKILL)
                kills += 1
                victim = start_worker(redis_server.url, queue_name, log=log, lease_ms=1500,
                                      concurrency=20)
            await wait_until(lambda: _completed(queue, 5000), timeout=120)
            history = await check_history(queue, queue.client, [j.id for j in jobs])
        finally:
            for proc in (*steady, victim):
                kill(proc, signal.SIGTERM)
            await queue.obliterate(force=True)
    print(f"\n3 worker processes, one SIGKILLed {kills} times: {history.summary()}; "
          f"{len(history.explained)} job(s) were recovered from killed workers")
    assert kills >= 3
    assert len(history.completed) == 5000


async def _completed(queue: Queue, n: int) -> bool:
    return (await queue.counts())[JobState.COMPLETED] >= n
