"""A worker cut off from Redis (its traffic blackholed) for longer than its lease."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import JobState, Queue
from aiojobs_redis._redis_server import RedisServer

from ..conftest import wait_until
from ..invariants import check_invariants
from .app import work
from .history import check_history, count_runs
from .procs import FACT_S, SCENARIO_TIMEOUT_S, alive, kill, start_worker
from .proxy import BlackholeProxy

pytestmark = [pytest.mark.faults, pytest.mark.timeout(SCENARIO_TIMEOUT_S)]


async def test_cut_off_worker_loses_the_job_and_its_late_outcome_is_refused(
    redis_server: RedisServer, queue: Queue, client: aioredis.Redis, tmp_path: Path
) -> None:
    """Invariant: while worker A is cut off longer than its lease, worker B takes the job
    over; when A comes back, its completion is refused by the fencing token; the job has
    exactly one recorded outcome (B's)."""
    proxy = await BlackholeProxy(redis_server.port).start()
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start_worker(proxy.url, queue.name, log=log_a, lease_ms=1500, concurrency=1)
    b = None
    try:
        job = await queue.enqueue(work, 3.0)
        await wait_until(lambda: alive(a, log=log_a) and count_runs(client, queue.name),
                         timeout=FACT_S)
        info = await job.info()
        assert info.state is JobState.ACTIVE
        first_worker = info.worker
        proxy.blackhole()
        b = start_worker(redis_server.url, queue.name, log=log_b, lease_ms=1500,
                         concurrency=1)
        await wait_until(lambda: alive(b, log=log_b) and _taken_over(queue, job.id, first_worker),
                         timeout=FACT_S)
        # A's handler ends while A is cut off: its outcome is held back
        await wait_until(lambda: f"handler of {job.id} over" in log_a.read_text(),
                         timeout=FACT_S)
        proxy.restore()
        assert await job.result(timeout=FACT_S) == job.id
        await wait_until(lambda: "lease lost" in log_a.read_text(), timeout=FACT_S)
        final = await job.info()
        history = await check_history(queue, client, [job.id])
    finally:
        for proc in (a, b):
            if proc is not None:  # in a thread: the proxy runs on this loop
                await asyncio.to_thread(kill, proc, signal.SIGTERM)
        await proxy.close()
    print(f"\nworker cut off for > lease: the job ran {history.runs[job.id]} times, one "
          f"recorded outcome by {final.worker} (stalls={final.stalls}); the cut-off "
          "worker's late completion was refused")
    assert final.state is JobState.COMPLETED and final.worker != first_worker
    assert final.stalls == 1 and history.runs[job.id] == 2
    events: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(  # type: ignore[assignment]
        queue.keys.events
    )
    completions = [f for _, f in events if f[b"e"] == b"completed" and f[b"id"] == job.id.encode()]
    assert len(completions) == 1, "exactly one recorded outcome"
    await check_invariants(client, queue.keys)  # both workers are gone


async def _taken_over(queue: Queue, job_id: str, first_worker: str | None) -> bool:
    info = await queue.job(job_id).info()
    return info.state is JobState.ACTIVE and info.worker != first_worker
