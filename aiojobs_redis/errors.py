"""The exception tree. Everything we raise derives from :class:`AiojobsRedisError`::

    AiojobsRedisError
    ├── ConfigurationError (also ValueError)
    │   └── InvalidQueueName
    ├── EnqueueError
    │   ├── EncodeError          arguments that MessagePack cannot encode
    │   └── InvalidJobId
    ├── TaskNotFound             a job names a task the worker does not have
    ├── JobError                 carries the job id and the operation
    │   ├── JobNotFound
    │   ├── JobStateError        the job is not in a state that allows the operation
    │   ├── LeaseLost            the lease token no longer matches (fencing)
    │   └── JobFailed            the job ended in failed; carries the remote traceback text
    ├── ScheduleNotFound (also LookupError)
    ├── ResultTimeout (also TimeoutError)
    └── RedisError
        ├── RedisUnavailable     connection refused, reset, timed out
        ├── RedisOutOfMemory     Redis refused a write (maxmemory with noeviction)
        └── NotReplicated        written on the primary, not confirmed by enough replicas

Redis errors are wrapped at our boundary with ``raise ... from e``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions as rx


class AiojobsRedisError(Exception):
    """Base class of every error raised by aiojobs_redis."""


class ConfigurationError(AiojobsRedisError, ValueError):
    """A setting or an argument is invalid."""


class InvalidQueueName(ConfigurationError):
    """A queue name is empty, too long, or has characters outside ``[A-Za-z0-9_.-]``."""


class EnqueueError(AiojobsRedisError):
    """A job could not be enqueued; nothing was written."""


class EncodeError(EnqueueError, TypeError):
    """The job's arguments cannot be encoded with MessagePack."""


class InvalidJobId(EnqueueError, ValueError):
    """A job id is empty, too long or has whitespace or control characters."""


class TaskNotFound(AiojobsRedisError, LookupError):
    """A job names a task that is not registered."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no task named {name!r} is registered")
        self.name = name


class JobError(AiojobsRedisError):
    """An operation on one job failed."""

    def __init__(self, job_id: str, operation: str, message: str) -> None:
        super().__init__(f"job {job_id!r}: {operation}: {message}")
        self.job_id = job_id
        self.operation = operation


class JobNotFound(JobError, LookupError):
    """The job does not exist (never did, was removed, or expired by retention)."""


class JobStateError(JobError):
    """The job is not in a state that allows the operation."""


class LeaseLost(JobError):
    """The worker's lease token no longer matches: another worker owns the job now."""


class JobFailed(JobError):
    """The job ended in the failed state."""

    def __init__(self, job_id: str, error: str, traceback: str | None) -> None:
        super().__init__(job_id, "result", f"failed: {error}")
        self.error = error
        self.traceback = traceback


class JobCancelled(JobError):
    """The job was cancelled (``Job.cancel()``) before it finished."""

    def __init__(self, job_id: str, by: str | None) -> None:
        super().__init__(job_id, "result", f"cancelled by {by or 'someone'}")
        self.by = by


class ScheduleNotFound(AiojobsRedisError, LookupError):
    """No schedule of that name exists on the queue."""

    def __init__(self, name: str, queue: str) -> None:
        super().__init__(f"queue {queue!r} has no schedule named {name!r}")
        self.name = name
        self.queue = queue


class ResultTimeout(AiojobsRedisError, TimeoutError):
    """Waiting for a job's result took longer than the timeout."""


class RedisError(AiojobsRedisError):
    """Redis refused or could not answer a command."""


class RedisUnavailable(RedisError, ConnectionError):
    """Redis could not be reached (refused, reset, timed out)."""


class RedisOutOfMemory(RedisError):
    """Redis refused a write because it is out of memory (``maxmemory`` with ``noeviction``)."""


class NotReplicated(RedisError):
    """A write was applied on the primary but fewer replicas than asked for (a queue's
    ``replicas``) confirmed it within the timeout: a failover now could lose it. Enqueueing
    again with the same job ids is safe (an existing id is not added twice)."""

    def __init__(self, message: str, *, acked: int, wanted: int,
                 job_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.acked = acked
        self.wanted = wanted
        self.job_ids = job_ids


class Status(enum.IntEnum):
    """Status codes returned by the Lua scripts (see each script's header)."""

    OK = 1
    DUPLICATE = 0  # already applied / already exists: not an error
    NO_JOB = -1
    LEASE_LOST = -2
    WRONG_STATE = -3


def status_error(status: int, job_id: str, operation: str) -> JobError | None:
    """Map a script's status code for one job to an exception, or None when it succeeded."""
    if status >= 0:
        return None
    if status == Status.NO_JOB:
        return JobNotFound(job_id, operation, "no such job")
    if status == Status.LEASE_LOST:
        return LeaseLost(job_id, operation, "the lease token no longer matches")
    if status == Status.WRONG_STATE:
        return JobStateError(job_id, operation, "the job is not in a state that allows this")
    return JobError(job_id, operation, f"unexpected status {status}")


@contextmanager
def wrap_redis_errors(operation: str) -> Iterator[None]:
    """Turn redis-py exceptions into ours, keeping the cause."""
    try:
        yield
    except (rx.ConnectionError, rx.TimeoutError) as e:
        raise RedisUnavailable(f"{operation}: Redis is unreachable: {e}") from e
    except (rx.ClusterDownError, rx.TryAgainError, rx.SlotNotCoveredError) as e:
        # a cluster failing over or resharding: transient, like an unreachable server
        raise RedisUnavailable(f"{operation}: the Redis Cluster is not serving this queue's"
                               f" slot right now (failover?): {e}") from e
    except rx.ResponseError as e:
        if isinstance(e, rx.OutOfMemoryError) or str(e).startswith("OOM"):
            raise RedisOutOfMemory(f"{operation}: Redis is out of memory: {e}") from e
        raise RedisError(f"{operation}: {e}") from e
    except rx.RedisError as e:
        raise RedisError(f"{operation}: {e}") from e
