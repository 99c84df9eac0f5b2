"""A fake job context, to call a task's function directly in a unit test, no Redis
needed: :class:`job_context` sets a :class:`FakeJobContext` as ``current_job()`` for a
block, :func:`call_task` calls a task as a worker would under it. The public names are
imported from :mod:`aiojobs_redis.testing`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from contextvars import Token
from types import TracebackType
from typing import Any, NoReturn, ParamSpec, TypeVar, cast

import anyio.to_thread

from .. import codec
from ..producer.queue import Queue
from ..producer.task import Task
from ..worker.context import JobContext, WorkerContext, current_job, set_current_job

P = ParamSpec("P")
R = TypeVar("R")


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
