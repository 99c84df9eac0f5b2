"""An async handler that blocks the event loop for longer than the lease."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import JobState, Queue
from aiojobs_redis._redis_server import RedisServer

from ..conftest import wait_until
from ..invariants import check_invariants
from .app import block_loop_once
from .history import check_history
from .procs import FACT_S, SCENARIO_TIMEOUT_S, alive, kill, start_worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(SCENARIO_TIMEOUT_S)]


async def test_blocked_loop_job_is_recovered_and_run_again(
    redis_server: RedisServer, queue: Queue, client: aioredis.Redis, tmp_path: Path
) -> None:
    """Documented behaviour (docs/guarantees.md): a handler that blocks its worker's loop
    longer than the lease loses the job: another worker recovers it and runs it again,
    the blocked worker's late outcome is refused, and the blocked worker logs which
    handler blocked the loop and for how long."""
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = start_worker(redis_server.url, queue.name, log=log_a, lease_ms=1000, concurrency=1)
    b = None
    try:
        await wait_until(lambda: alive(a, log=log_a) and "started" in log_a.read_text(),
                         timeout=FACT_S)
        job = await queue.enqueue(block_loop_once, 4.0)
        await wait_until(lambda: alive(a, log=log_a) and _active(queue), timeout=FACT_S)
        b = start_worker(redis_server.url, queue.name, log=log_b, lease_ms=1000, concurrency=1)
        assert await job.result(timeout=FACT_S) == job.id
        await wait_until(lambda: "was blocked for" in log_a.read_text(), timeout=FACT_S)
        await wait_until(lambda: "lease lost" in log_a.read_text(), timeout=FACT_S)
        info = await job.info()
        history = await check_history(queue, client, [job.id])
    finally:
        for proc in (a, b):
            if proc is not None:
                kill(proc, signal.SIGTERM)
    text = log_a.read_text()
    blocked = next(line for line in text.splitlines() if "event loop blocked" in line)
    total = re.search(r"was blocked for ([\d.]+ s)", text)
    print(f"\nloop blocked {total and total[1]} (4 s, then until the job was taken over) "
          f"with a 1 s lease: job ran {history.runs[job.id]} times, "
          f"completed by the other worker (stalls={info.stalls}); log: {blocked[24:140]}...")
    assert f"faults.block_loop_once:{job.id}" in blocked
    assert info.state is JobState.COMPLETED and info.stalls == 1
    assert history.runs[job.id] == 2
    await check_invariants(client, queue.keys)  # both workers are gone


async def _active(queue: Queue) -> bool:
    return (await queue.counts())[JobState.ACTIVE] == 1
