"""What the README promises, on a real multi-node cluster."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from aiojobs_redis import (
    AlertMonitor,
    BacklogRule,
    JobState,
    Queue,
    Schedule,
    TaskCall,
    Worker,
    current_job,
    task,
)
from aiojobs_redis._redis_server import ClusterSetup as Cluster
from aiojobs_redis.ops import metrics
from tests.conftest import wait_until
from tests.test_worker import running


@task(name="cl.double")
async def double(x: int) -> int:
    ctx = current_job()
    await ctx.progress(x)
    return 2 * x


@task(name="cl.plain")
async def plain(x: int) -> int:
    return x


@task(name="cl.beat")
async def beat() -> None:
    return None


async def test_one_worker_serves_queues_on_three_shards(shard_queues: list[Queue]) -> None:
    jobs = []
    for i, q in enumerate(shard_queues):
        jobs += await q.enqueue_many([double.call(100 * i + n) for n in range(100)])
    events = shard_queues[0].events(since="0")
    async with running(Worker(shard_queues, tasks=[double], concurrency=30,
                              handle_signals=False)):
        results = await asyncio.gather(*(j.result(timeout=30) for j in jobs))
    assert sorted(results) == sorted(2 * (100 * i + n) for i in range(3) for n in range(100))
    for q in shard_queues:
        counts = await q.counts()
        assert counts[JobState.COMPLETED] == 100 and counts[JobState.WAITING] == 0
    kinds = set()
    async for event in events:
        kinds.add(event.event)
        if "completed" in kinds:
            break
    assert {"added", "completed"} <= kinds


async def test_batches_are_one_pipeline_per_node(shard_queues: list[Queue],
                                                 redis_cluster: Cluster) -> None:
    """A busy worker's round trips on a cluster: outcomes and fetches of a lane go in one
    pipeline to the queue's primary, not one call after another."""
    q = shard_queues[0]
    await q.enqueue_many([plain.call(n) for n in range(2000)])
    node = redis_cluster.primary_for(q.keys.wait)
    import redis.asyncio as aioredis

    async with aioredis.Redis(port=node.port) as direct:
        before = (await direct.info("stats"))["total_reads_processed"]
        calls_before = await _evalsha_calls(direct)
        worker = Worker(q, tasks=[plain], concurrency=50, handle_signals=False)
        await worker.run(burst=True)
        reads = (await direct.info("stats"))["total_reads_processed"] - before
        calls = await _evalsha_calls(direct) - calls_before
    assert worker.processed == 2000 and (await q.counts())[JobState.WAITING] == 0
    # a round trip carries the outcomes, the metrics and the fetch: about 3 calls per read
    print(f"cluster: {reads} reads for {calls} script calls, {reads / 2000:.3f} per job")
    assert reads < calls * 0.75  # one call after another would be a read per call


async def _evalsha_calls(client: Any) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_schedules_fire_and_heal_after_flushall_on_every_primary(
        shard_queues: list[Queue], redis_cluster: Cluster,
        caplog: pytest.LogCaptureFixture) -> None:
    q = shard_queues[1]
    pulse = Schedule("pulse", beat, every_s=0.1)
    caplog.set_level(logging.WARNING)
    async with running(Worker(q, tasks=[beat], schedules=[pulse], schedule_verify_s=0.2,
                              handle_signals=False)):
        await wait_until(lambda: _completed(q, 3), timeout=15)
        redis_cluster.flushall()
        await wait_until(lambda: q.schedules.get("pulse"), timeout=15)
        await wait_until(lambda: _completed(q, 2), timeout=15)
        # the sentinel is read at the next verification: a flush that lands between a
        # verification's sentinel check and its upsert is noticed one period later
        await wait_until(lambda: "QUEUE KEYS VANISHED" in caplog.text, timeout=15)
    assert "SCHEDULE WAS MISSING" in caplog.text


async def _completed(q: Queue, n: int) -> bool:
    return (await q.counts())[JobState.COMPLETED] >= n


async def test_metrics_alerts_and_http_api(shard_queues: list[Queue]) -> None:
    import httpx

    from aiojobs_redis.ops.web import create_app

    q = shard_queues[2]
    await q.enqueue_many([TaskCall.by_name("cl.double", n) for n in range(5)])
    snap = await metrics.snapshot(q)
    assert snap.counts["waiting"] == 5 and snap.now_ms > 0
    fired: list[Any] = []
    monitor = AlertMonitor([q], [BacklogRule(max_waiting=3, notify=[fired.append])],
                           interval_s=1)
    await monitor.check()
    assert len(fired) == 1 and "5 jobs waiting" in str(fired[0])
    app = create_app(shard_queues, token="cluster-token")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        headers = {"Authorization": "Bearer cluster-token"}
        body = (await http.get("/api/queues", headers=headers)).json()
        assert {x["name"] for x in body["queues"]} == {x.name for x in shard_queues}
        page = await http.get("/metrics", headers=headers)
        assert page.status_code == 200 and q.name in page.text


async def test_cli_commands_on_a_cluster_url(shard_queues: list[Queue],
                                             redis_cluster: Cluster) -> None:
    import subprocess
    import sys

    q = shard_queues[0]
    await q.enqueue_many([TaskCall.by_name("cl.double", n) for n in range(3)])
    url = redis_cluster.url

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aiojobs_redis", *args], text=True,
                              capture_output=True, timeout=60, check=False)

    counts = await asyncio.to_thread(cli, "counts", "--url", url, "--queue", q.name)
    assert counts.returncode == 0, counts.stderr
    assert "waiting    3" in counts.stdout
    health = await asyncio.to_thread(cli, "health", "--url", url, "--queue", q.name)
    assert health.returncode == 1 and "UNHEALTHY" in health.stdout  # no worker yet
    async with running(Worker(q, tasks=[double], handle_signals=False)):
        await wait_until(lambda: _completed(q, 3), timeout=15)
        health = await asyncio.to_thread(cli, "health", "--url", url, "--queue", q.name)
    assert health.returncode == 0 and health.stdout.startswith("OK"), health.stdout


@task(name="cl.hang")
async def hang_here(key: str) -> None:
    _hanging.setdefault(key, asyncio.Event()).set()
    await asyncio.Event().wait()  # until cancelled


_hanging: dict[str, asyncio.Event] = {}


async def test_cancel_reaches_the_worker_on_every_shard(shard_queues: list[Queue]) -> None:
    """A running job on each of three shards is cancelled through its queue's channel
    (PUBLISH from the script on that shard, one worker subscribed per client); a waiting
    one is cancelled before it runs."""
    from aiojobs_redis import JobCancelled

    worker = Worker(shard_queues, tasks=[hang_here, plain], handle_signals=False)
    async with running(worker):
        await asyncio.wait_for(worker.cancels.subscribed.wait(), 10)
        jobs = [await q.enqueue(hang_here, q.name) for q in shard_queues]
        for q in shard_queues:
            await wait_until(lambda q=q: q.name in _hanging, 10)
        loop = asyncio.get_running_loop()
        for job in jobs:
            sent = loop.time()
            assert await job.cancel(by="cluster-test") is JobState.ACTIVE
            with pytest.raises(JobCancelled):
                await job.result(timeout=10)
            assert loop.time() - sent < 2, "pushed, not learnt from a lease renewal (10 s)"
    waiting = await shard_queues[0].enqueue(plain, 1)
    assert await waiting.cancel() is JobState.CANCELLED
    assert (await waiting.info()).state is JobState.CANCELLED


async def test_dedup_and_debounce_on_every_shard(shard_queues: list[Queue]) -> None:
    for q in shard_queues:
        first = await q.enqueue(plain.options(dedup_key="d", dedup_ttl_s=60, debounce=True,
                                              delay_s=3600), 1)
        again = await q.enqueue(plain.options(dedup_key="d", dedup_ttl_s=60, debounce=True,
                                              delay_s=3600), 2)
        assert again.id == first.id and (await first.info()).args == [2]
        assert await q.client.pttl(q.keys.dedup_prefix + "d") > 0


_asked: dict[str, int] = {}


@task(name="cl.outcomes", attempts=3)
async def decide(kind: str) -> str:
    ctx = current_job()
    await ctx.log(f"attempt {ctx.attempt}: {kind}")
    if kind == "unrecoverable":
        from aiojobs_redis import Unrecoverable
        raise Unrecoverable("bad input")
    _asked[ctx.id] = _asked.get(ctx.id, 0) + 1
    if kind == "retry" and _asked[ctx.id] == 1:  # the attempt is given back: still 1 after
        from aiojobs_redis import Retry
        raise Retry("not yet", delay_s=0, count_attempt=False)
    return f"{kind} on attempt {ctx.attempt}"


async def test_job_control_on_every_shard(shard_queues: list[Queue]) -> None:
    """Retry/Unrecoverable, job logs, change, expiry, limits and fair groups: each script
    runs on the shard that owns its queue."""
    from aiojobs_redis import JobFailed, QueueLimits

    for q in shard_queues:
        retried = await q.enqueue(decide, "retry")
        dead = await q.enqueue(decide, "unrecoverable")
        stale = await q.enqueue(decide.options(expires_s=0.001), "stale")
        moved = await q.enqueue(decide.options(delay_s=3600), "moved")
        assert await moved.change(delay_s=0, priority=3) is JobState.WAITING
        await q.set_limits(max_starts=100, per_s=1, max_active=2)
        await q.enqueue_many([plain.options(group=g).call(1) for g in ("a", "b") * 3])
        await asyncio.sleep(0.01)  # past the stale job's 1 ms deadline
        worker = Worker(q, tasks=[decide, plain], handle_signals=False)
        await asyncio.wait_for(worker.run(burst=True), 30)
        assert await retried.result(timeout=5) == "retry on attempt 1"
        assert [line.text for line in await retried.logs()] == ["attempt 1: retry",
                                                                "attempt 1: retry"]
        with pytest.raises(JobFailed, match="Unrecoverable"):
            await dead.result(timeout=5)
        info = await stale.info()
        assert info.state is JobState.FAILED and (info.error or "").startswith("Expired")
        assert await moved.result(timeout=5) == "moved on attempt 1"
        assert await q.limits() == QueueLimits(max_starts=100, per_s=1, max_active=2)
        assert (await q.counts())[JobState.COMPLETED] == 2 + 6


@task(name="cl.broken", attempts=1)
async def broken(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x


async def test_dead_letter_and_redrive_across_shards(shard_queues: list[Queue]) -> None:
    """The origin and its dead-letter queue live on two shards: the move is two steps."""
    home, dead = shard_queues[0], shard_queues[1]
    origin = Queue(home.client, name=home.name, dead_letter=dead)
    job = await origin.enqueue(broken, -1)
    worker = Worker(origin, tasks=[broken], handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 30)
    assert await origin.job_info(job.id) is None
    assert (await dead.job(job.id).info()).error == "ValueError: negative"
    assert await dead.redrive() == 1
    assert (await origin.job(job.id).info()).state is JobState.WAITING


_group_active: dict[str, int] = {}
_group_peak: dict[str, int] = {}


@task(name="cl.account")
async def account(queue: str, group: str) -> None:
    key = f"{queue}/{group}"
    _group_active[key] = _group_active.get(key, 0) + 1
    _group_peak[key] = max(_group_peak.get(key, 0), _group_active[key])
    try:
        await asyncio.sleep(0.05)  # the upstream call; the limit is what is tested
    finally:
        _group_active[key] -= 1


async def _parked(q: Queue, group: str, n: int) -> bool:
    return bool(await q.client.zcard(q.keys.group_prefix + group + ":parked") == n)


async def test_group_limits_on_every_shard(shard_queues: list[Queue]) -> None:
    """Group limits park and release jobs in each shard's own keys; a parked job can be
    cancelled; obliterate leaves none of the per-group keys behind."""
    from aiojobs_redis import GroupLimits

    for q in shard_queues:
        await q.set_limits(group_max_active=1)
        await q.set_group_limits("b", max_active=2)
        assert await q.group_limits("b") == GroupLimits(max_active=2)
        await q.enqueue_many([account.options(group=g).call(q.name, g)
                              for g in ("a", "b") * 6])
        worker = Worker(q, tasks=[account], concurrency=10, handle_signals=False)
        await asyncio.wait_for(worker.run(burst=True), 30)
        assert worker.processed == 12
        assert (_group_peak[f"{q.name}/a"], _group_peak[f"{q.name}/b"]) == (1, 2)

        await q.set_limits(group_max_starts=1, group_per_s=60)
        jobs = [await q.enqueue(account.options(group="c"), q.name, "c") for _ in range(3)]
        async with running(Worker(q, tasks=[account], concurrency=10, handle_signals=False)):
            await wait_until(lambda q=q: _parked(q, "c", 2), timeout=10)
        assert await jobs[2].cancel() is JobState.CANCELLED
        assert (await q.counts())[JobState.WAITING] == 1
        await q.obliterate()
        assert [k async for k in q.client.scan_iter(match=q.keys.base + "*")] == []


@task(name="cl.sum")
async def total(values: list[int]) -> int:
    return sum(values)


@task(name="cl.parent")
async def parent(n: int) -> int:
    done = await current_job().dependencies()
    if not done:
        await current_job().wait_for(plain.call(i) for i in range(n))
    return sum(d.result for d in done)


async def test_flows_on_every_shard(shard_queues: list[Queue]) -> None:
    """A chain, a chord with a failing edge and a drained dependency, each in the keys of
    its shard; the release happens inside the finishing script on that shard."""
    from aiojobs_redis import Flow, chain, chord

    for q in shard_queues:
        jobs = await q.enqueue_flow(chain(double.call(1), double.fed(), double.fed()))
        fan = await q.enqueue_flow(chord([plain.call(i) for i in range(30)], total.fed()))
        flow = Flow()
        bad = flow.add(broken.call(-1))
        after = flow.add(plain.call(7), after=[bad], on_failure="continue")
        failing = flow.add(plain.call(8), after=[bad])
        dag = await q.enqueue_flow(flow)
        waiting_parent = await q.enqueue(parent, 12)
        assert (await dag[2].info()).state is JobState.BLOCKED and after and failing
        worker = Worker(q, tasks=[double, plain, total, broken, parent], concurrency=20,
                        handle_signals=False)
        await asyncio.wait_for(worker.run(burst=True), 30)
        assert await jobs[-1].result(timeout=5) == 8
        assert await fan[-1].result(timeout=5) == sum(range(30))
        assert await dag[1].result(timeout=5) == 7
        assert (await dag[2].info()).state is JobState.FAILED
        assert await waiting_parent.result(timeout=5) == sum(range(12))
        assert (await q.counts())[JobState.BLOCKED] == 0


async def test_a_flow_across_queues_of_one_tag_on_every_shard(
        shard_queues: list[Queue]) -> None:
    """'<tag>:<name>' queues share their tag's slot: a flow spans them on each shard; a
    flow across tags is refused before any script runs (it would cross slots)."""
    from aiojobs_redis import ConfigurationError, Flow

    for home in shard_queues:
        client = home.client
        a, b = (Queue(client, name=f"{home.name}:{part}") for part in ("a", "b"))
        try:
            assert a.keys.wait.startswith(f"ajr:{{{home.name}}}/a:")
            flow = Flow()
            parts = [flow.add(plain.call(i)) for i in range(5)]
            summed = flow.add(total.fed(), after=parts, feed="all", queue=b)
            jobs = await a.enqueue_flow(flow)
            worker = Worker([a, b], tasks=[plain, total], handle_signals=False)
            async with running(worker):
                assert await jobs[-1].result(timeout=10) == sum(range(5))
            assert summed.job_id == jobs[-1].id
            crossing = Flow()
            step = crossing.add(plain.call(1))
            crossing.add(total.fed(), after=[step], feed="all", queue=shard_queues[0]
                         if home is not shard_queues[0] else shard_queues[1])
            with pytest.raises(ConfigurationError, match="hash tags"):
                await a.enqueue_flow(crossing)
        finally:
            for q in (a, b):
                await q.obliterate(force=True)
                await q.close()
