"""Metrics: written with the outcomes by a real worker, bounded rings, percentiles,
stalled recoveries, Prometheus exposition, alerts once per episode."""

from __future__ import annotations

import asyncio
import http.server
import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from aiojobs_redis import FixedBackoff, Queue, Worker, task
from aiojobs_redis.ops import metrics as m
from aiojobs_redis.ops.alerts import (
    Alert,
    AlertMonitor,
    BacklogRule,
    FailedJobsRule,
    NoWorkerRule,
    OldestJobRule,
    Webhook,
)
from aiojobs_redis.ops.prometheus import render
from aiojobs_redis.scripts import Batch
from aiojobs_redis.worker.execution import FetchedJob, Outcome
from aiojobs_redis.worker.maintenance import recover_stalled

from .conftest import wait_until
from .scripts import direct
from .test_worker import running


@task(name="ok")
async def ok(x: int) -> int:
    return x


@task(name="boom", attempts=1)
async def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


@task(name="flaky", attempts=2, backoff=FixedBackoff(delay_s=0))
async def flaky(x: int) -> int:
    raise RuntimeError("always")


def fake_outcome(rng: random.Random, i: int) -> Outcome:
    job = FetchedJob(f"j{i}".encode(), b"t", b"ok", b"", b"", 1, 1, rng.randint(0, 20_000))
    outcome = Outcome(job, ok=rng.random() < 0.9)
    outcome.run_ms = rng.random() * 3000
    return outcome


# ------------------------------------------------------------------------------ pure


def test_layout_and_buckets() -> None:
    assert m.WIDTH == len(m.LAYOUT) == 6 + 2 * (len(m.BUCKETS_MS) + 1)
    assert m.bucket_of(0) == 0
    assert m.bucket_of(1) == 0  # bounds are inclusive, as Prometheus' le
    assert m.bucket_of(1.5) == 1
    assert m.bucket_of(3_600_000) == len(m.BUCKETS_MS) - 1
    assert m.bucket_of(10**9) == len(m.BUCKETS_MS)


def test_percentile_estimates() -> None:
    buckets = [0] * (len(m.BUCKETS_MS) + 1)
    assert m.percentile(buckets, 0.5) is None
    buckets[m.bucket_of(100)] = 100  # all in (50, 100]
    p50 = m.percentile(buckets, 0.5)
    assert p50 is not None and 50 < p50 <= 100
    buckets[-1] = 1000  # most above the last bound
    assert m.percentile(buckets, 0.99) == m.BUCKETS_MS[-1]


def test_outcome_increments_split_completed_retried_failed() -> None:
    job = FetchedJob(b"a", b"t", b"x", b"", b"", 1, 3, 40)
    last = FetchedJob(b"b", b"t", b"x", b"", b"", 3, 3, 40)
    done = Outcome(job, ok=True)
    done.run_ms = 12.0
    inc = m.outcome_increments([
        done,
        Outcome(job, ok=False, retry_delay_ms=1000),  # attempts left: retried
        Outcome(job, ok=False, retry_delay_ms=-1),  # no retry wanted: failed
        Outcome(last, ok=False, retry_delay_ms=1000),  # last attempt: failed
    ])
    assert (inc.counts["completed"], inc.counts["retried"], inc.counts["failed"]) == (1, 1, 2)
    assert inc.counts[f"wait:{m.bucket_of(40)}"] == 4
    assert inc.counts["run_sum_ms"] == 12


# ------------------------------------------------------------------- through a worker


async def test_worker_writes_metrics_in_its_round_trips(queue: Queue) -> None:
    await queue.enqueue_many([ok.call(i) for i in range(7)] + [boom.call(i) for i in range(2)]
                             + [flaky.call(1)])
    await Worker(queue, tasks=[ok, boom, flaky], handle_signals=False).run(burst=True)
    totals = await m.read_totals(queue.client, queue.keys)
    assert totals["completed"] == 7
    assert totals["failed"] == 3  # 2 boom + flaky after its second attempt
    assert totals["retried"] == 1
    wait_count = sum(totals[f"wait:{i}"] for i in range(len(m.BUCKETS_MS) + 1))
    run_count = sum(totals[f"run:{i}"] for i in range(len(m.BUCKETS_MS) + 1))
    assert wait_count == run_count == 11  # one per attempt
    window = await m.read_window(queue.client, queue.keys, 60)
    assert len(window.series) == 60
    assert (window.completed, window.failed, window.retried) == (7, 3, 1)
    assert window.series[-1].completed == 7 or window.series[-2].completed + \
        window.series[-1].completed == 7  # a minute may turn during the test
    assert window.run.count == 11 and window.run.p99_ms is not None


async def test_stalled_recoveries_are_counted(queue: Queue) -> None:
    await queue.enqueue(ok, 1)
    _, jobs = await direct.fetch(queue, 1, lease_ms=1)
    assert len(jobs) == 1

    async def recovered() -> bool:
        requeued, _ = await recover_stalled(queue, max_stalls=3)
        return requeued == 1

    await wait_until(recovered, timeout=5)
    totals = await m.read_totals(queue.client, queue.keys)
    assert totals["stalled"] == 1 and totals["failed"] == 0


# ------------------------------------------------------------------------- bounds


async def test_metrics_keys_stay_bounded_after_100k_outcomes(queue: Queue,
                                                             client: aioredis.Redis) -> None:
    # a day and more of history: every slot of the ring stamped with an old minute
    now_minute = await m.redis_minute(client)
    stale: dict[str | bytes, str | bytes] = {
        str(s): f"{now_minute - 2 * m.MINUTE_SLOTS} 5 5 5" for s in range(m.MINUTE_SLOTS)}
    await client.hset(queue.keys.metrics, mapping=stale)  # type: ignore[arg-type]
    rng = random.Random(7)
    outcomes = [fake_outcome(rng, i) for i in range(100_000)]
    started = time.perf_counter()
    for start in range(0, len(outcomes), 20_000):
        batch = Batch()
        for chunk in range(start, start + 20_000, 500):  # 500 outcomes per worker round trip
            m.add_outcomes(batch, queue, outcomes[chunk:chunk + 500])
        await batch.execute(client)
    elapsed = time.perf_counter() - started
    assert elapsed < 30, f"recording 100,000 outcomes took {elapsed:.1f} s"

    assert await client.hlen(queue.keys.metrics) == m.MINUTE_SLOTS
    assert await client.hlen(queue.keys.metrics_total) <= m.TOTAL_FIELDS
    for value in (await client.hgetall(queue.keys.metrics)).values():
        assert len(value.split()) <= m.WIDTH + 1  # the minute stamp and WIDTH counters
    totals = await m.read_totals(client, queue.keys)
    done = sum(1 for o in outcomes if o.ok)
    assert totals["completed"] == done and totals["failed"] == len(outcomes) - done
    # the stale slots counted nothing: the window holds exactly what was recorded
    window = await m.read_window(client, queue.keys, m.MINUTE_SLOTS)
    assert window.completed == done and window.wait.count == len(outcomes)
    assert window.stalled == 0
    memory = await client.memory_usage(queue.keys.metrics) or 0
    assert memory < 512 * 1024, f"the ring uses {memory} bytes"


async def test_record_metrics_refuses_bad_groups_and_writes_nothing(queue: Queue) -> None:
    from aiojobs_redis.scripts import SCRIPTS

    script = SCRIPTS["record_metrics"]
    with pytest.raises(Exception, match="bad group"):
        await script(queue.client, script.keys_of(queue.keys),
                     [m.MINUTE_SLOTS, m.WIDTH, "b1", 1, "completed", 1, m.WIDTH + 1, "x", 1])
    assert not await queue.client.exists(queue.keys.metrics, queue.keys.metrics_total)


# --------------------------------------------------------------------- prometheus


async def test_prometheus_exposition_parses_back(queue: Queue) -> None:
    await queue.enqueue_many([ok.call(i) for i in range(4)] + [boom.call(9)])
    await Worker(queue, tasks=[ok, boom], handle_signals=False).run(burst=True)
    await queue.enqueue_many([ok.call(i) for i in range(3)])
    text = (await render([queue])).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in fams.values() for s in f.samples}
    q = ("queue", queue.name)
    assert samples[("ajr_jobs", (q, ("state", "waiting")))] == 3
    assert samples[("ajr_jobs", (q, ("state", "completed")))] == 4
    assert samples[("ajr_jobs", (q, ("state", "failed")))] == 1
    assert samples[("ajr_jobs_completed_total", (q,))] == 4
    assert samples[("ajr_jobs_failed_total", (q,))] == 1
    assert samples[("ajr_workers", (q,))] == 0
    assert samples[("ajr_queue_paused", (q,))] == 0
    assert samples[("ajr_oldest_waiting_job_age_seconds", (q,))] >= 0
    assert fams["ajr_job_run_seconds"].type == "histogram"
    assert samples[("ajr_job_run_seconds_count", (q,))] == 5
    assert samples[("ajr_job_wait_seconds_bucket", (("le", "+Inf"), q))] == 5


async def test_serve_metrics_on_its_own_port(queue: Queue) -> None:
    import httpx

    from aiojobs_redis._redis_server import free_port
    from aiojobs_redis.ops.prometheus import serve_metrics

    port = free_port()
    server = asyncio.create_task(serve_metrics(queue, port=port))
    try:
        async with httpx.AsyncClient() as http:
            async def answered() -> bool:
                try:
                    r = await http.get(f"http://127.0.0.1:{port}/metrics")
                except httpx.TransportError:
                    return False
                return r.status_code == 200 and "ajr_jobs" in r.text

            await wait_until(answered, timeout=10, interval=0.05)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


# ------------------------------------------------------------------------- alerts


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def webhook_url() -> Iterator[str]:
    _Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


async def test_alerts_fire_once_per_episode(queue: Queue, webhook_url: str) -> None:
    seen: list[Alert] = []
    monitor = AlertMonitor(queue, [
        NoWorkerRule(notify=[seen.append]),
        BacklogRule(max_waiting=2, notify=[seen.append, Webhook(webhook_url)]),
        OldestJobRule(max_age_s=3600, notify=[seen.append]),
        FailedJobsRule(notify=[seen.append]),
    ], interval_s=0.1)

    first = await monitor.check()
    assert [(a.rule, a.firing) for a in first] == [("no_worker", True)]
    assert await monitor.check() == []  # still no worker: no second alert

    await queue.enqueue_many([ok.call(i) for i in range(3)])
    fired = await monitor.check()
    assert [(a.rule, a.firing, a.value) for a in fired] == [("backlog", True, 3.0)]
    await queue.enqueue_many([ok.call(i) for i in range(50)])  # more of the same episode
    assert await monitor.check() == []
    assert [h["rule"] for h in _Hook.received] == ["backlog"]
    assert _Hook.received[0]["queue"] == queue.name and _Hook.received[0]["firing"] is True

    await queue.enqueue_many([boom.call(i) for i in range(4)])
    await Worker(queue, tasks=[ok, boom], handle_signals=False).run(burst=True)
    fired = await monitor.check()
    rules = {a.rule: a for a in fired}
    assert set(rules) == {"backlog", "job_failed"}
    assert rules["backlog"].firing is False  # drained: the backlog episode ended
    assert rules["job_failed"].firing and rules["job_failed"].value == 4
    assert len(rules["job_failed"].job_ids) == 4
    ended = await monitor.check()  # no new failure: that episode ends
    assert [(a.rule, a.firing) for a in ended] == [("job_failed", False)]
    assert await monitor.check() == []
    assert [(a.rule, a.firing) for a in seen] == [
        ("no_worker", True), ("backlog", True), ("backlog", False), ("job_failed", True),
        ("job_failed", False),
    ]


async def test_a_broken_notifier_never_stops_the_monitor(queue: Queue) -> None:
    calls: list[Alert] = []

    def broken(alert: Alert) -> None:
        raise RuntimeError("pager down")

    monitor = AlertMonitor(queue, [NoWorkerRule(notify=[broken, calls.append])],
                           interval_s=0.05)
    runner = asyncio.create_task(monitor.run())
    try:
        await wait_until(lambda: len(calls) == 1, timeout=5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert calls[0].rule == "no_worker"


# --------------------------------------------------------------------------- docs


def test_operations_doc_matches_the_code() -> None:
    import re
    from pathlib import Path

    from aiojobs_redis.ops.prometheus import families

    text = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(ajr_\w+)` \|", text, re.M))
    snap = m.Snapshot(queue="q", counts={"waiting": 0}, paused=False, workers=[],
                      oldest_waiting_age_s=None, now_ms=0,
                      totals=dict.fromkeys(m.LAYOUT + m.EVENTS, 0))
    emitted = set()
    for fam in families([snap]):
        emitted.add(fam.name + ("_total" if fam.type == "counter" else ""))
    assert documented == emitted
    assert f"at most **{m.MINUTE_SLOTS:,} fields (24 h)**" in text
    assert f"at most **{m.TOTAL_FIELDS} fields**" in text
    assert f"The {m.WIDTH} counters of a slot" in text


async def test_oldest_waiting_age_counts_from_when_the_job_became_runnable(
        queue: Queue) -> None:
    """A job created an hour ago that failed and was retried a second ago has waited a
    second, not an hour (its 'ready' stamp; before: 'created'/'due')."""
    job = await queue.enqueue("t")
    now_ms = int((await queue.now()).timestamp() * 1000)
    await queue.client.hset(queue.keys.job(job.id),
                            mapping={"created": now_ms - 3_600_000, "ready": now_ms - 1000})
    snap = await m.snapshot(queue)
    assert snap.oldest_waiting_age_s is not None and 0.9 <= snap.oldest_waiting_age_s < 60


@task(name="metrics.control", attempts=1)
async def control(fail: bool) -> None:
    if fail:
        raise ValueError("for the dead-letter queue")


async def test_job_control_counters(queue: Queue) -> None:
    """cancelled, deduplicated, dead_lettered, limited and parked are counted where they
    happen, in the totals (and so in Prometheus)."""
    dead = Queue(queue.client, name=queue.name + ".dlq")
    home = Queue(queue.client, name=queue.name, dead_letter=dead)
    try:
        waiting = await home.enqueue(control.options(delay_s=60), False)
        await waiting.cancel()
        await home.enqueue(control.options(dedup_key="k", dedup_ttl_s=60), False)
        await home.enqueue(control.options(dedup_key="k", dedup_ttl_s=60), False)
        await home.enqueue(control, True)  # fails for good: dead-lettered
        worker = Worker(home, tasks=[control], handle_signals=False)
        await asyncio.wait_for(worker.run(burst=True), 30)
        await home.set_limits(group_max_starts=1, group_per_s=60)
        await home.enqueue_many([control.options(group="g").call(False) for _ in range(3)])
        async with running(Worker(home, tasks=[control], handle_signals=False)):
            async def parked() -> bool:
                return bool(await home.client.hget(home.keys.meta, "parked") == b"2")
            await wait_until(parked)
            await home.set_limits(max_starts=1, per_s=60, group_max_starts=1, group_per_s=60)
            await home.enqueue_many([control.call(False) for _ in range(2)])  # 1 starts

            async def limited() -> bool:
                return (await m.read_totals(home.client, home.keys))["limited"] >= 1
            await wait_until(limited)
        totals = await m.read_totals(home.client, home.keys)
        assert {k: totals[k] for k in m.EVENTS if k not in ("limited", "released")} == {
            "cancelled": 1, "deduplicated": 1, "dead_lettered": 0, "parked": 2}
        assert (await m.read_totals(dead.client, dead.keys))["dead_lettered"] == 1
        text = (await render([home, dead])).decode()
        assert f'ajr_jobs_parked_total{{queue="{home.name}"}} 2.0' in text
        assert f'ajr_jobs_dead_lettered_total{{queue="{dead.name}"}} 1.0' in text
    finally:
        await dead.obliterate(force=True)
        await home.obliterate(force=True)
        await home.close()  # its blocking pool (the worker's idle waits)
        await dead.close()
