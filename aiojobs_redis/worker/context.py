"""Per-job and per-worker context, reachable from inside a handler."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .. import codec
from ..control import WaitForChildren
from ..errors import status_error, wrap_redis_errors
from ..options import JobOptions
from ..producer.flows import Edge, Flow, OnFailure, enqueue_flow, policy_letter
from ..producer.job import LOG_LINE_CHARS, LOG_LINES, Dependency
from ..producer.task import TaskCall
from ..scripts import SCRIPTS

if TYPE_CHECKING:
    from ..producer.queue import Queue


class WorkerContext:
    """Shared by every job of one worker; ``state`` is yours (database pools, clients...).

    Startup hooks fill it, shutdown hooks clean it up.
    """

    __slots__ = ("queues", "state", "worker_id")

    def __init__(self, worker_id: str, queues: tuple[Queue, ...]) -> None:
        self.worker_id = worker_id
        self.queues = queues
        self.state: dict[str, Any] = {}


_cancel_lock = threading.Lock()  # makes JobContext.cancel_event once, whoever asks first


class JobContext:
    """The running job: its id, attempt number, a way to report progress, and whether the
    worker has given up on this attempt (:attr:`cancelled`)."""

    __slots__ = ("_cancel", "attempt", "headers", "id", "max_attempts", "queue", "task", "token",
                 "worker")

    def __init__(self, *, id: str, queue: Queue, task: str, attempt: int, max_attempts: int,
                 token: str, worker: WorkerContext) -> None:
        self.id = id
        self.queue = queue
        self.task = task
        self.attempt = attempt  # 1-based
        self.max_attempts = max_attempts
        self.token = token
        self.worker = worker
        #: string metadata that came with the job from the producer (a trace context, a
        #: request id): see :mod:`aiojobs_redis.producer.headers`; read-only
        self.headers: Mapping[str, str] = codec.NO_HEADERS
        self._cancel: threading.Event | None = None  # made on first use: most jobs never need it

    def __repr__(self) -> str:
        return f"<JobContext {self.queue.name}/{self.id} {self.task} attempt {self.attempt}>"

    @property
    def cancelled(self) -> bool:
        """True once the worker has given up on this attempt: its timeout fired, its lease
        was lost, or the worker is shutting down and handed the job back.

        An async handler is cancelled (``CancelledError``) at that moment anyway. A sync
        handler runs in a thread, which nothing can stop from outside: check this flag
        between steps and return (or raise) early, or wait on :attr:`cancel_event`
        instead of ``time.sleep``. After a timeout the job keeps its concurrency slot until
        the thread returns; in every case no other attempt of the job starts on this
        worker until then.
        """
        event = self._cancel
        return event is not None and event.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        """The :class:`threading.Event` behind :attr:`cancelled`:
        ``current_job().cancel_event.wait(5)`` sleeps up to 5 s but wakes (returning
        True) as soon as the attempt is cancelled."""
        event = self._cancel
        if event is None:
            with _cancel_lock:  # the handler's thread and the event loop may both get here
                event = self._cancel
                if event is None:
                    event = self._cancel = threading.Event()
        return event

    def mark_cancelled(self) -> None:
        """Set :attr:`cancelled` (the worker calls this; a handler has no need to)."""
        self.cancel_event.set()

    async def progress(self, value: Any) -> None:
        """Record progress (any MessagePack value) on the job and emit a 'progress' event.

        Raises :class:`LeaseLost` when another worker owns the job now.
        From a sync handler: ``anyio.from_thread.run(ctx.progress, value)``.
        """
        q = self.queue
        with wrap_redis_errors(f"progress of job {self.id!r}"):
            script = SCRIPTS["update_progress"]
            status = await script(
                q.client, script.keys_of(q.keys),
                [q.keys.job_prefix, q.events_maxlen, self.id, self.token,
                 codec.encode_value(value)],
            )
        error = status_error(int(status), self.id, "progress")
        if error is not None:
            raise error

    async def dependencies(self) -> list[Dependency]:
        """The jobs this job waited for (a flow), in order, with their results or errors
        ([] outside a flow)."""
        return await self.queue.job_dependencies(self.id)

    async def wait_for(self, calls: Iterable[TaskCall[Any]], *,
                       on_failure: OnFailure = "fail") -> None:
        """Add jobs (to this job's queue) and wait for them without holding a worker slot:
        this attempt ends here (``WaitForChildren`` is raised: let it propagate), and the
        job runs again from the start, its attempt given back, once they have all
        finished; :meth:`dependencies` then has their results. ``on_failure`` is the
        edges' policy (see :class:`Flow`). Calling it again on the next run adds more.

        The usual shape::

            done = await current_job().dependencies()
            if not done:
                await current_job().wait_for(fetch.call(u) for u in urls)
            return sum(d.result for d in done)

        The children get ids ``<this id>.<n>`` (unless a call names its own), so a run
        cut off after adding them adds nothing twice when it runs again.
        """
        q = self.queue
        known = await q.job_dependencies(self.id)
        flow = Flow()
        for i, call in enumerate(calls):
            if call.options.job_id is None:
                call = TaskCall(call.name, call.args, call.kwargs,
                                JobOptions(job_id=f"{self.id}.{len(known) + i}").merged_over(
                                    call.options), call.task)
            flow.add(call)
        if not flow.steps:
            return
        policy = policy_letter(on_failure)
        for step in flow.steps:
            step.dependents.append(Edge(self.id, policy, None))
        await enqueue_flow(q, flow)
        raise WaitForChildren([step.job_id for step in flow.steps], policy)

    async def log(self, text: str) -> None:
        """Add a line to the job's log (``job.logs()``, the HTTP API, the dashboard), with
        Redis's time and this attempt's number. A job keeps its last 100 lines, each cut at
        2,000 characters; the log stays with the job (retried, kept, trimmed with it).

        Raises :class:`LeaseLost` when another worker owns the job now.
        From a sync handler: ``anyio.from_thread.run(ctx.log, text)``.
        """
        if not isinstance(text, str):
            text = str(text)
        if len(text) > LOG_LINE_CHARS:
            text = text[:LOG_LINE_CHARS - 1] + "…"
        q = self.queue
        with wrap_redis_errors(f"log of job {self.id!r}"):
            script = SCRIPTS["append_log"]
            status = await script(
                q.client, script.keys_of(q.keys),
                [q.keys.job_prefix, self.id, self.token,
                 codec.encode_value((0, self.attempt, text)), LOG_LINES, q.events_maxlen],
            )
        error = status_error(int(status), self.id, "log")
        if error is not None:
            raise error


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("aiojobs_redis_job")


def current_job() -> JobContext:
    """The context of the job running in this task or thread; LookupError outside a job."""
    try:
        return _current.get()
    except LookupError:
        raise LookupError("current_job() is only available inside a running job") from None


def set_current_job(ctx: JobContext) -> contextvars.Token[JobContext]:
    return _current.set(ctx)
