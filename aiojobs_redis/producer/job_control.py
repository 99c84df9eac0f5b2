"""What a producer does to jobs already enqueued: remove, promote, cancel, change,
retry, and read their logs and flow edges (methods of
:class:`~aiojobs_redis.producer.queue.Queue`). Each call that changes a job keeps its
reply under a fresh ``op:`` key, so that the call sent again after a lost reply answers
as the first time."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from .. import codec
from ..connection import AnyRedis
from ..errors import (
    ConfigurationError,
    JobNotFound,
    JobStateError,
    status_error,
    wrap_redis_errors,
)
from ..keys import QueueKeys
from ..options import JobOptions, Retention
from ..scripts import SCRIPTS, Batch
from ..states import JobState
from .job import LOG_LINES, Dependency, JobLogLine, decode_dependency
from .job_ids import check_job_id


class JobControl:
    """The methods of :class:`~aiojobs_redis.producer.queue.Queue` that change or read
    one job (or many) by id."""

    client: AnyRedis
    keys: QueueKeys
    name: str
    events_maxlen: int
    retention: Retention

    if TYPE_CHECKING:
        async def job_ids(self, state: JobState, *, offset: int = 0, limit: int = 100,
                          newest_first: bool = False) -> list[str]: ...

    async def _job_script(self, name: str, job_id: str, operation: str,
                          *extra: str) -> None:
        script = SCRIPTS[name]
        with wrap_redis_errors(f"{operation} job {job_id!r}"):
            status = await script(self.client, script.keys_of(self.keys),
                                  [self.keys.job_prefix, self.events_maxlen, self._op_key(),
                                   job_id, *extra])
        error = status_error(int(status), job_id, operation)
        if error is not None:
            raise error

    def _op_key(self) -> str:
        """A fresh key for one call's reply: the call re-sent after a lost reply (redis-py
        retries on a dropped connection) answers it instead of 'already done'."""
        return self.keys.op_prefix + secrets.token_hex(8)

    async def remove_job(self, job_id: str) -> None:
        await self._job_script("remove_job", job_id, "remove", self.keys.group_prefix)

    async def promote_job(self, job_id: str) -> None:
        await self._job_script("promote_job", job_id, "promote")

    async def remove_jobs(self, job_ids: Sequence[str], *, strict: bool = False) -> int:
        """Remove many jobs (not running ones) with their records; returns how many were
        removed. With ``strict``, an id that is missing or running raises (after the
        others were removed all the same). 1,000 atomic calls per round trip."""
        return await self._each("remove_job", "remove", job_ids, strict,
                                self.keys.group_prefix)

    async def promote_jobs(self, job_ids: Sequence[str], *, strict: bool = False) -> int:
        """Make many delayed jobs wait now; returns how many were promoted. With
        ``strict``, an id that is missing or not delayed raises (after the others were
        promoted all the same). 1,000 atomic calls per round trip."""
        return await self._each("promote_job", "promote", job_ids, strict)

    async def _each(self, name: str, operation: str, job_ids: Sequence[str], strict: bool,
                    *extra: str) -> int:
        script = SCRIPTS[name]
        keys = script.keys_of(self.keys)
        ids = [check_job_id(job_id) for job_id in job_ids]
        statuses: list[Any] = []
        for start in range(0, len(ids), 1000):  # a round trip's worth
            batch = Batch()
            for job_id in ids[start:start + 1000]:
                batch.add(script, keys, [self.keys.job_prefix, self.events_maxlen,
                                         self._op_key(), job_id, *extra])
            with wrap_redis_errors(f"{operation} jobs of queue {self.name!r}"):
                statuses += await batch.execute(self.client)
        if strict:
            for job_id, status in zip(ids, statuses, strict=True):
                error = status_error(int(status), job_id, operation)
                if error is not None:
                    raise error
        return sum(1 for status in statuses if int(status) == 1)

    async def cancel_job(self, job_id: str, *, by: str | None = None) -> JobState:
        """Cancel a job from any process; ``by`` says who (recorded on the job).

        A waiting or delayed job is cancelled at once and never runs: returns
        ``JobState.CANCELLED``. A running job's worker is told through the queue's cancel
        channel and cancels its handler within milliseconds (``CancelledError`` in an async
        handler, ``current_job().cancelled`` for a sync one), then records it cancelled:
        returns ``JobState.ACTIVE`` (``await job.result()`` then raises
        :class:`JobCancelled`). A running job that finishes before its worker hears the
        request keeps its outcome; one that would be retried or handed back is cancelled
        instead. Raises :class:`JobNotFound` for an unknown id and :class:`JobStateError`
        for a job already finished (completed, failed or cancelled).
        """
        job_id = check_job_id(job_id)
        who = "api" if by is None else by
        if not isinstance(who, str) or not 1 <= len(who.encode()) <= 200:
            raise ConfigurationError("by must be a string of 1-200 bytes")
        keep_count, keep_age = self.retention.failed_count, self.retention.failed_age_s
        script = SCRIPTS["cancel_job"]
        with wrap_redis_errors(f"cancel job {job_id!r}"):
            reply = await script(self.client, script.keys_of(self.keys), [
                self.keys.job_prefix, self.events_maxlen, self._op_key(), job_id, who,
                -1 if keep_count is None else keep_count,
                -1 if keep_age is None else int(keep_age * 1000), self.keys.cancel_channel,
                self.keys.group_prefix])
        status = int(reply[0])
        if status == 1:
            return JobState.CANCELLED
        if status == 2:
            return JobState.ACTIVE
        if status == -1:
            raise JobNotFound(job_id, "cancel", "no such job (removed, or expired by retention)")
        state = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        raise JobStateError(job_id, "cancel", f"the job already finished: it is {state}")

    async def change_job(self, job_id: str, *, priority: int | None = None,
                         delay_s: float | None = None) -> JobState:
        """Give a waiting or delayed job a new priority and/or a new delay.

        ``priority``: -1000..1000 (a waiting job keeps its place among the jobs of its new
        priority). ``delay_s``: run no earlier than this many seconds from now; 0 makes a
        delayed job wait now. Returns the job's state after the change. Raises
        :class:`JobNotFound` for an unknown id and :class:`JobStateError` for a job that
        is running or finished.
        """
        job_id = check_job_id(job_id)
        checked = JobOptions(priority=priority, delay_s=delay_s)  # the options' own checks
        if priority is None and delay_s is None:
            raise ConfigurationError("change_job needs a priority, a delay_s or both")
        script = SCRIPTS["change_job"]
        with wrap_redis_errors(f"change job {job_id!r}"):
            reply = await script(self.client, script.keys_of(self.keys), [
                self.keys.job_prefix, self.events_maxlen, self._op_key(), job_id,
                "" if checked.priority is None else checked.priority,
                "" if checked.delay_s is None else int(checked.delay_s * 1000),
                self.keys.group_prefix])
        status = int(reply[0])
        if status == -1:
            raise JobNotFound(job_id, "change", "no such job (removed, or expired by retention)")
        state = JobState(reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1]))
        if status == -3:
            raise JobStateError(job_id, "change",
                                f"only a waiting or delayed job can change: it is {state}")
        return state

    async def job_logs(self, job_id: str) -> list[JobLogLine]:
        """The log lines of a job (``current_job().log(...)``), oldest first."""
        key = self.keys.job(check_job_id(job_id))
        with wrap_redis_errors(f"read the log of job {job_id!r}"):
            written = await self.client.hget(key, "logs")
            if written is None:
                if not await self.client.exists(key):
                    raise JobNotFound(job_id, "logs", "no such job")
                return []
            n = int(written)
            fields = [f"log:{i}" for i in range(max(1, n - LOG_LINES + 1), n + 1)]
            values = await self.client.hmget(key, fields)
        lines = []
        for raw in values:
            if not isinstance(raw, bytes):
                continue  # trimmed meanwhile
            at, attempt, text = codec.decode_value(raw)
            lines.append(JobLogLine(datetime.fromtimestamp(at / 1000, tz=UTC), int(attempt),
                                    str(text)))
        return lines

    async def job_dependencies(self, job_id: str) -> list[Dependency]:
        """The jobs a job of a flow waits (or waited) for, in order, with their results
        or errors once finished (read from the job's own record: retention of the
        dependencies does not matter)."""
        key = self.keys.job(check_job_id(job_id))
        with wrap_redis_errors(f"read the dependencies of job {job_id!r}"):
            packed: Any = await self.client.hget(key, "deps")
            if packed is None:
                if not await self.client.exists(key):
                    raise JobNotFound(job_id, "dependencies", "no such job")
                return []
            ids = [i.decode() if isinstance(i, bytes) else str(i)
                   for i in msgspec.msgpack.decode(packed)]
            values: list[Any] = []
            for start in range(0, len(ids), 1000):
                fields = [f"dep:{i}" for i in ids[start:start + 1000]]
                values += await self.client.hmget(key, fields)
        return [decode_dependency(i, v) for i, v in zip(ids, values, strict=True)]

    async def job_dependents(self, job_id: str, *, limit: int = 100) -> list[str]:
        """Ids of (at most ``limit``) jobs of a flow that wait for this job, while it has
        not finished ([] once it has: they were told then)."""
        key = self.keys.dependents_prefix + check_job_id(job_id)
        with wrap_redis_errors(f"read the dependents of job {job_id!r}"):
            _, fields = await self.client.hscan(key, 0, count=limit)
        return sorted(f.decode() if isinstance(f, bytes) else str(f) for f in fields)[:limit]

    async def retry_jobs(self, job_ids: Sequence[str], *, strict: bool = False) -> int:
        """Put failed jobs back to waiting; returns how many were. With ``strict``, a job
        that is missing or not failed raises instead of being skipped (the others are
        retried all the same). The ids go in atomic calls of 1,000, in one round trip."""
        script = SCRIPTS["retry_jobs"]
        keys = script.keys_of(self.keys)
        per_call = 1000  # ids per script call at most; all calls go in one round trip
        batch = Batch()
        for start in range(0, len(job_ids), per_call):
            batch.add(script, keys, [self.keys.job_prefix, self.events_maxlen, self._op_key(),
                                     *job_ids[start:start + per_call]])
        if not batch:
            return 0
        with wrap_redis_errors(f"retry jobs of queue {self.name!r}"):
            results = await batch.execute(self.client)
        statuses = [s for chunk in results for s in chunk]
        if strict:
            for job_id, status in zip(job_ids, statuses, strict=True):
                error = status_error(int(status), job_id, "retry")
                if error is not None:
                    raise error
        return sum(1 for s in statuses if s == 1)

    async def retry_failed(self) -> int:
        """Put every failed job back to waiting; returns how many."""
        with wrap_redis_errors(f"retry jobs of queue {self.name!r}"):
            total = await self.client.zcard(self.keys.failed)
        retried = 0
        for _ in range(total // 500 + 2):  # bounded: an id that cannot move stays put
            ids = await self.job_ids(JobState.FAILED, limit=500)
            if not ids:
                break
            retried += await self.retry_jobs(ids)
        return retried
