"""Schedules against a real Redis: idempotent upsert, atomic replacement, removal, listing
with the last outcome, run-now, catch-up policies, and self-healing after FLUSHALL."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import (
    CatchUp,
    ConfigurationError,
    JobOptions,
    JobState,
    Queue,
    Schedule,
    ScheduleNotFound,
    Upserted,
    Worker,
    task,
)
from aiojobs_redis.schedules.ticks import jitter_ms, next_tick_ms, tick_job_id

from .conftest import wait_until
from .test_worker import running


@task(name="beat")
async def beat(n: int = 0) -> int:
    return n


@task(name="boom")
async def boom() -> None:
    raise RuntimeError("kaputt")


async def state(queue: Queue, name: str) -> dict[str, bytes]:
    raw: dict[Any, Any] = await queue.client.hgetall(queue.keys.sched_prefix + name)
    return {k.decode(): v for k, v in raw.items()}


async def tick_jobs(queue: Queue, name: str) -> list[int]:
    """Ticks whose job exists, ascending (job ids are sched:<name>:<tick>)."""
    prefix = f"{queue.keys.job_prefix}sched:{name}:"
    keys = [k.decode() async for k in queue.client.scan_iter(match=prefix + "*", count=1000)]
    return sorted(int(k[len(prefix):]) for k in keys if k[len(prefix):].isdigit())


async def make_due(queue: Queue, name: str, tick: int) -> None:
    """Pretend no worker ran for a while: move the pending tick back to ``tick``."""
    await queue.client.hset(queue.keys.sched_prefix + name, mapping={"tick": tick, "due": tick})
    await queue.client.zadd(queue.keys.schedules, {name: tick})


async def redis_ms(queue: Queue) -> int:
    return int((await queue.now()).timestamp() * 1000)


# --------------------------------------------------------------------- upsert

async def test_upsert_twice_changes_nothing(queue: Queue) -> None:
    s = Schedule("pulse", beat, every_s=60, args=(1,))
    assert await queue.schedules.upsert(s) is Upserted.CREATED
    before = await state(queue, "pulse")
    for _ in range(3):
        assert await queue.schedules.upsert(Schedule("pulse", beat, every_s=60, args=(1,))) \
            is Upserted.UNCHANGED
    assert await state(queue, "pulse") == before
    infos = await queue.schedules.list()
    assert [i.name for i in infos] == ["pulse"]
    info = infos[0]
    assert info.every_s == 60 and info.runs == 0 and info.last_job_id is None
    assert info.next_tick_at is not None and info.next_run_at == info.next_tick_at
    assert info.next_tick_at.timestamp() * 1000 % 60_000 == 0


async def test_a_changed_definition_replaces_the_pending_tick_atomically(queue: Queue) -> None:
    s1 = Schedule("pulse", beat, every_s=60, args=(1,))
    await queue.schedules.upsert(s1)
    now = await redis_ms(queue)
    last = now - now % 60_000  # the latest tick, now due
    await make_due(queue, "pulse", last)
    fired, _ = await queue.schedules.advance()
    assert fired == 1 and await tick_jobs(queue, "pulse") == [last]

    # the new definition plans from the last tick handled: nothing lost, nothing twice
    s2 = Schedule("pulse", beat, every_s=45, args=(2,), jitter_s=5)
    assert await queue.schedules.upsert(s2) is Upserted.REPLACED
    st = await state(queue, "pulse")
    expected = next_tick_ms(s2.definition, last)
    assert expected is not None
    assert int(st["tick"]) == expected > last
    assert int(st["due"]) == expected + jitter_ms(s2.definition, expected)
    assert int(st["runs"]) == 1 and int(st["last_tick"]) == last
    assert await queue.schedules.upsert(s2) is Upserted.UNCHANGED
    # and back again: the old definition's next tick after the same last tick
    assert await queue.schedules.upsert(s1) is Upserted.REPLACED
    assert int((await state(queue, "pulse"))["tick"]) == last + 60_000


async def test_racing_upserts_and_advances_never_fire_a_tick_twice(queue: Queue) -> None:
    a = Schedule("flip", beat, every_s=0.02, args=(1,), catch_up=CatchUp.ALL)
    b = Schedule("flip", beat, every_s=0.03, args=(2,), catch_up=CatchUp.ALL)
    await queue.schedules.upsert(a)
    stop = asyncio.Event()

    async def advancer() -> None:
        store = Queue(queue.client, name=queue.name).schedules
        while not stop.is_set():
            await store.advance()
            await asyncio.sleep(0.001)

    async def flipper() -> None:
        for i in range(60):
            await queue.schedules.upsert(b if i % 2 == 0 else a)
            await asyncio.sleep(0.01)
        stop.set()

    await asyncio.gather(flipper(), *(advancer() for _ in range(4)))
    jobs = await tick_jobs(queue, "flip")
    st = await state(queue, "flip")
    assert len(jobs) > 20
    # every fire counted its ticks: as many runs as distinct jobs means none fired twice
    assert int(st["runs"]) == len(jobs) == len(set(jobs))
    assert all(t % 20 == 0 or t % 30 == 0 for t in jobs)


async def test_remove(queue: Queue) -> None:
    await queue.schedules.upsert(Schedule("gone", beat, every_s=60))
    assert await queue.schedules.remove("gone") is True
    assert await queue.schedules.remove("gone") is False
    assert await queue.schedules.list() == []
    assert await queue.client.exists(queue.keys.sched_prefix + "gone") == 0
    with pytest.raises(ScheduleNotFound, match="gone"):
        await queue.schedules.run_now("gone")


async def test_schedule_naming_another_queue_is_refused(queue: Queue) -> None:
    with pytest.raises(ConfigurationError, match="names queue"):
        await queue.schedules.upsert(Schedule("x", beat, every_s=1, queue="elsewhere"))


# ---------------------------------------------------------- firing and outcomes

async def test_a_due_tick_enqueues_exactly_its_job(queue: Queue) -> None:
    opts = JobOptions(attempts=3, priority=5)
    await queue.schedules.upsert(Schedule("p", beat, every_s=10, args=(7,), options=opts))
    now = await redis_ms(queue)
    tick = now - now % 10_000
    await make_due(queue, "p", tick)
    fired, next_in = await queue.schedules.advance()
    assert fired == 1 and next_in is not None and 0 < next_in <= 10
    assert (await queue.schedules.advance())[0] == 0  # nothing due any more
    info = await queue.job_info(tick_job_id("p", tick))
    assert info is not None
    assert info.task == "beat" and info.args == [7] and info.kwargs == {}
    assert info.state is JobState.WAITING and info.max_attempts == 3 and info.priority == 5
    st = await state(queue, "p")
    assert int(st["tick"]) == tick + 10_000 and int(st["runs"]) == 1


async def test_list_shows_next_run_and_last_outcome(queue: Queue) -> None:
    await queue.schedules.upsert(Schedule("ok", beat, every_s=3600, args=(1,)))
    await queue.schedules.upsert(Schedule("bad", boom, every_s=3600))
    now = await redis_ms(queue)
    for name in ("ok", "bad"):
        await make_due(queue, name, now - now % 3_600_000)
    await queue.schedules.advance()
    infos = {i.name: i for i in await queue.schedules.list()}
    assert infos["ok"].last_state is JobState.WAITING
    await Worker(queue, tasks=[beat, boom], handle_signals=False).run(burst=True)
    infos = {i.name: i for i in await queue.schedules.list()}
    assert infos["ok"].last_state is JobState.COMPLETED and infos["ok"].runs == 1
    assert infos["bad"].last_state is JobState.FAILED
    assert infos["bad"].last_error is not None and "kaputt" in infos["bad"].last_error
    for i in infos.values():
        assert i.next_run_at is not None and i.next_run_at.timestamp() * 1000 > now
        assert i.last_tick_at is not None


async def test_run_now_leaves_the_ticks_alone(queue: Queue) -> None:
    await queue.schedules.upsert(Schedule("p", beat, every_s=3600, args=(3,)))
    before = await state(queue, "p")
    job = await queue.schedules.run_now("p")
    assert job.id.startswith("sched:p:now:")
    info = await job.info()
    assert info.task == "beat" and info.args == [3] and info.state is JobState.WAITING
    assert await state(queue, "p") == before
    second = await queue.schedules.run_now("p")
    assert second.id != job.id


async def test_run_limit_ends_the_schedule(queue: Queue) -> None:
    await queue.schedules.upsert(Schedule("twice", beat, every_s=1, max_runs=2,
                                          catch_up=CatchUp.ALL))
    now = await redis_ms(queue)
    await make_due(queue, "twice", now - now % 1000 - 5000)
    fired, _ = await queue.schedules.advance()
    assert fired == 2
    info = await queue.schedules.get("twice")
    assert info is not None and info.runs == 2 and info.next_run_at is None
    assert len(await tick_jobs(queue, "twice")) == 2
    assert await queue.schedules.upsert(Schedule("twice", beat, every_s=1, max_runs=2,
                                                 catch_up=CatchUp.ALL)) is Upserted.UNCHANGED
    assert (await queue.schedules.advance())[0] == 0


# ------------------------------------------------------------------- catch-up

@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [(CatchUp.ONCE, [9]), (CatchUp.SKIP, []), (CatchUp.ALL, [5, 6, 7, 8, 9])],
)
async def test_missed_ticks_after_downtime(queue: Queue, catch_up: CatchUp,
                                           expected: list[int]) -> None:
    s = Schedule("m", beat, every_s=60, catch_up=catch_up, grace_s=1)
    await queue.schedules.upsert(s)
    now = await redis_ms(queue)
    base = now - now % 60_000 - 9 * 60_000  # ticks base+5m .. base+9m are due; base+9m is
    await make_due(queue, "m", base + 5 * 60_000)  # older than the 1 s grace unless now is
    if catch_up is CatchUp.SKIP and now - (base + 9 * 60_000) <= 1000:
        pytest.skip("the latest tick is within the grace period right now")
    fired, _ = await queue.schedules.advance()
    jobs = await tick_jobs(queue, "m")
    assert [(t - base) // 60_000 for t in jobs] == expected
    assert fired == len(expected)
    st = await state(queue, "m")
    assert int(st["tick"]) == base + 10 * 60_000 and int(st["last_tick"]) == base + 9 * 60_000


async def test_all_policy_caps_the_flood(queue: Queue) -> None:
    await queue.schedules.upsert(Schedule("cap", beat, every_s=1, catch_up="all",
                                          catch_up_cap=10))
    now = await redis_ms(queue)
    await make_due(queue, "cap", now - now % 1000 - 500_000)
    fired, _ = await queue.schedules.advance()
    jobs = await tick_jobs(queue, "cap")
    assert fired == len(jobs) == 10
    assert jobs == list(range(jobs[0], jobs[0] + 10_000, 1000))  # the latest ten, in order
    assert now - jobs[-1] < 2000


async def test_jitter_delays_each_tick_within_bounds(queue: Queue) -> None:
    s = Schedule("j", beat, every_s=3600, jitter_s=600)
    await queue.schedules.upsert(s)
    info = await queue.schedules.get("j")
    assert info is not None and info.next_tick_at is not None and info.next_run_at is not None
    delay = (info.next_run_at - info.next_tick_at).total_seconds()
    tick = round(info.next_tick_at.timestamp() * 1000)
    assert 0 <= delay <= 600 and delay * 1000 == pytest.approx(jitter_ms(s.definition, tick))


# -------------------------------------------------------------- worker integration

async def test_worker_runs_declared_schedules(queue: Queue) -> None:
    ran: list[int] = []

    @task(name="tick")
    async def tick(n: int) -> None:
        ran.append(n)

    s = Schedule("fast", tick, every_s=0.05, args=(1,))
    async with running(Worker(queue, tasks=[tick], schedules=[s], handle_signals=False,
                              schedule_verify_s=0.2)):
        await wait_until(lambda: len(ran) >= 5, timeout=10)
    info = await queue.schedules.get("fast")
    assert info is not None and info.runs >= 5 and info.last_state is not None


async def test_any_worker_fires_schedules_a_producer_declared(queue: Queue) -> None:
    ran: list[int] = []

    @task(name="tick")
    async def tick(n: int) -> None:
        ran.append(n)

    keeper_only = Schedule("anchor", tick, every_s=3600, args=(0,))
    worker = Worker(queue, tasks=[tick], schedules=[keeper_only], handle_signals=False)
    async with running(worker):
        await queue.schedules.upsert(Schedule("runtime", "tick", every_s=0.05, args=(9,)))
        await wait_until(lambda: ran.count(9) >= 3, timeout=10)


async def test_schedules_come_back_after_flushall(
    queue: Queue, client: aioredis.Redis, caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[int] = []

    @task(name="tick")
    async def tick(n: int) -> None:
        ran.append(n)

    s = Schedule("survivor", tick, every_s=0.05, args=(1,))
    caplog.set_level(logging.INFO, logger="aiojobs_redis")
    async with running(Worker(queue, tasks=[tick], schedules=[s], handle_signals=False,
                              schedule_verify_s=0.2)):
        await wait_until(lambda: len(ran) >= 2, timeout=10)
        await client.flushall()
        assert await client.exists(queue.keys.sched_prefix + "survivor") == 0
        loop = asyncio.get_running_loop()
        flushed_at = loop.time()
        await wait_until(lambda: client.exists(queue.keys.sched_prefix + "survivor"), timeout=5)
        back_after = loop.time() - flushed_at
        count = len(ran)
        await wait_until(lambda: len(ran) >= count + 3, timeout=10)  # and it fires again
        # the sentinel is read at each verification: a flush that lands between one's
        # sentinel check and its upsert is noticed one period later
        await wait_until(lambda: "QUEUE KEYS VANISHED: FLUSHALL?" in caplog.text, timeout=5)
    assert back_after < 0.2 + 1.2  # one verification period, plus one poll at most
    assert "SCHEDULE WAS MISSING" in caplog.text and "survivor" in caplog.text


async def test_partial_deletions_are_repaired(
    queue: Queue, caplog: pytest.LogCaptureFixture,
) -> None:
    s = Schedule("fragile", beat, every_s=3600)
    caplog.set_level(logging.WARNING, logger="aiojobs_redis")
    worker = Worker(queue, tasks=[beat], schedules=[s], handle_signals=False,
                    schedule_verify_s=0.1)
    async with running(worker):
        await wait_until(lambda: queue.client.exists(queue.keys.sched_prefix + "fragile"))
        await queue.client.zrem(queue.keys.schedules, "fragile")  # the index entry only
        await wait_until(lambda: queue.client.zscore(queue.keys.schedules, "fragile"), timeout=5)
        assert "lost its entry" in caplog.text
        await queue.client.delete(queue.keys.sched_prefix + "fragile")  # the hash only
        await wait_until(lambda: queue.client.exists(queue.keys.sched_prefix + "fragile"),
                         timeout=5)
        assert "SCHEDULE WAS MISSING" in caplog.text
        await queue.client.set(queue.keys.alive, "someone-else")  # wiped and re-created
        await wait_until(lambda: "re-created by another process" in caplog.text, timeout=5)


async def test_worker_refuses_a_schedule_for_a_queue_it_does_not_serve(queue: Queue) -> None:
    s = Schedule("x", beat, every_s=1, queue="other-queue")
    with pytest.raises(ConfigurationError, match="does not serve"):
        await Worker(queue, tasks=[beat], schedules=[s], handle_signals=False).run()


async def test_tick_jobs_have_the_same_record_as_enqueued_jobs(queue: Queue) -> None:
    """fire_schedule writes the job hash itself (atomically with the advance): it must
    stay field for field what add_jobs writes."""
    opts = JobOptions(attempts=2, priority=3)
    await queue.schedules.upsert(Schedule("twin", beat, every_s=60, args=(4,), options=opts))
    now = await redis_ms(queue)
    tick = now - now % 60_000
    await make_due(queue, "twin", tick)
    await queue.schedules.advance()
    enqueued = await queue.enqueue("beat", 4, options=JobOptions(attempts=2, priority=3))
    raw_a: dict[Any, Any] = await queue.client.hgetall(queue.keys.job(tick_job_id("twin", tick)))
    raw_b: dict[Any, Any] = await queue.client.hgetall(queue.keys.job(enqueued.id))
    a = {k.decode(): v for k, v in raw_a.items() if k not in (b"created", b"ready")}
    b = {k.decode(): v for k, v in raw_b.items() if k not in (b"created", b"ready")}
    assert a == b


async def test_rolling_deploy_with_two_definitions_warns_once_per_worker(
        queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    """Two workers declare one schedule differently (old and new code during a deploy):
    each replaces the other's definition at every verification; the warning is said
    once per worker, the replacements go on at debug level."""
    old = Schedule("report", beat, every_s=3600, args=(1,))
    new = Schedule("report", beat, every_s=3600, args=(2,))
    caplog.set_level(logging.DEBUG, logger="aiojobs_redis.schedules")

    def said(text: str) -> int:
        return sum(1 for r in caplog.records if text in r.getMessage())

    async with running(Worker(queue, tasks=[beat], schedules=[old], schedule_verify_s=0.02,
                              handle_signals=False)), \
            running(Worker(queue, tasks=[beat], schedules=[new], schedule_verify_s=0.02,
                           handle_signals=False)):
        await wait_until(lambda: said("replaced again") >= 10, timeout=20)
    assert said("differed from this worker's declaration") <= 2
