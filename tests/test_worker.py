"""The worker against a real Redis: concurrency, order, delays, retries, poison jobs,
retention, fencing, shutdown. Tests wait on events and results, not on time."""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from aiojobs_redis import (
    FixedBackoff,
    JobFailed,
    JobState,
    Queue,
    Retention,
    Task,
    Worker,
    WorkerContext,
    WorkerState,
    current_job,
    task,
)

from .conftest import hang, wait_until


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run a worker in the background for the block, then stop it gracefully."""
    runner = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 30)


# ----------------------------------------------------------------- tasks

@task(name="echo")
async def echo(value: Any) -> Any:
    return value


@task(name="mul")
def mul(a: int, b: int) -> int:  # sync: runs in a thread
    assert threading.current_thread() is not threading.main_thread()
    return a * b


class Gauge:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def hold(self, seconds: float) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.now -= 1


# ------------------------------------------------------------------ tests

async def test_results_sync_and_async(queue: Queue) -> None:
    async with running(Worker(queue, tasks=[echo, mul], concurrency=4)):
        a = await queue.enqueue(echo, {"x": [1, 2]})
        b = await queue.enqueue(mul, 6, 7)
        assert await a.result(timeout=10) == {"x": [1, 2]}
        assert await b.result(timeout=10) == 42
    info = await b.info()
    assert info.state is JobState.COMPLETED and info.attempts == 1
    assert info.started_at and info.finished_at and info.created_at
    assert info.created_at <= info.started_at <= info.finished_at


async def test_concurrency_is_never_exceeded(queue: Queue) -> None:
    gauge = Gauge()

    @task(name="hold")
    async def hold() -> None:
        await gauge.hold(0.02)

    async with running(Worker(queue, tasks=[hold], concurrency=5)):
        jobs = await queue.enqueue_many([hold.call() for _ in range(60)])
        for job in jobs:
            await job.result(timeout=20)
    assert gauge.peak == 5


async def test_priority_then_fifo(queue: Queue) -> None:
    order: list[str] = []

    @task(name="record")
    async def record(tag: str) -> None:
        order.append(tag)

    await queue.pause()
    for tag, priority in [("a", 0), ("b", 0), ("urgent", 10), ("c", 0), ("late", -10)]:
        await queue.enqueue(record.options(priority=priority), tag)
    async with running(Worker(queue, tasks=[record], concurrency=1)):
        await queue.resume()
        await wait_until(lambda: len(order) == 5)
    assert order == ["urgent", "a", "b", "c", "late"]


async def test_delay_is_honoured_by_redis_clock(queue: Queue) -> None:
    async with running(Worker(queue, tasks=[echo], concurrency=2)):
        job = await queue.enqueue(echo.options(delay_s=0.3), 1)
        assert (await job.info()).state is JobState.DELAYED
        assert await job.result(timeout=10) == 1
    info = await job.info()
    assert info.started_at and info.created_at
    assert (info.started_at - info.created_at).total_seconds() >= 0.3


async def test_an_idle_worker_wakes_on_time_whatever_the_server_tick(queue: Queue) -> None:
    """An idle Redis ends a blocking timeout only on its server tick (hz: every 100 ms by
    default, every second at hz 1): the worker's timed wake-up must not wait for it."""
    hz = str((await queue.client.config_get("hz"))["hz"])
    await queue.client.config_set("hz", 1)
    try:
        async with running(Worker(queue, tasks=[echo], concurrency=2)):
            late = []
            for _ in range(3):
                job = await queue.enqueue(echo.options(delay_s=0.3), 1)
                assert await job.result(timeout=10) == 1
                info = await job.info()
                assert info.started_at and info.created_at
                late.append((info.started_at - info.created_at).total_seconds() - 0.3)
    finally:
        await queue.client.config_set("hz", hz)
    print(f"\nstarted this late after the due time, at hz 1: {late}")
    assert all(0 <= s < 0.2 for s in late), late


async def test_retries_follow_the_backoff(queue: Queue) -> None:
    starts: list[float] = []

    @task(name="flaky", attempts=3, backoff=FixedBackoff(delay_s=0.2))
    async def flaky() -> str:
        starts.append(time.monotonic())
        if current_job().attempt < 3:
            raise ConnectionError("database went away")
        return "ok"

    async with running(Worker(queue, tasks=[flaky])):
        job = await queue.enqueue(flaky)
        assert await job.result(timeout=10) == "ok"
    assert len(starts) == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 0.2 for g in gaps), gaps
    info = await job.info()
    assert info.attempts == 3 and info.error and "database went away" in info.error


async def test_callable_backoff(queue: Queue) -> None:
    seen: list[int] = []

    def backoff(attempt: int) -> float:
        seen.append(attempt)
        return 0.0

    @task(name="twice", attempts=2, backoff=backoff)
    async def twice() -> int:
        if current_job().attempt == 1:
            raise RuntimeError("first")
        return 2

    async with running(Worker(queue, tasks=[twice])):
        assert await (await queue.enqueue(twice)).result(timeout=10) == 2
    assert seen == [1]


class Fatal(BaseException):
    pass


@task(name="poison_exit", attempts=2, backoff=FixedBackoff(delay_s=0))
async def poison_exit() -> None:
    sys.exit(3)


@task(name="poison_interrupt")
async def poison_interrupt() -> None:
    raise KeyboardInterrupt


@task(name="poison_base")
async def poison_base() -> None:
    raise Fatal("custom BaseException")


@task(name="poison_sync_exit")
def poison_sync_exit() -> None:
    raise SystemExit("from a thread")


@task(name="poison_hang", timeout_s=0.2)
async def poison_hang() -> None:
    await hang()


@task(name="poison_result")
async def poison_result() -> object:
    return object()


@task(name="integrity")
async def integrity() -> None:
    class IntegrityError(Exception):
        pass

    raise IntegrityError('insert violates foreign key constraint "timeline_workflow_fk"')


async def test_poison_jobs_fail_and_good_jobs_keep_flowing(queue: Queue) -> None:
    poison: list[Task[[], Any]] = [poison_exit, poison_interrupt, poison_base, poison_sync_exit,
                                   poison_hang, poison_result, integrity]
    worker = Worker(queue, tasks=[echo, *poison], concurrency=8)
    async with running(worker):
        bad = [await queue.enqueue(t) for t in poison]
        bad.append(await queue.enqueue("no_such_task", 1))
        good = await queue.enqueue_many([echo.call(i) for i in range(200)])
        assert [await j.result(timeout=20) for j in good] == list(range(200))
        errors = {}
        for job in bad:
            with pytest.raises(JobFailed) as failed:
                await job.result(timeout=20)
            errors[(await job.info()).task] = failed.value.error
    assert errors["poison_exit"].startswith("SystemExit: 3")
    assert (await bad[0].info()).attempts == 2
    assert errors["poison_interrupt"] == "KeyboardInterrupt"
    assert errors["poison_base"] == "Fatal: custom BaseException"
    assert errors["poison_sync_exit"] == "SystemExit: from a thread"
    assert errors["poison_hang"].startswith("Timeout: the handler ran longer than its timeout")
    assert errors["poison_result"].startswith("EncodeError")
    assert "foreign key" in errors["integrity"]
    assert errors["no_such_task"].startswith("TaskNotFound")
    info = await bad[-1].info()
    assert info.attempts == 1, "a task this worker lacks is not retried blindly"
    assert worker.processed == 200 and worker.failed == len(bad)


async def test_traceback_text_is_kept(queue: Queue) -> None:
    async with running(Worker(queue, tasks=[integrity])):
        job = await queue.enqueue(integrity)
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=10)
    assert failed.value.traceback and "IntegrityError" in failed.value.traceback
    assert "raise IntegrityError" in failed.value.traceback


async def test_undecodable_payload_and_bad_arguments(queue: Queue) -> None:
    corrupt = await queue.enqueue(echo, 1)
    await queue.client.hset(queue.keys.job(corrupt.id), "payload", b"\xc1\xff garbage")
    wrong = await queue.enqueue("echo", 1, 2, 3)  # by name: checked by the worker
    async with running(Worker(queue, tasks=[echo])):
        with pytest.raises(JobFailed, match="DecodeError"):
            await corrupt.result(timeout=10)
        with pytest.raises(JobFailed, match="arguments do not fit"):
            await wrong.result(timeout=10)
        ok = await queue.enqueue(echo, "still fine")
        assert await ok.result(timeout=10) == "still fine"
    info = await corrupt.info()
    assert info.payload_error is not None and info.args is None


async def test_retention_bounds_finished_jobs(client: Any, queue_name: str) -> None:
    q = Queue(client, name=queue_name, retention=Retention(completed_count=10, failed_count=3))
    try:
        async with running(Worker(q, tasks=[echo, integrity], concurrency=10)):
            jobs = await q.enqueue_many([echo.call(i) for i in range(100)])
            bad = await q.enqueue_many([integrity.call() for _ in range(10)])
            await wait_until(lambda: _finished(q, 110), timeout=20)
        counts = await q.counts()
        assert counts[JobState.COMPLETED] == 10 and counts[JobState.FAILED] == 3
        kept = [j for j in jobs if await q.job_info(j.id) is not None]
        assert len(kept) == 10, "the trimmed jobs' hashes are gone"
        assert sum([await q.job_info(j.id) is not None for j in bad]) == 3
        keys = [k async for k in client.scan_iter(match=f"ajr:{{{queue_name}}}:job:*")]
        assert len(keys) == 13
    finally:
        await q.obliterate(force=True)
        await q.close()


async def _finished(q: Queue, n: int) -> bool:
    # finished jobs counted from the events stream (retention trims the sets)
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await q.client.xrange(  # type: ignore[assignment]
        q.keys.events, count=100_000
    )
    done = sum(1 for _, f in entries if f[b"e"] in (b"completed", b"failed"))
    return done >= n


async def test_retention_age_and_zero_count(client: Any, queue_name: str) -> None:
    q = Queue(client, name=queue_name,
              retention=Retention(completed_count=0, failed_age_s=0.05, failed_count=None))
    try:
        async with running(Worker(q, tasks=[echo, integrity])):
            job = await q.enqueue(echo, 1)
            await wait_until(lambda: _finished(q, 1))
            assert await q.job_info(job.id) is None, "count 0: deleted at once"
            old = await q.enqueue(integrity)
            await wait_until(lambda: _finished(q, 2))
            assert await q.job_info(old.id) is not None
            await asyncio.sleep(0.06)  # let the first failure age past 50 ms
            await q.enqueue(integrity)
            await wait_until(lambda: _finished(q, 3))
            assert await q.job_info(old.id) is None, "older than the age: trimmed"
    finally:
        await q.obliterate(force=True)
        await q.close()


async def test_progress_and_context(queue: Queue) -> None:
    seen: dict[str, Any] = {}

    @task(name="reporting")
    async def reporting() -> None:
        ctx = current_job()
        seen.update(id=ctx.id, attempt=ctx.attempt, pool=ctx.worker.state["pool"])
        await ctx.progress({"done": 3, "of": 10})

    async def startup(ctx: WorkerContext) -> None:
        ctx.state["pool"] = "db-pool"

    closed = asyncio.Event()

    def shutdown(ctx: WorkerContext) -> None:
        assert ctx.state["pool"] == "db-pool"
        closed.set()

    async with running(Worker(queue, tasks=[reporting], on_startup=[startup],
                              on_shutdown=[shutdown])):
        events = queue.events(since="0")
        job = await queue.enqueue(reporting)
        await job.result(timeout=10)
        kinds = []
        async for event in events:
            if event.job_id == job.id:
                kinds.append(event.event)
            if event.event == "completed":
                break
        await events.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()
    assert seen == {"id": job.id, "attempt": 1, "pool": "db-pool"}
    assert (await job.info()).progress == {"done": 3, "of": 10}
    assert kinds == ["added", "active", "progress", "completed"]


async def test_graceful_shutdown_hands_unfinished_jobs_back(queue: Queue) -> None:
    started = asyncio.Event()

    @task(name="slow")
    async def slow() -> None:
        started.set()
        await hang()

    worker = Worker(queue, tasks=[slow], shutdown_timeout_s=0.1)
    runner = asyncio.create_task(worker.run())
    job = await queue.enqueue(slow)
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    await asyncio.wait_for(runner, 10)
    info = await job.info()
    assert info.state is JobState.WAITING and info.attempts == 0
    assert (await queue.counts())[JobState.ACTIVE] == 0


async def test_lost_lease_cancels_the_handler_and_drops_its_outcome(queue: Queue) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @task(name="victim")
    async def victim() -> str:
        started.set()
        try:
            await hang()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async with running(Worker(queue, tasks=[victim], lease_ms=1000)):
        job = await queue.enqueue(victim)
        await asyncio.wait_for(started.wait(), 10)
        # another worker took the job over: its token replaced ours
        await queue.client.hset(queue.keys.job(job.id), "token", "someone-else")
        await asyncio.wait_for(cancelled.wait(), 5)
        await queue.client.hset(queue.keys.job(job.id), "token", "")
    info = await job.info()
    assert info.state is JobState.ACTIVE, "the usurper's record is left alone"


async def test_several_queues_one_worker(client: Any, queue_name: str) -> None:
    a = Queue(client, name=queue_name + "-a")
    b = Queue(client, name=queue_name + "-b")
    try:
        async with running(Worker([a, b], tasks=[echo], concurrency=3)):
            ja = await a.enqueue(echo, "a")
            jb = await b.enqueue(echo, "b")
            assert (await ja.result(timeout=10), await jb.result(timeout=10)) == ("a", "b")
    finally:
        for q in (a, b):
            await q.obliterate(force=True)
            await q.close()


async def test_burst_mode_runs_everything_including_retries(queue: Queue) -> None:
    @task(name="once_bad", attempts=2, backoff=FixedBackoff(delay_s=0.05))
    async def once_bad(i: int) -> int:
        if current_job().attempt == 1 and i % 2:
            raise ValueError(i)
        return i

    jobs = await queue.enqueue_many([once_bad.call(i) for i in range(50)])
    worker = Worker(queue, tasks=[once_bad], concurrency=10)
    await asyncio.wait_for(worker.run(burst=True), 30)
    counts = await queue.counts()
    assert counts[JobState.COMPLETED] == 50 and counts[JobState.DELAYED] == 0
    assert [await j.result(timeout=1) for j in jobs] == list(range(50))


async def test_worker_misuse_is_loud(queue: Queue) -> None:
    from aiojobs_redis import ConfigurationError

    bad: list[Callable[[], object]] = [
        lambda: Worker(queue, tasks=[]),
        lambda: Worker(queue, tasks=[lambda: None]),  # type: ignore[list-item]
        lambda: Worker(queue, tasks=[echo], concurrency=0),
        lambda: Worker(queue, tasks=[echo], lease_ms=10),
        lambda: Worker([queue, queue], tasks=[echo]),
    ]
    for make in bad:
        with pytest.raises(ConfigurationError):
            make()
    worker = Worker(queue, tasks=[echo])
    await asyncio.wait_for(worker.run(burst=True), 10)
    with pytest.raises(ConfigurationError):
        await worker.run()


async def test_a_busy_queue_does_not_starve_another(client: Any, queue_name: str) -> None:
    gauge = {"a": 0, "b": 0, "peak_b": 0}
    release = asyncio.Event()

    @task(name="hold_a")
    async def hold_a() -> None:
        gauge["a"] += 1
        await release.wait()

    @task(name="hold_b")
    async def hold_b() -> None:
        gauge["b"] += 1
        gauge["peak_b"] = max(gauge["peak_b"], gauge["b"])
        await release.wait()

    a = Queue(client, name=queue_name + "-a")
    b = Queue(client, name=queue_name + "-b")
    try:
        await a.enqueue_many([hold_a.call() for _ in range(40)])
        async with running(Worker([a, b], tasks=[hold_a, hold_b], concurrency=10)):
            await wait_until(lambda: gauge["a"] == 10)
            await b.enqueue_many([hold_b.call() for _ in range(40)])
            release.set()  # a's jobs finish; b gets its share of the slots
            await wait_until(lambda: gauge["peak_b"] >= 5)
    finally:
        for q in (a, b):
            await q.obliterate(force=True)
            await q.close()


async def test_blocking_sync_handler_keeps_its_lease(queue: Queue) -> None:
    """A sync handler blocking (in its thread) for longer than the lease: the event loop
    keeps renewing, so no false stall and no second run."""
    runs: list[int] = []

    @task(name="slow_sync")
    def slow_sync() -> str:
        runs.append(1)
        time.sleep(2.5)  # 2.5 leases
        return "done"

    async with running(Worker(queue, tasks=[slow_sync], lease_ms=1000)):
        job = await queue.enqueue(slow_sync)
        assert await job.result(timeout=20) == "done"
    info = await job.info()
    assert runs == [1] and info.stalls == 0 and info.attempts == 1


@task(name="hold_forever")
async def hold_forever() -> None:
    await asyncio.Event().wait()


async def test_lost_leases_are_logged_once_per_episode(
        queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    """50 jobs losing their lease at once make one log line, not 50."""
    await queue.enqueue_many([hold_forever.call() for _ in range(50)])
    worker = Worker(queue, tasks=[hold_forever], concurrency=50, handle_signals=False)
    async with running(worker):
        await wait_until(lambda: worker.running_count() == 50, timeout=20)
        [lane] = worker.lanes
        with caplog.at_level("WARNING", logger="aiojobs_redis.worker"):
            lane.mark_lost(list(lane.running))
        await wait_until(lambda: worker.running_count() == 0, timeout=20)
    lines = [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]
    assert len(lines) == 1 and "50 running job(s)" in lines[0], lines


async def test_a_failing_startup_hook_skips_the_shutdown_hooks(queue: Queue) -> None:
    """The startup hook's error reaches the caller; on_shutdown (which would undo what
    startup did, and fail on what is not there) does not run after it."""
    ran: list[str] = []

    def startup(ctx: object) -> None:
        raise RuntimeError("database unreachable")

    def shutdown(ctx: object) -> None:
        ran.append("shutdown")
        raise KeyError("pool")

    worker = Worker(queue, tasks=[hold_forever], on_startup=[startup], on_shutdown=[shutdown],
                    handle_signals=False)
    with pytest.raises(RuntimeError, match="database unreachable"):
        await worker.run()
    assert ran == []


async def test_jobs_cancelled_before_their_first_step_free_their_slots(queue: Queue) -> None:
    """A lease lost (or a cancel, or a shutdown) right after a fetch cancels job tasks that
    have not run a step yet: their cleanup must still run, or their slots leak for good."""
    from aiojobs_redis import JobOptions, codec
    from aiojobs_redis.worker.execution import FetchedJob

    worker = Worker(queue, tasks=[hold_forever], concurrency=5, handle_signals=False)
    async with running(worker):
        await wait_until(lambda: worker.state is WorkerState.RUNNING, timeout=10)
        [lane] = worker.lanes
        # idle: its first fetch came back empty and gave back the slots it had reserved
        await wait_until(lambda: lane.idle and worker.free_slots() == 5, timeout=10)
        free = worker.free_slots()
        assert worker.reserve(lane, 1) == 1  # as a fetch does for the job it takes
        lane._start(FetchedJob(b"ghost", b"token", b"hold_forever",
                               codec.encode_args("hold_forever", (), {}),
                               codec.encode_options(JobOptions()), 1, 1, 0))
        lane.mark_lost(["ghost"])  # in the same step: its task has not started
        await wait_until(lambda: "ghost" not in lane.running, timeout=5)
        assert worker.free_slots() == free
