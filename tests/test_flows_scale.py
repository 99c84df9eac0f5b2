"""A flow at the size users reach: 10,000 jobs fanned out and one callback that waits
for all of them, with Redis memory measured before, while and after (retention)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from aiojobs_redis import JobState, Queue, Retention, Worker, chord, task
from aiojobs_redis._redis_server import RedisServer

from .conftest import patient_queue
from .invariants import check_invariants

pytestmark = pytest.mark.scale

N = 10_000


@task(name="fanout.square")
async def square(x: int) -> int:
    return x * x


@task(name="fanout.total")
async def total(values: list[int]) -> int:
    return sum(values)


async def _memory(q: Queue) -> int:
    info: dict[str, Any] = await q.client.info("memory")
    return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))


async def test_a_10k_fan_out_and_fan_in(redis_server: RedisServer, queue_name: str) -> None:
    # keep 100 finished jobs: most children are deleted before the callback runs, which
    # must not matter (their results were copied into the callback's record)
    keep = Retention(completed_count=100, failed_count=100)
    async with patient_queue(redis_server, queue_name, keep) as q:
        before = await _memory(q)
        started = time.perf_counter()
        jobs = await q.enqueue_flow(chord([square.call(i) for i in range(N)], total.fed()))
        enqueued_s = time.perf_counter() - started
        assert (await jobs[-1].info()).state is JobState.BLOCKED
        loaded = await _memory(q)
        worker = Worker(q, tasks=[square, total], concurrency=200, handle_signals=False)
        started = time.perf_counter()
        await asyncio.wait_for(worker.run(burst=True), 240)
        ran_s = time.perf_counter() - started
        assert await jobs[-1].result(timeout=5) == sum(i * i for i in range(N))
        assert worker.processed == N + 1
        deps = await jobs[-1].dependencies()
        assert len(deps) == N and all(d.state == "completed" for d in deps)
        with_callback = await _memory(q)
        await q.remove_job(jobs[-1].id)  # what retention does to the callback in the end
        after = await _memory(q)
        await check_invariants(q.client, q.keys)
        left = [k async for k in q.client.scan_iter(match=q.keys.base + "*")
                if b":dependents:" in k or b":early:" in k]
        assert left == [], "no flow bookkeeping outlives the flow"
        print(f"\n10,000-job fan-out + fan-in: enqueued in {enqueued_s:.2f} s"
              f" ({(N + 1) / enqueued_s:,.0f} jobs/s), ran in {ran_s:.2f} s"
              f" ({(N + 1) / ran_s:,.0f} jobs/s); Redis memory: {before / 2**20:.1f} MiB"
              f" before, {loaded / 2**20:.1f} MiB enqueued, {with_callback / 2**20:.1f} MiB"
              f" done (the callback's record holds 10,000 results),"
              f" {after / 2**20:.1f} MiB once it is gone")
        assert after - before < 1 * 2**20, "a finished flow leaves nothing behind"
