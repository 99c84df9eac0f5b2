"""The job record as read from Redis (JobInfo) and the Job handle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from .. import codec
from ..errors import JobCancelled, JobFailed, JobNotFound, ResultTimeout
from ..states import JobState

R = TypeVar("R")


#: job hash fields read by :meth:`Job.info`, in order
INFO_FIELDS = (
    "task", "payload", "state", "priority", "attempts", "max_attempts", "stalls", "progress",
    "result", "error", "traceback", "created", "started", "finished", "due", "worker",
    "cancelled_by", "deps_total", "deps_left",
)


class JobInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one job's record."""

    id: str
    queue: str
    task: str
    state: JobState
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    priority: int
    attempts: int
    max_attempts: int
    stalls: int
    progress: Any = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    due_at: datetime | None = None
    worker: str | None = None
    payload_error: str | None = None  # set when the stored arguments cannot be decoded
    #: who cancelled the job, or asked to (set from the request on)
    cancelled_by: str | None = None
    #: a job of a flow: how many jobs it waits for, and how many of them have not finished
    #: (0 once it was released; :meth:`Job.dependencies` has the details)
    dependencies: int | None = None
    dependencies_pending: int | None = None

    @property
    def cancel_requested(self) -> bool:
        """True while a cancel of this running job waits for its worker to stop it."""
        return self.cancelled_by is not None and self.state is JobState.ACTIVE

    @classmethod
    def from_fields(cls, queue: str, job_id: str, values: list[bytes | None]) -> JobInfo:
        f = dict(zip(INFO_FIELDS, values, strict=True))
        args: list[Any] | None = None
        kwargs: dict[str, Any] | None = None
        payload_error = None
        if f["payload"] is not None:
            try:
                args, kwargs = codec.decode_args(f["payload"])
            except codec.DecodeError as e:
                payload_error = str(e)
        return cls(
            id=job_id,
            queue=queue,
            task=_text(f["task"]) or "",
            state=JobState(_text(f["state"]) or ""),
            args=args,
            kwargs=kwargs,
            priority=_int(f["priority"]),
            attempts=_int(f["attempts"]),
            max_attempts=_int(f["max_attempts"]),
            stalls=_int(f["stalls"]),
            progress=_value(f["progress"]),
            result=_value(f["result"]),
            error=_text(f["error"]) or None,
            traceback=_text(f["traceback"]) or None,
            created_at=_time(f["created"]),
            started_at=_time(f["started"]),
            finished_at=_time(f["finished"]),
            due_at=_time(f["due"]),
            worker=_text(f["worker"]),
            payload_error=payload_error,
            cancelled_by=_text(f["cancelled_by"]),
            dependencies=None if f["deps_total"] is None else int(f["deps_total"]),
            dependencies_pending=None if f["deps_left"] is None else int(f["deps_left"]),
        )


def _text(v: bytes | None) -> str | None:
    return None if v is None else v.decode("utf-8", "replace")


def _int(v: bytes | None) -> int:
    return 0 if v is None else int(v)


def _time(v: bytes | None) -> datetime | None:
    if v is None or int(v) <= 0:
        return None
    return datetime.fromtimestamp(int(v) / 1000, tz=UTC)


def _value(v: bytes | None) -> Any:
    if v is None:
        return None
    try:
        return codec.decode_value(v)
    except codec.DecodeError:
        return None


#: lines kept per job's log (the oldest go first), and characters kept per line
LOG_LINES = 100
LOG_LINE_CHARS = 2000


class JobLogLine(msgspec.Struct, frozen=True):
    """One line of a job's log (``current_job().log(...)``)."""

    at: datetime  # Redis's time when it was written
    attempt: int
    text: str


class Dependency(msgspec.Struct, frozen=True):
    """A job that another job waits for (a flow), as the waiting job saw it."""

    id: str
    #: "pending" (not finished yet), "completed", "failed", "cancelled" (cancelled,
    #: expired or removed) or "ignored" (did not complete; the edge's policy is ignore)
    state: str
    result: Any = None  # its result, when completed
    error: str | None = None  # why it did not complete


_MARKS = {"c": "completed", "f": "failed", "x": "cancelled", "i": "ignored"}


def decode_dependency(job_id: str, raw: bytes | None) -> Dependency:
    """A dependency from its field in the waiting job's hash (None: not finished)."""
    if raw is None:
        return Dependency(job_id, "pending")
    state = _MARKS.get(raw[:1].decode(), "failed")
    if state == "completed":
        return Dependency(job_id, state, result=codec.decode_value(raw[1:]) if raw[1:] else None)
    return Dependency(job_id, state, error=raw[1:].decode(errors="replace"))


class JobSource(Protocol):
    """What a :class:`Job` handle needs of its queue (a :class:`~.queue.Queue` is one):
    the job module does not import the queue module."""

    @property
    def name(self) -> str: ...
    async def job_info(self, job_id: str) -> JobInfo | None: ...
    async def wait_finished(self, job_id: str, timeout: float | None) -> JobInfo | None: ...
    async def retry_jobs(self, job_ids: Sequence[str], *, strict: bool = False) -> int: ...
    async def remove_job(self, job_id: str) -> None: ...
    async def promote_job(self, job_id: str) -> None: ...
    async def cancel_job(self, job_id: str, *, by: str | None = None) -> JobState: ...
    async def change_job(self, job_id: str, *, priority: int | None = None,
                         delay_s: float | None = None) -> JobState: ...
    async def job_logs(self, job_id: str) -> list[JobLogLine]: ...
    async def job_dependencies(self, job_id: str) -> list[Dependency]: ...


class Job(Generic[R]):
    """A handle on one job of a queue; cheap to make, reads Redis when asked."""

    __slots__ = ("existed", "id", "queue")

    def __init__(self, queue: JobSource, job_id: str, *, existed: bool = False) -> None:
        self.queue = queue
        self.id = job_id
        #: True when enqueue found a job with this id already (and changed nothing)
        self.existed = existed

    def __repr__(self) -> str:
        return f"<Job {self.queue.name}/{self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and (other.queue.name, other.id) == (self.queue.name, self.id)

    def __hash__(self) -> int:
        return hash((self.queue.name, self.id))

    async def info(self) -> JobInfo:
        """The job's record; raises :class:`JobNotFound` when it does not exist."""
        info = await self.queue.job_info(self.id)
        if info is None:
            raise JobNotFound(self.id, "info", "no such job (removed, or expired by retention)")
        return info

    async def state(self) -> JobState:
        return (await self.info()).state

    async def result(self, timeout: float | None = None) -> R:
        """Wait until the job finishes and return its result.

        Woken by the queue's event stream (one listener per Queue, shared by all
        waiters). Raises :class:`JobFailed` when the job failed for good,
        :class:`ResultTimeout` after ``timeout`` seconds.
        """
        info = await self.queue.wait_finished(self.id, timeout)
        if info is None:
            raise ResultTimeout(f"job {self.id!r} did not finish within {timeout} s")
        if info.state is JobState.FAILED:
            raise JobFailed(self.id, info.error or "unknown error", info.traceback)
        if info.state is JobState.CANCELLED:
            raise JobCancelled(self.id, info.cancelled_by)
        return info.result  # type: ignore[no-any-return]

    async def retry(self) -> None:
        """Put a failed job back to waiting with a fresh set of attempts."""
        await self.queue.retry_jobs([self.id], strict=True)

    async def remove(self) -> None:
        """Delete the job; refused while it is active."""
        await self.queue.remove_job(self.id)

    async def promote(self) -> None:
        """Make a delayed job run now."""
        await self.queue.promote_job(self.id)

    async def cancel(self, *, by: str | None = None) -> JobState:
        """Cancel the job, from any process: see :meth:`Queue.cancel_job`."""
        return await self.queue.cancel_job(self.id, by=by)

    async def change(self, *, priority: int | None = None,
                     delay_s: float | None = None) -> JobState:
        """Change a waiting or delayed job's priority and/or delay: see
        :meth:`Queue.change_job`."""
        return await self.queue.change_job(self.id, priority=priority, delay_s=delay_s)

    async def logs(self) -> list[JobLogLine]:
        """The job's log lines, oldest first (the last 100)."""
        return await self.queue.job_logs(self.id)

    async def dependencies(self) -> list[Dependency]:
        """The jobs this job waits (or waited) for in its flow, in the order given, with
        their results or errors once finished ([] for a job outside a flow)."""
        return await self.queue.job_dependencies(self.id)
