"""More of what the README promises, on the real cluster of 3 primaries + 3 replicas:
recovery from a SIGKILLed worker process, queue limits and fair groups, a task's own
dead-letter queue on another shard, idle workers that block, retention trimming, and the
command line on a ``redis+cluster://`` URL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from aiojobs_redis import (
    JobState,
    Queue,
    QueueLimits,
    Retention,
    Schedule,
    TaskCall,
    Worker,
    task,
)
from aiojobs_redis._redis_server import ClusterSetup as Cluster
from aiojobs_redis.connection import client_from_url
from tests.conftest import wait_until
from tests.faults.app import work
from tests.faults.history import check_history, read_runs
from tests.faults.procs import FACT_S, alive, kill, start_worker
from tests.test_cli import arun
from tests.test_worker import running

# ------------------------------------------------------------- helpers


async def _commandstats(port: int) -> dict[str, Any]:
    async with aioredis.Redis(port=port) as direct:
        stats: dict[str, Any] = await direct.info("commandstats")
    return stats


def _calls(stats: dict[str, Any], name: str) -> int:
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


# ------------------------------------------- 1. a SIGKILLed worker process


async def test_sigkilled_worker_process_jobs_are_recovered_on_a_cluster(
        shard_queues: list[Queue], redis_cluster: Cluster, tmp_path: Path) -> None:
    """A worker process (lease 1 s, jobs of 2 s) is SIGKILLed with 5 jobs running; another
    worker recovers them once their leases run out: every job completes, each job that
    was running in the killed process shows a stall, and only those ran twice."""
    q = shard_queues[0]
    keep_all = Retention(completed_count=None, completed_age_s=3600)
    queue = Queue(q.client, name=q.name, retention=keep_all)
    log = tmp_path / "worker.log"
    jobs = await queue.enqueue_many([work.call(2.0) for _ in range(10)])
    victim = start_worker(redis_cluster.url, q.name, log=log, lease_ms=1000, concurrency=5)
    try:
        async def mid_job() -> bool:  # all 5 jobs it holds have reached their handler
            alive(victim, log=log)
            active = set(await queue.job_ids(JobState.ACTIVE))
            return len(active) == 5 and active <= set(await read_runs(queue.client, q.name))

        await wait_until(mid_job, timeout=FACT_S, interval=0.05)
        kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        active_at_kill = set(await queue.job_ids(JobState.ACTIVE))
        assert len(active_at_kill) == 5
        rescuer = Worker(queue, tasks=[work], concurrency=10, lease_ms=1000,
                         handle_signals=False)
        async with running(rescuer):
            results = await asyncio.gather(*(j.result(timeout=FACT_S) for j in jobs))
        recovered_after = time.monotonic() - killed_at
        history = await check_history(queue, queue.client, [j.id for j in jobs])
        infos = {job_id: await queue.job(job_id).info() for job_id in active_at_kill}
    finally:
        kill(victim, signal.SIGKILL)
        await queue.client.delete(f"ajr:{{{q.name}}}:test:runs")
        await queue.close()  # not the client: the fixture's
    assert results == [j.id for j in jobs]
    assert len(history.completed) == 10
    stalls = {job_id: info.stalls for job_id, info in infos.items()}
    for info in infos.values():
        assert info.state is JobState.COMPLETED and info.stalls >= 1, info
    assert history.duplicates == active_at_kill, "exactly the killed worker's jobs ran twice"
    print(f"\ncluster: worker process SIGKILLed with {len(active_at_kill)} jobs running"
          f" (lease 1 s, jobs 2 s); all 10 completed {recovered_after:.1f} s after the kill;"
          f" stalls of the recovered jobs {sorted(stalls.values())}; {history.summary()}")


# ---------------------------------------------------- 2. limits and fair groups

_starts: list[float] = []
_active = 0
_peak = 0
_ran: list[str] = []


@task(name="more.stamp")
async def stamp() -> None:
    _starts.append(time.monotonic())


@task(name="more.hold")
async def hold(seconds: float) -> None:
    global _active, _peak
    _active += 1
    _peak = max(_peak, _active)
    try:
        await asyncio.sleep(seconds)  # the work itself: the limit is what is tested
    finally:
        _active -= 1


@task(name="more.tenant")
async def tenant(group: str) -> None:
    _ran.append(group)


async def test_limits_and_fair_groups_on_a_cluster(shard_queues: list[Queue],
                                                   redis_cluster: Cluster) -> None:
    """On three shards: a rate limit (5 starts per 0.5 s) holds across two workers on
    clients of their own; max_active=3 holds the peak across two workers; a small
    group's jobs enqueued behind a big group's backlog start among the first ones."""
    global _active, _peak
    _starts.clear()
    _ran.clear()
    _active = _peak = 0
    rated, capped, fair = shard_queues
    others = [Queue(client_from_url(redis_cluster.url, cluster=True), name=q.name)
              for q in (rated, capped)]
    try:
        # the rate limit: two workers, each on a cluster client of its own
        await rated.set_limits(max_starts=5, per_s=0.5)
        assert await others[0].limits() == QueueLimits(max_starts=5, per_s=0.5)
        await rated.enqueue_many([stamp.call() for _ in range(20)])
        async with running(Worker(rated, tasks=[stamp], concurrency=50,
                                  handle_signals=False)), \
                running(Worker(others[0], tasks=[stamp], concurrency=50,
                               handle_signals=False)):
            await wait_until(lambda: len(_starts) >= 20, timeout=30, interval=0.05)
        _starts.sort()
        gaps = [_starts[i + 5] - _starts[i] for i in range(len(_starts) - 5)]
        # no window of 0.5 s saw more than 5 starts (a little slack for the clocks' reading)
        assert min(gaps) >= 0.5 - 0.02, gaps
        span = _starts[-1] - _starts[0]
        assert span >= 1.5 - 0.02, "20 starts at 5 per 0.5 s take at least 1.5 s"

        # max_active: two workers of 10 slots each share the queue's 3
        await capped.set_limits(max_active=3)
        await capped.enqueue_many([hold.call(0.05) for _ in range(15)])
        workers = [Worker(capped, tasks=[hold], concurrency=10, handle_signals=False),
                   Worker(others[1], tasks=[hold], concurrency=10, handle_signals=False)]
        await asyncio.wait_for(asyncio.gather(*(w.run(burst=True) for w in workers)), 60)
        assert sum(w.processed for w in workers) == 15
        assert _peak == 3, "both workers share the queue's max_active"

        # fair groups: 10 small jobs enqueued after 2,000 of a big group
        big = [tenant.options(group="big").call("big") for _ in range(2000)]
        for start in range(0, len(big), 1000):
            await fair.enqueue_many(big[start:start + 1000])
        await fair.enqueue_many([tenant.options(group="small").call("small")
                                 for _ in range(10)])
        worker = Worker(fair, tasks=[tenant], concurrency=10, handle_signals=False)
        await asyncio.wait_for(worker.run(burst=True), 60)
        assert len(_ran) == 2010
        last_small = max(i for i, g in enumerate(_ran) if g == "small")
        # taking turns, its 10 jobs are done within about 2 x 10 starts (+ a fetch's worth)
        assert last_small < 40, last_small
    finally:
        for other in others:
            await other.close()
            await other.client.aclose()
    print(f"\ncluster: 20 starts at 5 per 0.5 s over two workers took {span:.2f} s, the"
          f" narrowest 6 consecutive starts {min(gaps):.3f} s apart; peak active {_peak}"
          f" with max_active=3; the small group's 10 jobs all started by start"
          f" #{last_small + 1} of 2,010")


# ------------------------------------- 3. a task's dead-letter queue on another shard


async def _declined(amount: int) -> int:
    raise ValueError(f"card declined for {amount}")


@task(name="more.broken", attempts=1)
async def broken(x: int) -> int:
    raise ValueError(f"broken {x}")


async def test_a_tasks_dead_letter_queue_on_another_shard(shard_queues: list[Queue],
                                                          redis_cluster: Cluster) -> None:
    """``@task(dead_letter=<name>)``: a job of that task that fails for good leaves its
    queue for the named one, which lives on another primary; a task without one keeps
    its failed jobs at home."""
    origin, dead = shard_queues[0], shard_queues[1]
    assert (redis_cluster.primary_for(origin.keys.wait).port
            != redis_cluster.primary_for(dead.keys.wait).port)
    payment = task(name="more.payment", attempts=1, dead_letter=dead.name)(_declined)
    paid = await origin.enqueue(payment, 12)
    other = await origin.enqueue(broken, 1)
    worker = Worker(origin, tasks=[payment, broken], handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 30)
    assert await origin.job_info(paid.id) is None, "gone from its origin"
    info = await dead.job(paid.id).info()
    assert info.state is JobState.FAILED and info.error == "ValueError: card declined for 12"
    assert info.traceback and "card declined" in info.traceback
    assert await dead.client.hget(dead.keys.job(paid.id), "origin") == origin.name.encode()
    assert (await other.info()).state is JobState.FAILED  # no dead letter: stays home
    assert await dead.job_info(other.id) is None
    assert (await dead.counts())[JobState.FAILED] == 1
    assert (await origin.counts())[JobState.FAILED] == 1
    assert await dead.redrive() == 1
    assert (await origin.job(paid.id).info()).state is JobState.WAITING
    print(f"\ncluster: job {paid.id} failed for good on the primary of {origin.name} and"
          f" moved to {dead.name} on another primary; redriven back")


# ------------------------------------------------- 4. idle workers block


async def test_idle_worker_on_a_cluster_blocks_instead_of_polling(
        shard_queues: list[Queue], redis_cluster: Cluster) -> None:
    """An idle worker waits in a blocking pop on the primary of its queue's slot: over a
    second, that node (and the cluster as a whole) runs almost no script."""
    q = shard_queues[2]
    owner = redis_cluster.primary_for(q.keys.wait).port
    primaries = sorted({redis_cluster.primary_for(s.keys.wait).port for s in shard_queues})
    async with running(Worker(q, tasks=[stamp], handle_signals=False)):
        async def blocked() -> bool:
            async with aioredis.Redis(port=owner) as direct:
                return int((await direct.info("clients"))["blocked_clients"]) >= 1

        await wait_until(blocked, timeout=15, interval=0.05)
        before = {port: await _commandstats(port) for port in primaries}
        await asyncio.sleep(1.0)  # the measuring window
        after = {port: await _commandstats(port) for port in primaries}
        assert await blocked()
    evalsha = {port: _calls(after[port], "evalsha") - _calls(before[port], "evalsha")
               for port in primaries}
    print(f"\ncluster: idle second: {evalsha[owner]} EVALSHA on the queue's primary,"
          f" {sum(evalsha.values())} on all primaries")
    assert evalsha[owner] <= 5, f"an idle worker ran {evalsha[owner]} scripts in 1 s: it polls"
    assert sum(evalsha.values()) <= 10, evalsha


# ----------------------------------------------------- 5. retention trimming


@task(name="more.value")
async def value(x: int) -> int:
    return x


async def test_retention_keeps_the_last_completed_jobs_on_a_cluster(
        shard_queues: list[Queue], redis_cluster: Cluster) -> None:
    """``Retention(completed_count=5)``: 50 jobs complete; the completing scripts trim the
    completed set to 5 and delete the other 45 job records on the queue's primary."""
    home = shard_queues[1]
    q = Queue(home.client, name=home.name, retention=Retention(completed_count=5))
    jobs = await q.enqueue_many([value.call(i) for i in range(50)])
    try:
        worker = Worker(q, tasks=[value], concurrency=10, handle_signals=False)
        await asyncio.wait_for(worker.run(burst=True), 30)
    finally:
        await q.close()  # not the client: the fixture's
    assert worker.processed == 50
    members: list[Any] = await q.client.zrange(q.keys.completed, 0, -1)
    kept = {bytes(m).decode() for m in members}
    owner = redis_cluster.primary_for(q.keys.wait).port
    async with aioredis.Redis(port=owner) as direct:
        records = {k.decode()[len(q.keys.job_prefix):]
                   async for k in direct.scan_iter(match=q.keys.job_prefix + "*", count=1000)}
    assert await q.client.zcard(q.keys.completed) == 5
    assert records == kept, (sorted(records), sorted(kept))
    assert kept <= {j.id for j in jobs}
    assert (await home.counts())[JobState.COMPLETED] == 5
    print(f"\ncluster: 50 jobs completed with completed_count=5: {len(kept)} in the"
          f" completed set, {len(records)} job records left on the primary")


# ----------------------------------------------------------- 6. the CLI

CLI_SCHEDULES = [Schedule("more-nightly", value, cron="0 3 * * *", args=(1,))]


@task(name="more.cli")
async def cli_task(x: int) -> int:
    return 10 * x


def make_cli_worker() -> Worker:
    """For ``aiojobs-redis worker``: the queue from $REDIS_URL, as --url expects."""
    queue = Queue.from_url(os.environ["REDIS_URL"], name=os.environ["AJR_TEST_QUEUE"])
    return Worker(queue, tasks=[cli_task], concurrency=4, lease_ms=2000,
                  shutdown_timeout_s=1)


async def test_cli_on_a_cluster_url(shard_queues: list[Queue], redis_cluster: Cluster) -> None:
    """enqueue, counts, jobs show (text and --json), schedules sync and list, and
    worker --burst, each a real process against a ``redis+cluster://`` URL."""
    q = shard_queues[2]
    url = redis_cluster.url
    assert url.startswith("redis+cluster://")
    common = ("--url", url, "--queue", q.name)
    await q.enqueue_many([TaskCall.by_name("more.cli", n) for n in range(2)])

    enqueued = await arun("enqueue", "more.cli", "--args", "[4]", *common)
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    synced = await arun("schedules", "sync", "tests.cluster.test_more_features:CLI_SCHEDULES",
                        *common)
    assert synced.returncode == 0, synced.stderr
    assert "more-nightly: created" in synced.stdout, synced.stdout

    counts, shown, listed = await asyncio.gather(
        arun("counts", *common), arun("jobs", "show", job_id, *common),
        arun("schedules", "list", *common))
    assert counts.returncode == 0, counts.stderr
    words = counts.stdout.split()
    assert words[words.index("waiting") + 1] == "3", counts.stdout
    assert shown.returncode == 0, shown.stderr
    assert job_id in shown.stdout and "more.cli" in shown.stdout and "waiting" in shown.stdout
    assert listed.returncode == 0, listed.stderr
    assert "more-nightly" in listed.stdout and "0 3 * * *" in listed.stdout, listed.stdout

    burst = await arun("worker", "tests.cluster.test_more_features:make_cli_worker", "--burst",
                       "--url", url, AJR_TEST_QUEUE=q.name)
    assert burst.returncode == 0, burst.stderr
    assert (await q.counts())[JobState.COMPLETED] == 3
    record = await arun("jobs", "show", job_id, "--json", *common)
    assert record.returncode == 0, record.stderr
    data = json.loads(record.stdout)
    assert data["state"] == "completed" and data["result"] == 40, data
    after = await arun("counts", *common)
    words = after.stdout.split()
    assert words[words.index("completed") + 1] == "3", after.stdout
    print(f"\ncluster: CLI on {url}: enqueue -> {job_id}, counts, jobs show (text, --json:"
          f" result {data['result']}), schedules sync/list, worker --burst ran 3 jobs")
