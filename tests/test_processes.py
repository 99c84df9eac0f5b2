"""``aiojobs-redis worker --processes N``: N real worker processes under one command, a
crashed one started again, SIGTERM stopping them all gracefully."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import redis.asyncio as aioredis

from aiojobs_redis import JobState, Queue
from aiojobs_redis._redis_server import RedisServer, pid_alive
from aiojobs_redis.ops.registry import live_workers

from .conftest import wait_until
from .faults.app import work
from .test_cli import env

COMMAND = [sys.executable, "-m", "aiojobs_redis", "worker", "tests.faults.app:make_worker"]


async def _start(redis_url: str, queue: str, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *COMMAND, *extra, env=env(REDIS_URL=redis_url, AJR_QUEUE=queue, AJR_LEASE_MS="5000",
                                  AJR_NO_PERSISTENCE_OK="1"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_burst_with_two_processes_shares_the_jobs(redis_server: RedisServer,
                                                        queue: Queue) -> None:
    jobs = await queue.enqueue_many([work.call(0.05) for _ in range(60)])
    proc = await _start(redis_server.url, queue.name, "--processes", "2", "--burst")
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    infos = [await j.info() for j in jobs]
    assert {i.state for i in infos} == {JobState.COMPLETED}
    workers = {i.worker for i in infos}
    assert len(workers) == 2, f"jobs ran on {workers}"


async def test_a_killed_process_is_started_again_and_sigterm_stops_all(
        redis_server: RedisServer, client: aioredis.Redis, queue: Queue) -> None:
    proc = await _start(redis_server.url, queue.name, "--processes", "2")
    try:
        await wait_until(lambda: _live_pids(client, queue, 2), timeout=30)
        first = await _pids(client, queue)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        # its record lives on until its lease ends; a new process registers beside it
        await wait_until(lambda: _new_pid(client, queue, first), timeout=30)
        now = await _pids(client, queue)
        assert len(now - first) == 1 and max(first) in now
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
        text = err.decode()
        assert "was killed by SIGKILL; starting it again" in text, text[-2000:]
        assert not any(pid_alive(p) for p in now), "every worker process ended"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _pids(client: aioredis.Redis, queue: Queue) -> set[int]:
    return {w.pid for w in await live_workers(client, queue.keys) if pid_alive(w.pid)}


async def _live_pids(client: aioredis.Redis, queue: Queue, count: int) -> bool:
    return len(await _pids(client, queue)) == count


async def _new_pid(client: aioredis.Redis, queue: Queue, before: set[int]) -> bool:
    return bool(await _pids(client, queue) - before)
