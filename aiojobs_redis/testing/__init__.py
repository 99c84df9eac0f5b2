"""Helpers to test your own tasks: a real worker run until the queue is idle, and a fake
job context to call a handler directly.

The pytest fixtures (``ajr_redis_server``, ``ajr_redis_url``, ``ajr_queue``) come from
:mod:`aiojobs_redis.testing.plugin`, which pytest loads by itself once aiojobs_redis is
installed. See docs/testing.md for the patterns.

- :func:`run_until_idle` runs a real :class:`~aiojobs_redis.Worker` on a queue until no
  job is waiting or active (delayed jobs and retry backoff are not waited out unless
  ``include_delayed=True``) and returns an :class:`IdleResult`.
- :func:`job_context` sets a :class:`FakeJobContext` as ``current_job()`` for a block;
  :func:`call_task` calls a task's function under it, no Redis needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import Token
from types import TracebackType
from typing import Any, NoReturn, ParamSpec, TypeVar, cast

import anyio.to_thread

from .. import codec
from .._redis_server import RedisServer
from ..errors import JobNotFound, JobStateError
from ..producer.queue import Queue
from ..producer.task import Task
from ..states import JobState
from ..worker.context import JobContext, WorkerContext, current_job, set_current_job
from ..worker.execution import Executor, FetchedJob, Outcome
from ..worker.worker import Worker, WorkerState

__all__ = (
    "Attempt",
    "FakeJobContext",
    "IdleResult",
    "IdleTimeout",
    "RedisServer",
    "call_task",
    "job_context",
    "run_until_idle",
)

P = ParamSpec("P")
R = TypeVar("R")

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


# ------------------------------------------------------------------ run_until_idle


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
                if not snap.waiting and not snap.active and not snap.due:
                    if not include_delayed or not snap.delayed:
                        idle = True
                        break
                    promoted += await _promote_delayed(queue)
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


# ------------------------------------------------------------------ fake job context


class _NoQueue:
    """Stands for the queue of a fake job context made without one."""

    name = "(no queue)"

    def __getattr__(self, attr: str) -> NoReturn:
        raise RuntimeError(
            f"this fake job context has no queue (current_job().queue.{attr}): give one,"
            " job_context(queue=...)"
        )

    def __repr__(self) -> str:
        return "<no queue>"


class FakeJobContext(JobContext):
    """A :class:`~aiojobs_redis.JobContext` for unit tests, made by :func:`job_context`.

    :meth:`progress` checks that the value can be encoded (as the real one does) and
    appends it to :attr:`progress_values`: nothing is written to Redis.
    """

    __slots__ = ("progress_values",)

    def __init__(self, *, id: str, queue: Queue | None, task: str, attempt: int,
                 max_attempts: int, worker: WorkerContext) -> None:
        super().__init__(id=id, queue=queue if queue is not None else cast(Queue, _NoQueue()),
                         task=task, attempt=attempt, max_attempts=max_attempts,
                         token="fake-token", worker=worker)
        #: every value given to :meth:`progress`, in order
        self.progress_values: list[Any] = []

    def __repr__(self) -> str:
        return (f"<FakeJobContext {self.queue.name}/{self.id} {self.task or '(no task)'}"
                f" attempt {self.attempt}/{self.max_attempts}>")

    async def progress(self, value: Any) -> None:
        """Record ``value`` in :attr:`progress_values`; TypeError when MessagePack cannot
        encode it (the real context fails the same way)."""
        codec.encode_value(value)
        self.progress_values.append(value)


class job_context:  # lower case: used like a function, with job_context(...) as ctx
    """Set a :class:`FakeJobContext` as ``current_job()`` for a ``with`` (or
    ``async with``) block, and reset it afterwards.

    ``attempt`` is 1-based; ``max_attempts`` defaults to the task's ``attempts`` when
    ``task`` is a :class:`~aiojobs_redis.Task`, and is at least ``attempt``.
    ``worker_state`` becomes ``current_job().worker.state`` (the same dict, so the
    test sees what the handler puts there); ``headers`` become
    ``current_job().headers``. ``queue`` is the job's queue, for handlers
    that enqueue follow-up jobs through ``current_job().queue``; progress is recorded on
    the context either way, never sent to Redis::

        with job_context(attempt=2, worker_state={"db": fake_db}) as ctx:
            await send_digest.fn("ann", unread=3)   # or: await call_task(send_digest, ...)
        assert ctx.progress_values == [50, 100]
    """

    def __init__(
        self,
        *,
        queue: Queue | None = None,
        task: Task[Any, Any] | str = "",
        id: str = "fake-job",
        attempt: int = 1,
        max_attempts: int | None = None,
        worker_state: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt!r}")
        if isinstance(task, Task):
            name = task.name
            default_max = task.defaults.attempts or 1
        else:
            name = task
            default_max = 1
        worker = WorkerContext("fake-worker", (queue,) if queue is not None else ())
        if worker_state is not None:
            worker.state = worker_state
        self.context = FakeJobContext(
            id=id, queue=queue, task=name, attempt=attempt,
            max_attempts=max(attempt, max_attempts if max_attempts is not None else default_max),
            worker=worker)
        if headers is not None:
            self.context.headers = dict(headers)
        self._token: Token[JobContext] | None = None

    def __enter__(self) -> FakeJobContext:
        if self._token is not None:
            raise RuntimeError("this job_context is in use already")
        self._token = set_current_job(self.context)
        return self.context

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        token, self._token = self._token, None
        if token is not None:
            token.var.reset(token)

    async def __aenter__(self) -> FakeJobContext:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


async def call_task(task: Task[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Call ``task``'s function as a worker would, without Redis, and return its result.

    The arguments are checked against the function and go through MessagePack as on a
    real enqueue (a tuple arrives as a list; an argument that cannot be encoded raises
    :class:`~aiojobs_redis.EncodeError`); a sync function runs in a worker thread, so
    ``anyio.from_thread.run(current_job().progress, ...)`` works from it. A result
    MessagePack cannot encode raises TypeError, as it fails the job in a worker.

    ``current_job()`` is the context of an enclosing :func:`job_context` block, else a
    fresh :class:`FakeJobContext` (attempt 1) for this call alone. The task's timeout
    is not enforced.
    """
    if not isinstance(task, Task):
        raise TypeError(f"call_task needs a Task (made with @task), not {task!r}")
    task.check_arguments(args, kwargs)
    call_args, call_kwargs = codec.decode_args(codec.encode_args(task.name, args, kwargs))
    try:
        ctx: JobContext | None = current_job()
    except LookupError:
        ctx = None
    if ctx is None:
        with job_context(task=task):
            result = await _call(task, call_args, call_kwargs)
    else:
        if isinstance(ctx, FakeJobContext) and not ctx.task:
            ctx.task = task.name
        result = await _call(task, call_args, call_kwargs)
    codec.encode_value(result)
    return cast(R, result)


async def _call(task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    if task.is_async:
        return await task.fn(*args, **kwargs)
    # anyio copies the context to the thread: current_job() works there too
    return await anyio.to_thread.run_sync(functools.partial(task.fn, *args, **kwargs))
