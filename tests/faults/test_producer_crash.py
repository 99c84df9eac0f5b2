"""The producer (the "API" process) is SIGKILLed in the middle of bulk enqueues."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import JobState, Queue, Retention, Worker
from aiojobs_redis._redis_server import RedisServer

from ..conftest import wait_until
from ..invariants import check_invariants
from .app import work
from .history import check_history
from .procs import FACT_S, ROOT, SCENARIO_TIMEOUT_S

pytestmark = [pytest.mark.faults, pytest.mark.timeout(SCENARIO_TIMEOUT_S)]

#: fields add_jobs writes; a job is whole when it has all of them
FIELDS = ("task", "payload", "opts", "priority", "max_attempts", "attempts", "stalls", "state",
          "created", "due", "ready")


async def test_producer_killed_mid_bulk(redis_server: RedisServer, queue: Queue,
                                        client: aioredis.Redis, tmp_path: Path) -> None:
    """Invariant: each job is either fully enqueued or absent: every job hash has every
    field and sits in exactly one state set; a worker drains everything; every id the
    producer saw acknowledged completes."""
    ids_file = tmp_path / "acknowledged.txt"
    ids_file.touch()
    proc = subprocess.Popen([sys.executable, "-m", "tests.faults.producer", redis_server.url,
                             queue.name, str(ids_file)], cwd=ROOT)
    try:
        await wait_until(lambda: len(ids_file.read_text().splitlines()) >= 6000,
                         timeout=FACT_S)
        await asyncio.sleep(0.013)  # land the kill at an arbitrary point of a chunk
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(FACT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    acknowledged = ids_file.read_text().split()
    keys = [k async for k in client.scan_iter(match=queue.keys.job_prefix + "*", count=5000)]
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.hmget(k, FIELDS)
    rows = await pipe.execute()
    partial = [k for k, row in zip(keys, rows, strict=True) if None in row]
    assert not partial, f"half-written jobs: {partial[:5]}"
    in_redis = {k.decode()[len(queue.keys.job_prefix):] for k in keys}
    waiting = await queue.job_ids(JobState.WAITING, limit=1000)
    total = (await queue.counts())[JobState.WAITING]
    assert total == len(in_redis) and set(waiting) <= in_redis, "each job in its state's set"
    assert set(acknowledged) <= in_redis

    keep_all = Retention(completed_count=None, completed_age_s=3600)
    # a client of its own as a deployment has (client_from_url: a blocking pool); the
    # fixture's plain pool of 100 connections is too small for 100 handlers and the worker
    async with Queue.from_url(redis_server.url, name=queue.name, retention=keep_all) as drained:
        await asyncio.wait_for(Worker(drained, tasks=[work], concurrency=100).run(burst=True),
                               5 * FACT_S)
        history = await check_history(drained, client, acknowledged)
        await check_invariants(client, drained.keys)
    print(f"\nproducer SIGKILLed after {len(acknowledged)} acknowledged jobs: {len(in_redis)} "
          f"jobs in Redis ({len(in_redis) - len(acknowledged)} of an unacknowledged chunk, "
          f"whole), 0 half-written; {history.summary()}")
    assert len(history.completed) == len(acknowledged)
