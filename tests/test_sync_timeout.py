"""A sync handler past its timeout: a thread cannot be killed, so the worker keeps the
job's slot (and lease) until the thread has really ended, sets the cooperative flag
``current_job().cancelled``, and shows the abandoned thread (log lines and
``Worker.abandoned_threads``). No attempt of a job starts on a worker while an earlier
attempt's thread still runs there.

Facts, not timing: handler threads are counted under a lock (how many at once, and
the most ever seen) and each attempt's start and end are recorded; handlers block on
``threading.Event`` waits, which a test ends by setting the event.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from aiojobs_redis import FixedBackoff, JobFailed, JobState, Queue, Worker, current_job, task
from aiojobs_redis.ops.registry import live_workers

from .conftest import wait_until
from .test_worker import running

LOGGER = "aiojobs_redis.worker"


class Span:
    __slots__ = ("attempt", "end", "saw_cancelled", "start")

    def __init__(self, attempt: int, start: float) -> None:
        self.attempt = attempt
        self.start = start
        self.end: float | None = None  # None: still running
        self.saw_cancelled: bool | None = None  # the flag, as the handler saw it at its end


class Threads:
    """Handler threads, counted under a lock: how many run now, the most seen at once,
    and the span of every attempt of every job."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.spans: dict[str, list[Span]] = {}

    @contextmanager
    def handler(self) -> Iterator[Span]:
        ctx = current_job()
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
            span = Span(ctx.attempt, time.monotonic())
            self.spans.setdefault(ctx.id, []).append(span)
        try:
            yield span
        finally:
            # getattr: the flag is what is under test; its absence must fail an assertion,
            # not the handler
            span.saw_cancelled = getattr(ctx, "cancelled", None)
            with self.lock:
                self.now -= 1
                span.end = time.monotonic()

    def started(self) -> int:
        with self.lock:
            return sum(len(spans) for spans in self.spans.values())

    def overlapping(self) -> list[str]:
        """Jobs two of whose attempts ran at the same time."""
        with self.lock:
            bad = []
            for job_id, spans in self.spans.items():
                ordered = sorted(spans, key=lambda s: s.start)
                for a, b in itertools.pairwise(ordered):
                    if a.end is None or b.start < a.end:
                        bad.append(job_id)
            return bad


def warnings_with(caplog: pytest.LogCaptureFixture, *parts: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING
            and all(p in r.getMessage() for p in parts)]


async def test_a_timed_out_thread_keeps_its_slot_and_attempts_never_overlap(
        queue: Queue) -> None:
    """concurrency=2; each handler ignores the flag and blocks 0.4 s past a 0.1 s timeout.

    Before the fix the slot was freed when the timeout fired and the retry (no backoff)
    started beside the thread still running: more than 2 handler threads at once, and
    attempts of one job overlapping."""
    threads = Threads()
    never = threading.Event()  # never set: each wait runs its full 0.4 s

    @task(name="stubborn", timeout_s=0.1, attempts=2, backoff=FixedBackoff(delay_s=0))
    def stubborn(n: int) -> int:
        with threads.handler():
            never.wait(0.4)  # ignores current_job().cancelled on purpose
        return n

    worker = Worker(queue, tasks=[stubborn], concurrency=2, handle_signals=False)
    jobs = await queue.enqueue_many([stubborn.call(i) for i in range(3)])
    await asyncio.wait_for(worker.run(burst=True), 30)

    assert threads.most <= 2, f"{threads.most} handler threads ran at once with concurrency=2"
    assert threads.most == 2
    assert threads.overlapping() == [], "attempts of one job ran at the same time"
    for job in jobs:
        spans = threads.spans[job.id]
        assert [s.attempt for s in spans] == [1, 2]
        for s in spans:
            assert s.end is not None and s.end - s.start >= 0.39  # never cut short
            assert s.saw_cancelled is True, "the timeout set current_job().cancelled"
        info = await job.info()
        assert info.state is JobState.FAILED and info.attempts == 2
        assert info.error is not None
        assert info.error.startswith("Timeout: the handler ran longer than its timeout of 0.1 s")
    assert worker.abandoned_threads == 0
    assert worker.failed == 3


async def test_a_handler_that_checks_the_flag_stops_early(queue: Queue) -> None:
    """The flag is set when the timeout fires: a handler waiting on it (up to 30 s) or
    polling it returns within moments of its 0.2 s timeout."""
    threads = Threads()
    stopped_after: dict[str, float] = {}

    @task(name="waits_on_flag", timeout_s=0.2)
    def waits_on_flag() -> str:
        with threads.handler() as span:
            cancelled = current_job().cancel_event.wait(30)
            stopped_after["wait"] = time.monotonic() - span.start
        return "finished" if not cancelled else "stopped"

    @task(name="polls_flag", timeout_s=0.2)
    def polls_flag() -> str:
        pause = threading.Event()
        with threads.handler() as span:
            for _ in range(3000):  # at most 30 s
                if current_job().cancelled:
                    break
                pause.wait(0.01)
            stopped_after["poll"] = time.monotonic() - span.start
        return "finished"

    worker = Worker(queue, tasks=[waits_on_flag, polls_flag], concurrency=2,
                    handle_signals=False)
    jobs = [await queue.enqueue(waits_on_flag), await queue.enqueue(polls_flag)]
    await asyncio.wait_for(worker.run(burst=True), 30)

    assert set(stopped_after) == {"wait", "poll"}
    for how, after in stopped_after.items():
        assert after < 5, f"{how}: stopped {after:.3f} s after it started, not at once"
    for job in jobs:
        with pytest.raises(JobFailed) as failed:
            await job.result(timeout=5)
        assert failed.value.error.startswith("Timeout: the handler ran longer than its timeout")
    assert all(s.saw_cancelled for spans in threads.spans.values() for s in spans)
    assert threads.most == 2 and worker.abandoned_threads == 0


async def test_the_abandoned_thread_is_visible_and_the_retry_waits_for_it(
        queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    """While the thread of a timed-out attempt runs: one warning names the task, the job
    and the timeout; ``worker.abandoned_threads`` is 1; the job keeps its slot and is
    still active, with no second attempt. When the thread ends: a second warning says
    how long it overran, the count is 0, and only then does the retry start."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    threads = Threads()
    gate = threading.Event()

    @task(name="stuck_once", timeout_s=0.1, attempts=2, backoff=FixedBackoff(delay_s=0))
    def stuck_once() -> str:
        with threads.handler() as span:
            if span.attempt == 1:
                gate.wait(30)  # ignores the flag; the test sets the gate
        return f"ok on attempt {span.attempt}"

    # a short lease: its heartbeat (every lease/3) shows the count soon
    worker = Worker(queue, tasks=[stuck_once], concurrency=1, handle_signals=False,
                    lease_ms=1500)
    async with running(worker):
        try:
            job = await queue.enqueue(stuck_once)
            await wait_until(lambda: worker.abandoned_threads == 1)
            abandoned = warnings_with(caplog, "stuck_once", job.id, "timeout of 0.1 s")
            assert len(abandoned) == 1, abandoned
            assert "holding its slot" in abandoned[0]
            assert worker.free_slots() == 0 and worker.running_count() == 1
            info = await job.info()
            assert info.state is JobState.ACTIVE and info.attempts == 1
            assert threads.started() == 1 and threads.now == 1
            # operators see it too: the heartbeat record (`aiojobs-redis workers`: stuck)
            async def recorded() -> bool:
                return [w.abandoned_threads for w in
                        await live_workers(queue.client, queue.keys)] == [1]
            await wait_until(recorded, timeout=5)

            gate.set()
            assert await job.result(timeout=10) == "ok on attempt 2"
            assert worker.abandoned_threads == 0
            ended = warnings_with(caplog, "stuck_once", job.id, "abandoned thread has ended")
            assert len(ended) == 1, ended
            assert "past its timeout of 0.1 s" in ended[0]
        finally:
            gate.set()  # before the worker's graceful stop waits for the thread
    first, second = threads.spans[job.id]
    assert first.end is not None and second.start >= first.end
    assert first.saw_cancelled is True and second.saw_cancelled is False
    info = await job.info()
    assert info.error is not None and info.error.startswith("Timeout:")  # kept from attempt 1


async def test_an_attempt_waits_for_the_thread_of_a_cancelled_one(
        queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    """The worker cancels a sync job (here: its lease is lost) while the thread runs: the
    thread is abandoned and flagged. The job is recovered after its lease and fetched by
    this worker again; that attempt waits for the old thread before it starts."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    threads = Threads()
    gate = threading.Event()

    @task(name="lost_once")
    def lost_once() -> int:
        with threads.handler() as span:
            if threads.started() == 1:
                gate.wait(30)  # ignores the flag; the test sets the gate
        return span.attempt

    worker = Worker(queue, tasks=[lost_once], concurrency=1, lease_ms=1000,
                    stalled_check_s=0.1, handle_signals=False)
    async with running(worker):
        try:
            job = await queue.enqueue(lost_once)
            await wait_until(lambda: threads.started() == 1)
            worker.lanes[0].mark_lost([job.id])  # what lease renewal does on a lost lease
            await wait_until(lambda: worker.abandoned_threads == 1)
            assert warnings_with(caplog, "lost_once", job.id, "cancelled by the worker")
            # the lease runs out, the job is recovered and fetched here again
            await wait_until(lambda: warnings_with(caplog, "lost_once", job.id,
                                                   "waits for the thread of an earlier"))
            assert threads.started() == 1 and threads.now == 1
            # operators see it too: the heartbeat record (`aiojobs-redis workers`: stuck)
            async def recorded() -> bool:
                return [w.abandoned_threads for w in
                        await live_workers(queue.client, queue.keys)] == [1]
            await wait_until(recorded, timeout=5)

            gate.set()
            await job.result(timeout=10)
            assert worker.abandoned_threads == 0
        finally:
            gate.set()  # before the worker's graceful stop waits for the thread
    assert threads.overlapping() == []
    first, second = threads.spans[job.id]
    assert first.saw_cancelled is True and second.saw_cancelled is False
    assert threads.most == 1

