"""What an idle worker costs Redis: its periodic duties (due schedules, stalled-job
checks, wipe checks, lease renewals, heartbeats) go in one round trip for all of its
queues, so its round trips do not grow with the number of queues it serves."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from aiojobs_redis import Queue, Worker, task
from aiojobs_redis._redis_server import RedisServer
from aiojobs_redis.connection import client_from_url

from .conftest import wait_until


@task(name="idle.noop")
async def noop() -> None:
    return None


async def _idle_rates(server: RedisServer, queues: int, seconds: float) -> tuple[float, float]:
    """(round trips, commands) per second of one idle worker serving ``queues`` queues."""
    client = client_from_url(server.url)
    admin = aioredis.Redis.from_url(server.url)
    serving = [Queue(client, name=f"idle-cost-{queues}-{i}") for i in range(queues)]
    worker = Worker(serving, tasks=[noop], handle_signals=False, schedule_verify_s=1.0)
    running = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: _registered(admin, serving[-1]))
        await asyncio.sleep(1.0)  # the first lookups after start are done
        before = await admin.info("stats")
        await asyncio.sleep(seconds)
        after = await admin.info("stats")
        # minus the INFO calls themselves
        trips = after["total_reads_processed"] - before["total_reads_processed"] - 1
        commands = after["total_commands_processed"] - before["total_commands_processed"] - 1
        return trips / seconds, commands / seconds
    finally:
        worker.stop()
        await running
        for q in serving:
            await q.obliterate(force=True)
        await client.aclose()
        await admin.aclose()


async def _registered(admin: aioredis.Redis, queue: Queue) -> bool:
    return bool(await admin.zcard(queue.keys.workers))


async def test_idle_round_trips_do_not_grow_with_queues() -> None:
    server = RedisServer().start()
    try:
        one, _ = await _idle_rates(server, 1, 3.0)
        twenty, commands = await _idle_rates(server, 20, 3.0)
    finally:
        server.cleanup()
    print(f"\nidle worker: {one:.1f} round trips/s on 1 queue, {twenty:.1f} on 20 queues"
          f" ({commands:.0f} commands/s)")
    # before: 1.9/s on one queue, 38/s on twenty (one round trip per queue and duty);
    # the lanes' own fallback look (one per queue every 15 s) falls outside this window
    assert one <= 3.0
    assert twenty <= one + 2.0, f"{twenty:.1f} round trips/s on 20 queues vs {one:.1f} on 1"
