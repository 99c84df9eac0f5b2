"""The sizes users reach: thousands of jobs running at once in one worker, batches of
100,000 jobs, a 50 MB argument. Each test ends with the state invariants of the whole
queue (tests/invariants.py).

Before the scripts bounded their variadic commands, (a) lost every lease renewal
(extend_leases unpacked 20,000 values) so every job ran twice; a batch of 8,000
outcomes or retried ids wrote, then failed.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from aiojobs_redis import (
    JobOptions,
    JobState,
    JobStateError,
    Queue,
    Retention,
    TaskCall,
    Worker,
    codec,
    current_job,
    task,
)
from aiojobs_redis._redis_server import RedisServer
from aiojobs_redis.scripts import SCRIPTS, Batch

from .conftest import patient_queue
from .invariants import check_invariants

pytestmark = pytest.mark.scale

#: keep every finished job, so that each one can be looked at afterwards
KEEP_ALL = Retention(completed_count=1_000_000, failed_count=1_000_000)


@pytest.fixture
async def big_queue(redis_server: RedisServer, queue_name: str) -> AsyncIterator[Queue]:
    """A queue that keeps every finished job, on a client that waits for long replies
    (a 100,000-job batch or a 50 MB value can take longer than redis-py's default
    5 s socket timeout on a busy machine)."""
    async with patient_queue(redis_server, queue_name, KEEP_ALL) as q:
        yield q


async def _field_of_all(q: Queue, state: JobState, field: str) -> list[bytes | None]:
    """One hash field of every job in a state, in one command."""
    key = getattr(q.keys, {"completed": "completed", "failed": "failed"}[state.value])
    values: list[bytes | None] = await q.client.sort(  # type: ignore[assignment]
        key, by="nosort", get=[q.keys.job_prefix + "*->" + field])
    return values


async def test_10k_jobs_running_at_once_longer_than_a_lease(big_queue: Queue) -> None:
    """(a) One worker, concurrency 10,000, 10,000 jobs that each outlive a lease (sleep 4 s,
    lease 3 s): the leases are renewed (10 extend_leases calls of 1,000 per period), so
    every job runs exactly once and none is recovered as stalled."""
    q, n = big_queue, 10_000
    runs: Counter[str] = Counter()

    @task(name="outlive")
    async def outlive() -> None:
        runs[current_job().id] += 1
        await asyncio.sleep(4.0)

    jobs = await q.enqueue_many(outlive.call() for _ in range(n))
    worker = Worker(q, tasks=[outlive], concurrency=n, lease_ms=3000, handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 90)

    assert len(runs) == n and set(runs.values()) == {1}, (
        f"{sum(c > 1 for c in runs.values())} jobs ran more than once,"
        f" {n - len(runs)} never ran")
    assert set(runs) == {j.id for j in jobs}
    assert await q.counts() == {**dict.fromkeys(JobState, 0), JobState.COMPLETED: n}
    stalls = Counter(await _field_of_all(q, JobState.COMPLETED, "stalls"))
    assert stalls == {b"0": n}, f"jobs recovered as stalled: {stalls}"
    assert await q.client.hget(q.keys.metrics_total, "stalled") in (None, b"0")
    await check_invariants(q.client, q.keys)


async def test_enqueue_100k_then_a_burst_worker_completes_them(big_queue: Queue) -> None:
    """(b) enqueue_many of 100,000 jobs (one round trip), then a burst worker runs them
    all; with thousands of outcomes per round trip, outcomes go in calls of 1,000."""
    q, n = big_queue, 100_000
    done = 0

    @task(name="tick")
    async def tick(i: int) -> int:
        nonlocal done
        done += 1
        return i

    jobs = await q.enqueue_many(tick.call(i) for i in range(n))
    assert len({j.id for j in jobs}) == n and not any(j.existed for j in jobs)
    assert (await q.counts())[JobState.WAITING] == n
    worker = Worker(q, tasks=[tick], concurrency=5000, handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 110)

    assert done == n and worker.processed == n
    assert await q.counts() == {**dict.fromkeys(JobState, 0), JobState.COMPLETED: n}
    results = await _field_of_all(q, JobState.COMPLETED, "result")
    assert sorted(codec.decode_value(r) for r in results if r is not None) == list(range(n))
    await check_invariants(q.client, q.keys)


async def test_retry_100k_failed_jobs(big_queue: Queue) -> None:
    """(c) 100,000 failed jobs put back with ONE Queue.retry_jobs call (100 script calls
    of 1,000 ids, one round trip)."""
    q, n = big_queue, 100_000
    await q.enqueue_many(TaskCall.by_name("t") for _ in range(n))
    # fail them all through the scripts, as workers would (calls of 1,000, one round trip)
    fetch, fail = SCRIPTS["fetch_jobs"], SCRIPTS["fail_jobs"]
    batch = Batch()
    for _ in range(0, n, 1000):
        batch.add(fetch, fetch.keys_of(q.keys), [
            q.keys.job_prefix, q.events_maxlen, 1000, 60_000, "w", secrets.token_hex(4), 0,
            q.keys.fetch_prefix])
    fetched = await batch.execute(q.client)
    batch = Batch()
    for reply in fetched:
        rows = [(reply[i], reply[i + 1], "E", "tb", -1) for i in range(1, len(reply), 8)]
        batch.add(fail, fail.keys_of(q.keys), [
            q.keys.job_prefix, q.events_maxlen, -1, -1, codec.pack(rows)])
    assert {s for statuses in await batch.execute(q.client) for s in statuses} == {1}
    assert (await q.counts())[JobState.FAILED] == n

    failed: list[bytes] = await q.client.zrange(q.keys.failed, 0, -1)  # type: ignore[assignment]
    ids = [i.decode() for i in failed]
    assert await q.retry_jobs(ids, strict=True) == n
    assert await q.counts() == {**dict.fromkeys(JobState, 0), JobState.WAITING: n}
    await check_invariants(q.client, q.keys)


async def test_promote_then_remove_100k_jobs(big_queue: Queue) -> None:
    """(c) 100,000 delayed jobs promoted with ONE Queue.promote_jobs call, then removed
    with ONE Queue.remove_jobs call (1,000 atomic calls per round trip): every record
    gone, the sets consistent."""
    q, n = big_queue, 100_000
    jobs = await q.enqueue_many(TaskCall.by_name("t", options=JobOptions(delay_s=3600))
                                for _ in range(n))
    ids = [j.id for j in jobs]
    assert (await q.counts())[JobState.DELAYED] == n
    assert await q.promote_jobs(ids, strict=True) == n
    assert await q.counts() == {**dict.fromkeys(JobState, 0), JobState.WAITING: n}
    await check_invariants(q.client, q.keys)
    with pytest.raises(JobStateError):  # strict: not delayed any more
        await q.promote_jobs(ids[:1], strict=True)
    assert await q.remove_jobs(ids, strict=True) == n
    assert await q.counts() == dict.fromkeys(JobState, 0)
    assert not [k async for k in q.client.scan_iter(match=q.keys.job_prefix + "*", count=1000)]
    assert await q.remove_jobs(ids[:10]) == 0  # gone: skipped, not raised
    await check_invariants(q.client, q.keys)


async def test_a_50mb_argument_round_trips(big_queue: Queue) -> None:
    """(d) A 50 MB argument goes through enqueue, the worker, the handler and back as
    the result, byte for byte."""
    q = big_queue
    blob = secrets.token_bytes(1024) * (50 * 1024)  # 50 MiB

    @task(name="echo_blob", timeout_s=60)
    async def echo_blob(data: bytes) -> bytes:
        return data

    job = await q.enqueue(echo_blob, blob)
    worker = Worker(q, tasks=[echo_blob], concurrency=1, handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 60)
    result = await job.result(timeout=10)
    assert isinstance(result, bytes) and len(result) == len(blob) and result == blob
    await check_invariants(q.client, q.keys)
