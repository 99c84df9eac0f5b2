"""Several worker processes share 5,000 jobs; one is SIGKILLed again and again."""

from __future__ import annotations

import signal
import subprocess
from functools import partial
from pathlib import Path

import pytest

from aiojobs_redis import JobState, Queue, Retention
from aiojobs_redis._redis_server import RedisServer

from ..conftest import wait_until
from ..invariants import check_invariants
from .app import work
from .history import check_history
from .procs import FACT_S, SCENARIO_TIMEOUT_S, alive, kill, start_worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(SCENARIO_TIMEOUT_S)]


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
        kills = 0
        victim_log = tmp_path / "victim-0.log"
        victim = start_worker(redis_server.url, queue_name, log=victim_log, lease_ms=1500,
                              concurrency=20)
        try:
            while (await queue.counts())[JobState.COMPLETED] < 4000 and kills < 8:
                # kill it mid-work: once it has taken jobs (however long it took to start)
                await wait_until(partial(_took_jobs_or_none_left, victim, victim_log, queue),
                                 timeout=FACT_S)
                if not _took_jobs(victim_log):
                    break  # the others took everything meanwhile
                kill(victim, signal.SIGKILL)
                kills += 1
                victim_log = tmp_path / f"victim-{kills}.log"
                victim = start_worker(redis_server.url, queue_name, log=victim_log,
                                      lease_ms=1500, concurrency=20)
            await wait_until(lambda: alive(*steady, log=log) and _completed(queue, 5000),
                             timeout=5 * FACT_S)
            history = await check_history(queue, queue.client, [j.id for j in jobs])
            for proc in (*steady, victim):
                kill(proc, signal.SIGTERM)
            await check_invariants(queue.client, queue.keys)
        finally:
            for proc in (*steady, victim):
                kill(proc, signal.SIGTERM)
            await queue.obliterate(force=True)
    print(f"\n3 worker processes, one SIGKILLed {kills} times: {history.summary()}; "
          f"{len(history.explained)} job(s) were recovered from killed workers")
    assert kills >= 3
    assert len(history.completed) == 5000


def _took_jobs(log: Path) -> bool:
    return log.exists() and "→ " in log.read_text()  # "→ queue task:id attempt n"


async def _took_jobs_or_none_left(victim: subprocess.Popen[bytes], log: Path,
                                  queue: Queue) -> bool:
    alive(victim, log=log)
    return _took_jobs(log) or (await queue.counts())[JobState.WAITING] == 0


async def _completed(queue: Queue, n: int) -> bool:
    return (await queue.counts())[JobState.COMPLETED] >= n
