"""Memory soak: 200,000 jobs through one queue with default retention."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import JobState, Queue, Worker, task
from aiojobs_redis._redis_server import RedisServer
from aiojobs_redis.keys import KEY_TABLE

from ..conftest import wait_until
from ..invariants import check_invariants
from .procs import FACT_S, SCENARIO_TIMEOUT_S

pytestmark = [pytest.mark.faults, pytest.mark.timeout(2 * SCENARIO_TIMEOUT_S)]

TOTAL = 200_000
TRANSIENT = b":fetch:", b":metrics:batch:", b":op:"
CHECKPOINTS = (50_000, 100_000, 200_000)
#: the queue's keys that are not per job, per worker, per schedule or replay guards
FIXED_KEYS = frozenset(name for name in KEY_TABLE if "<" not in name)


@task(name="soak.noop")
async def noop(i: int) -> int:
    return i


async def test_memory_stays_bounded() -> None:
    """Invariant: with default retention, Redis memory and key count after 50k, 100k and
    200k jobs stay under a bound that does not grow with the number of jobs: retained
    jobs (1,000 completed), the event stream (~10,000 entries) and metrics (1,440 slots)
    are capped. Memory is read once the replay guards have expired (seconds)."""
    readings: list[tuple[int, int, int]] = []
    expiring: list[int] = []
    jobs: list[int] = []
    with RedisServer() as server:
        client = aioredis.Redis.from_url(server.url)
        queue = Queue(client, name="soak")
        try:
            done = 0
            for checkpoint in CHECKPOINTS:
                while done < checkpoint:
                    batch = min(20_000, checkpoint - done)
                    for start in range(0, batch, 5000):
                        await queue.enqueue_many([noop.call(done + start + i)
                                                  for i in range(5000)])
                    worker = Worker(queue, tasks=[noop], concurrency=200, handle_signals=False)
                    await asyncio.wait_for(worker.run(burst=True), 5 * FACT_S)
                    done += batch
                # replay guards (a fetch's memo, a metrics batch id) live for seconds: all
                # must expire by themselves; memory is read once they have, so that their
                # number at that instant does not blur the reading
                every = [k async for k in client.scan_iter(count=1000)]
                transient = [k for k in every if any(part in k for part in TRANSIENT)]
                keys = len(every)
                for key in transient:
                    # -1: no expiry (a leak); -2: expired since the scan
                    assert await client.pttl(key) != -1, f"{key!r} would never expire"

                async def guards_gone() -> bool:
                    async for k in client.scan_iter(count=1000):
                        if any(part in k for part in TRANSIENT):
                            return False
                    return True
                await wait_until(guards_gone, 20, interval=0.2)
                info = await client.info("memory")
                # the data's memory: connections' buffers come and go with the connections
                memory = int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))
                readings.append((checkpoint, memory, keys - len(transient)))
                # the rest: retained job hashes and the queue's own keys, each named once in
                # the key table (which of them exist varies: `meta` appears once stalled
                # recovery has run, for one)
                queue_keys = {k.decode().removeprefix("ajr:{soak}:") for k in every
                              if b":job:" not in k and k not in transient}
                # the producer's replies to the calls of its last round trip (one key per
                # call of a round trip: 10 here, bulk calls of 500 jobs; an enqueue sent
                # again answers from them); overwritten by each round trip, so bounded
                memos = {k for k in queue_keys if k.startswith("call:")}
                assert len(memos) <= 10, sorted(memos)
                for memo in memos:  # they expire by themselves
                    assert await client.pttl(f"ajr:{{soak}}:{memo}") > 0, memo
                queue_keys -= memos
                assert queue_keys <= FIXED_KEYS, queue_keys - FIXED_KEYS
                jobs.append(sum(1 for k in every if b":job:" in k))
                expiring.append(len(transient))
            counts = await queue.counts()
            await check_invariants(client, queue.keys)
        finally:
            await queue.close()
            await client.aclose()
    print("\n" + "; ".join(f"after {n:,} jobs: used_memory {m / 2**20:.1f} MiB, {k} keys"
                          f" (+{e} expiring replay guards)"
                          for (n, m, k), e in zip(readings, expiring, strict=True)))
    assert counts[JobState.COMPLETED] == 1000
    (_, m50, k50), (_, m100, k100), (_, m200, k200) = readings
    assert jobs == [1000, 1000, 1000], "retained job hashes: exactly the retention count"
    assert max(k50, k100, k200) <= 1000 + len(FIXED_KEYS) + 10, "keys: jobs and the queue's own"
    assert m200 < m50 * 1.15 and m100 < m50 * 1.15, "memory does not grow with the job count"
