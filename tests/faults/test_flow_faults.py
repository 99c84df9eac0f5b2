"""Flows under faults, with real processes: a worker SIGKILLed mid-flow and Redis itself
SIGKILLed and restarted (AOF, appendfsync always) mid-flow. No parent is left waiting,
each is released exactly once, and each fan-in sees every result."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import JobState, Queue, chord
from aiojobs_redis._redis_server import RedisServer

from ..conftest import wait_until
from ..invariants import check_invariants
from .app import collect, work
from .history import check_history, check_released_once, count_runs
from .procs import FACT_S, SCENARIO_TIMEOUT_S, alive, kill, start_worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(SCENARIO_TIMEOUT_S)]

CHORDS, WIDTH = 10, 10


async def _enqueue_chords(queue: Queue, seconds: float) -> tuple[list[str], list[str]]:
    """CHORDS fan-out/fan-in flows of WIDTH jobs each; returns (children, callbacks)."""
    children, callbacks = [], []
    for _ in range(CHORDS):
        jobs = await queue.enqueue_flow(chord([work.call(seconds) for _ in range(WIDTH)],
                                              collect.fed()))
        children += [j.id for j in jobs[:-1]]
        callbacks.append(jobs[-1].id)
    return children, callbacks


async def _check_callbacks(queue: Queue, callbacks: list[str]) -> None:
    for job_id in callbacks:
        assert await queue.job(job_id).result(timeout=FACT_S) == WIDTH
        deps = await queue.job(job_id).dependencies()
        assert [d.state for d in deps] == ["completed"] * WIDTH
    await check_released_once(queue, callbacks)


async def test_a_worker_sigkilled_mid_flow(redis_server: RedisServer, queue: Queue,
                                          client: aioredis.Redis, tmp_path: Path) -> None:
    log = tmp_path / "workers.log"
    children, callbacks = await _enqueue_chords(queue, 0.2)
    first = start_worker(redis_server.url, queue.name, log=log, lease_ms=2000)
    try:
        await wait_until(lambda: alive(first, log=log) and _mid_job(queue, client),
                         timeout=FACT_S)
        kill(first)
        active_at_kill = set(await queue.job_ids(JobState.ACTIVE))
        second = start_worker(redis_server.url, queue.name, log=log, lease_ms=2000)
        try:
            await _check_callbacks(queue, callbacks)
        finally:
            kill(second, signal.SIGTERM)
    finally:
        kill(first)
    history = await check_history(queue, client, children + callbacks)
    print(f"\n{CHORDS} chords of {WIDTH}, a worker SIGKILLed with {len(active_at_kill)}"
          f" jobs active: {history.summary()}; every callback released once")
    assert history.duplicates <= active_at_kill
    await check_invariants(client, queue.keys)  # both workers are gone


async def _mid_job(queue: Queue, client: aioredis.Redis) -> bool:
    return (await queue.counts())[JobState.ACTIVE] == 5 and await count_runs(
        client, queue.name) >= 5


async def test_redis_restarted_mid_flow(tmp_path: Path) -> None:
    server = RedisServer(appendonly=True, appendfsync="always").start(timeout_s=FACT_S)
    log = tmp_path / "workers.log"
    workers = []
    try:
        async with Queue.from_url(server.url, name="flow-crash") as queue:
            children, callbacks = await _enqueue_chords(queue, 0.3)
            workers = [start_worker(server.url, queue.name, log=log, lease_ms=2000,
                                    concurrency=10) for _ in range(2)]
            await wait_until(lambda: alive(*workers, log=log) and _some_ran(queue),
                             timeout=FACT_S)
            blocked_at_crash = (await queue.counts())[JobState.BLOCKED]
            assert blocked_at_crash > 0, "the crash must come mid-flow"
            server.kill()
            await asyncio.sleep(1.0)
            server.start(timeout_s=FACT_S)
            await _check_callbacks(queue, callbacks)
            history = await check_history(queue, queue.client, children + callbacks)
            assert (await queue.counts())[JobState.BLOCKED] == 0
            for w in workers:
                kill(w, signal.SIGTERM)
            await check_invariants(queue.client, queue.keys)
    finally:
        for w in workers:
            kill(w, signal.SIGTERM)
        server.cleanup()
    print(f"\n{CHORDS} chords of {WIDTH}, Redis SIGKILLed and restarted with"
          f" {blocked_at_crash} callbacks still waiting: {history.summary()}; every"
          " callback released once")


async def _some_ran(queue: Queue) -> bool:
    return await count_runs(queue.client, queue.name) >= 20
