"""Redis itself is SIGKILLed and restarted (AOF, appendfsync always) while producers
enqueue and worker processes run jobs."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from aiojobs_redis import JobState, Queue, RedisUnavailable, live_workers
from aiojobs_redis._redis_server import RedisServer

from ..conftest import wait_until
from ..invariants import check_invariants
from .app import work
from .history import check_history, count_runs
from .procs import FACT_S, SCENARIO_TIMEOUT_S, alive, kill, start_worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(SCENARIO_TIMEOUT_S)]


async def test_redis_sigkill_and_restart_loses_no_acknowledged_job(tmp_path: Path) -> None:
    """Invariant: every enqueue that returned before the crash is completed after the
    restart; workers and producers reconnect by themselves; a job runs twice only if it
    was active at the crash (its record then shows a stall recovery)."""
    server = RedisServer(appendonly=True, appendfsync="always").start(timeout_s=FACT_S)
    log = tmp_path / "workers.log"
    workers = []
    try:
        async with Queue.from_url(server.url, name="crash") as queue:
            workers = [start_worker(server.url, "crash", log=log, lease_ms=2000,
                                    concurrency=20) for _ in range(2)]
            acknowledged: list[str] = []
            refused = 0
            workers_busy = asyncio.Event()

            async def produce(n_chunks: int) -> None:
                nonlocal refused
                for i in range(n_chunks):
                    if i == 20:  # 1,000 jobs in: go on once both workers are at work
                        await workers_busy.wait()
                    try:
                        jobs = await queue.enqueue_many([work.call(0.05) for _ in range(50)])
                    except RedisUnavailable:
                        refused += 1  # not acknowledged: the producer knows it failed
                        continue
                    acknowledged.extend(j.id for j in jobs)
                    await asyncio.sleep(0.01)

            producer = asyncio.create_task(produce(60))
            # the crash must find the producer enqueueing and both workers running jobs,
            # however long the worker processes take to start
            await wait_until(lambda: len(acknowledged) >= 1000, timeout=FACT_S)
            await wait_until(lambda: alive(*workers, log=log) and _at_work(queue),
                             timeout=FACT_S)
            workers_busy.set()
            await wait_until(lambda: len(acknowledged) >= 1100, timeout=FACT_S)
            ran_before = await count_runs(queue.client, queue.name)
            server.kill()
            crashed_at = len(acknowledged)
            await asyncio.sleep(1.0)
            server.start(timeout_s=FACT_S)
            await producer
            assert len(acknowledged) == 3000 - refused * 50
            await wait_until(lambda: _all_done(queue, len(acknowledged)), timeout=5 * FACT_S)
            history = await check_history(queue, queue.client, acknowledged)
            for w in workers:
                kill(w, signal.SIGTERM)
            await check_invariants(queue.client, queue.keys)
    finally:
        for w in workers:
            kill(w, signal.SIGTERM)
        server.cleanup()
    print(f"\nRedis SIGKILL after {crashed_at} acknowledged jobs and {ran_before} handler "
          "runs, restarted 1 s later: "
          f"{history.summary()}; {refused} chunk(s) refused during the outage;"
          f" {len(history.explained)} job(s) recovered after a stall")
    assert len(history.completed) == len(acknowledged)


async def _at_work(queue: Queue) -> bool:
    """Both workers serve the queue, and as many handlers have run as they have slots."""
    return (len(await live_workers(queue.client, queue.keys)) == 2
            and await count_runs(queue.client, queue.name) >= 40)


async def _all_done(queue: Queue, n: int) -> bool:
    counts = await queue.counts()
    return counts[JobState.COMPLETED] + counts[JobState.FAILED] >= min(n, 1000) and (
        counts[JobState.WAITING] + counts[JobState.ACTIVE] + counts[JobState.DELAYED] == 0)
