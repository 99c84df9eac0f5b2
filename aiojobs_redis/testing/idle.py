"""run_until_idle: a real :class:`~aiojobs_redis.Worker` run on a queue until no job is
waiting or active, and what it did (:class:`IdleResult`, one :class:`Attempt` per attempt
run, :class:`IdleTimeout` naming the jobs left when the queue is not idle in time). The
public names are imported from :mod:`aiojobs_redis.testing`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

from .._tasks import honour_cancellation
from ..errors import JobNotFound, JobStateError
from ..producer.queue import Queue
from ..producer.task import Task
from ..states import JobState
from ..worker.context import JobContext, WorkerContext
from ..worker.execution import Executor, FetchedJob, Outcome
from ..worker.worker import Worker, WorkerState

#: how often run_until_idle looks at the queue (one Redis round trip per look)
_POLL_S = 0.005
#: jobs listed per state in an IdleTimeout message
_SHOWN = 10

# One atomic look at the queue: waiting, active, delayed, of which due now, paused.
_SNAPSHOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]),
        redis.call('ZCARD', KEYS[3]), redis.call('ZCOUNT', KEYS[3], '-inf', now),
        redis.call('HEXISTS', KEYS[4], 'paused')}
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt that a :func:`run_until_idle` worker ran."""

    #: the job's id
    job_id: str
    #: the task's name
    task: str
    #: 1-based attempt number
    attempt: int
    #: the handler returned (the result could be encoded)
    ok: bool
    #: the error of a failed attempt ("" when ok)
    error: str
    #: the attempt failed and the job was scheduled to run again (after its backoff)
    will_retry: bool


@dataclasses.dataclass(frozen=True, slots=True)
class IdleResult:
    """What :func:`run_until_idle` did.

    ``completed`` and ``failed`` count jobs that reached those states during the run
    (``failed``: for good, no attempt left or a permanent error such as an unknown task);
    ``retried`` counts failed attempts that were scheduled to run again.
    """

    #: jobs completed during the run
    completed: int
    #: jobs failed for good during the run
    failed: int
    #: failed attempts scheduled to run again
    retried: int
    #: every attempt run, in the order they ended
    attempts: tuple[Attempt, ...]
    #: delayed jobs promoted to waiting (only with ``include_delayed=True``)
    promoted: int
    #: jobs still delayed at the end, not run (due later, or waiting for a retry)
    delayed: int
    #: seconds the run took
    elapsed_s: float

    @property
    def job_ids(self) -> tuple[str, ...]:
        """Ids of the jobs that ran, in the order their first attempt ended."""
        return tuple(dict.fromkeys(a.job_id for a in self.attempts))


class IdleTimeout(TimeoutError):
    """:func:`run_until_idle` reached its timeout with work left; ``pending`` maps each
    state (``"waiting"``, ``"active"``, ``"delayed"``) to ids of jobs still in it (up to
    10 each), ``attempts`` lists the attempts that did run."""

    def __init__(self, message: str, pending: dict[str, list[str]],
                 attempts: tuple[Attempt, ...]) -> None:
        super().__init__(message)
        self.pending = pending
        self.attempts = attempts


class _RecordingExecutor(Executor):
    """The worker's executor, noting every attempt's outcome."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(worker.registry, worker.context, worker.concurrency,
                         worker.middleware)
        self.attempts: list[Attempt] = []

    async def run(self, job: FetchedJob, ctx: JobContext) -> Outcome:
        outcome = await super().run(job, ctx)
        self.attempts.append(Attempt(job_id=job.id, task=job.task, attempt=job.attempt,
                                     ok=outcome.ok, error=outcome.error,
                                     will_retry=not outcome.ok and outcome.retry_delay_ms >= 0))
        return outcome


@dataclasses.dataclass(frozen=True, slots=True)
class _Snapshot:
    waiting: int
    active: int
    delayed: int
    due: int  # delayed jobs due now: a worker takes them at its next fetch
    paused: bool


async def _snapshot(queue: Queue) -> _Snapshot:
    k = queue.keys
    reply = await cast(Awaitable[list[int]],
                       queue.client.eval(_SNAPSHOT, 4, k.wait, k.active, k.delayed, k.meta))
    waiting, active, delayed, due, paused = (int(v) for v in reply)
    return _Snapshot(waiting, active, delayed, due, bool(paused))


async def _promote_delayed(queue: Queue) -> int:
    """Promote every delayed job now; returns how many were."""
    promoted = 0
    while ids := await queue.job_ids(JobState.DELAYED, limit=1000):
        before = promoted
        for job_id in ids:
            try:
                await queue.promote_job(job_id)
            except (JobNotFound, JobStateError):
                continue  # a worker's fetch promoted it (it was due), or it was removed
            promoted += 1
        if promoted == before:
            break  # none of these could move: do not spin on them
    return promoted


async def run_until_idle(
    queue: Queue,
    tasks: Task[Any, Any] | Iterable[Task[Any, Any]],
    *,
    include_delayed: bool = False,
    timeout: float = 10.0,
    concurrency: int = 10,
    on_startup: Sequence[Callable[[WorkerContext], Awaitable[None] | None]] = (),
    on_shutdown: Sequence[Callable[[WorkerContext], Awaitable[None] | None]] = (),
) -> IdleResult:
    """Run a real :class:`~aiojobs_redis.Worker` with ``tasks`` (one task or several) on
    ``queue`` until no job is waiting or active, then stop it and say what it did.

    Delayed jobs that are not due yet (``delay_s``, ``run_at``, a retry's backoff) are
    left alone, so a test never waits out a delay: they count in
    :attr:`IdleResult.delayed`. With ``include_delayed=True`` every delayed job is
    promoted as soon as nothing else is left, and the run goes on until nothing is
    waiting, active or delayed: each retry of a failing job runs at once, whatever its
    backoff.

    ``on_startup``/``on_shutdown`` are the worker's hooks (fill
    ``current_job().worker.state`` there). Raises :class:`IdleTimeout`, naming the jobs
    still pending, when the queue is not idle within ``timeout`` seconds; the worker
    is stopped at once then and its running jobs handed back to waiting.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0, got {timeout!r}")
    worker = Worker(queue, tasks=[tasks] if isinstance(tasks, Task) else tasks,
                    concurrency=concurrency, handle_signals=False,
                    on_startup=on_startup, on_shutdown=on_shutdown)
    recorder = _RecordingExecutor(worker)
    worker.executor = recorder
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    promoted = 0
    timed_out: IdleTimeout | None = None
    idle = False
    # not burst mode: a burst worker waits for delayed jobs, and ends on a paused queue
    run = asyncio.create_task(worker.run(), name=f"ajr-run-until-idle:{queue.name}")
    try:
        while not run.done():
            if worker.state is WorkerState.RUNNING:  # stop() needs a started worker
                snap = await _snapshot(queue)
                honour_cancellation()  # a cancel the Redis call swallowed: stop all the same
                if not snap.waiting and not snap.active and not snap.due:
                    if not include_delayed or not snap.delayed:
                        idle = True
                        break
                    promoted += await _promote_delayed(queue)
                    honour_cancellation()
                    continue
            remaining = deadline - loop.time()
            if remaining <= 0:  # described before the worker hands its jobs back
                timed_out = await _timeout_error(queue, timeout, worker, recorder)
                break
            await asyncio.wait([run], timeout=min(_POLL_S, remaining))
    finally:
        if worker.state is WorkerState.CREATED:
            run.cancel()  # it never started: nothing to stop
        # idle: nothing runs, a graceful stop is at once; else (a timeout, an error, a
        # cancellation) the running jobs are handed back to waiting without waiting for them
        worker.stop(immediate=not idle)
        try:
            await asyncio.shield(run)
        except asyncio.CancelledError:
            if not run.done():  # we were cancelled: do not leave the worker behind
                worker.stop(immediate=True)
                await asyncio.wait([run], timeout=30)
                raise
            if not run.cancelled():
                raise
    if timed_out is not None:
        raise timed_out
    end = await _snapshot(queue)
    attempts = tuple(recorder.attempts)
    return IdleResult(completed=worker.processed, failed=worker.failed,
                      retried=sum(1 for a in attempts if a.will_retry), attempts=attempts,
                      promoted=promoted, delayed=end.delayed, elapsed_s=loop.time() - started)


async def _timeout_error(queue: Queue, timeout: float, worker: Worker,
                         recorder: _RecordingExecutor) -> IdleTimeout:
    snap = await _snapshot(queue)
    pending: dict[str, list[str]] = {}
    parts: list[str] = []
    for state, count in ((JobState.ACTIVE, snap.active), (JobState.WAITING, snap.waiting),
                         (JobState.DELAYED, snap.due)):
        if not count:
            continue
        ids = await queue.job_ids(state, limit=min(count, _SHOWN))
        pending[str(state)] = ids
        described = []
        for job_id in ids:
            info = await queue.job_info(job_id)
            described.append(job_id if info is None
                             else f"{job_id} ({info.task}, attempt {info.attempts}"
                             f" of {info.max_attempts})")
        more = f" and {count - len(ids)} more" if count > len(ids) else ""
        label = "delayed and due" if state is JobState.DELAYED else str(state)
        parts.append(f"{count} {label}: {', '.join(described)}{more}")
    hints = []
    if snap.paused:
        hints.append("the queue is paused (queue.resume())")
    if snap.active:
        hints.append("an active job's handler did not return (is it waiting for something"
                     " that never happens?)")
    hints.append(f"the worker knew the tasks {', '.join(worker.registry.names())}")
    attempts = tuple(recorder.attempts)
    message = (f"run_until_idle: queue {queue.name!r} was not idle after {timeout} s; still"
               f" pending: {'; '.join(parts) or 'nothing (it became idle at the deadline)'}."
               f" {len(attempts)} attempt(s) ran. Note: {'; '.join(hints)}.")
    return IdleTimeout(message, pending, attempts)
