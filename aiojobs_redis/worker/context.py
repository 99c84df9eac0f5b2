"""Per-job and per-worker context, reachable from inside a handler."""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from .. import codec
from ..errors import status_error, wrap_redis_errors
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


class JobContext:
    """The running job: its id, attempt number, and a way to report progress."""

    __slots__ = ("attempt", "id", "max_attempts", "queue", "task", "token", "worker")

    def __init__(self, *, id: str, queue: Queue, task: str, attempt: int, max_attempts: int,
                 token: str, worker: WorkerContext) -> None:
        self.id = id
        self.queue = queue
        self.task = task
        self.attempt = attempt  # 1-based
        self.max_attempts = max_attempts
        self.token = token
        self.worker = worker

    def __repr__(self) -> str:
        return f"<JobContext {self.queue.name}/{self.id} {self.task} attempt {self.attempt}>"

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


_current: contextvars.ContextVar[JobContext] = contextvars.ContextVar("aiojobs_redis_job")


def current_job() -> JobContext:
    """The context of the job running in this task or thread; LookupError outside a job."""
    try:
        return _current.get()
    except LookupError:
        raise LookupError("current_job() is only available inside a running job") from None


def set_current_job(ctx: JobContext) -> contextvars.Token[JobContext]:
    return _current.set(ctx)
