"""The producer API: enqueue jobs, read them, wait for results, manage the queue."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, overload

import msgspec

from .. import codec
from ..connection import AnyRedis, blocking_client, check_client, client_from_url
from ..errors import (
    ConfigurationError,
    JobNotFound,
    JobStateError,
    NotReplicated,
    status_error,
    wrap_redis_errors,
)
from ..keys import QueueKeys
from ..options import JobOptions, Retention
from ..scripts import SCRIPTS, Batch
from ..scripts.direct import DirectLine
from ..states import FINISHED, STATE_SETS, JobState, state_key, state_keys
from .events import Event, ResultListener, iterate
from .headers import HEADER_SOURCES, collect_headers
from .job import (
    INFO_FIELDS,
    LOG_LINES,
    Dependency,
    Job,
    JobInfo,
    JobLogLine,
    decode_dependency,
)
from .job_ids import check_job_id, new_job_id
from .task import Task, TaskCall

if TYPE_CHECKING:
    from ..schedules.store import Schedules
    from .flows import Flow

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_EVENTS_MAXLEN: Final = 10_000
_CHUNK = 500  # jobs per add_jobs call in a bulk enqueue


class QueueLimits(msgspec.Struct, frozen=True, kw_only=True):
    """A queue's limits (``None``: that limit is off); see :meth:`Queue.set_limits`."""

    max_starts: int | None = None
    per_s: float | None = None
    max_active: int | None = None
    #: the same three for each group (``JobOptions(group=...)``) on its own
    group_max_starts: int | None = None
    group_per_s: float | None = None
    group_max_active: int | None = None


class GroupLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits of one group (``None``: that limit is off); see
    :meth:`Queue.set_group_limits`."""

    max_starts: int | None = None
    per_s: float | None = None
    max_active: int | None = None


def _rate_fields(max_starts: int | None, per_s: float | None,
                 max_active: int | None) -> tuple[int | None, int | None, int | None]:
    """Check one set of limits; returns (max_starts, per_s in ms, max_active)."""
    if (max_starts is None) != (per_s is None):
        raise ConfigurationError("give max_starts and per_s together")
    rate_ms = None
    if max_starts is not None and per_s is not None:
        _check_limit("max_starts", max_starts, 1, 100_000)
        if isinstance(per_s, bool) or not isinstance(per_s, int | float) \
                or not 0.001 <= per_s <= 86_400:
            raise ConfigurationError(f"per_s must be from 0.001 to 86400, not {per_s!r}")
        rate_ms = max(1, round(per_s * 1000))
    if max_active is not None:
        _check_limit("max_active", max_active, 1, 1_000_000)
    return max_starts, rate_ms, max_active


_LIMIT_FIELDS = ("rate_max", "rate_ms", "max_active", "g_rate_max", "g_rate_ms", "g_max_active")


def _check_group(group: object) -> None:
    if not isinstance(group, str) or not 1 <= len(group.encode()) <= 200:
        raise ConfigurationError(f"a group must be a string of 1-200 bytes, not {group!r}")


def _check_limit(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be an integer from {low} to {high},"
                                 f" not {value!r}")
class Queue:
    """A named queue on Redis. Owns no connection unless made with :meth:`from_url`.

    ``defaults`` are job options used where neither the job nor its task says
    otherwise; ``retention`` bounds the finished jobs kept (applied by workers).
    """

    def __init__(
        self,
        client: AnyRedis,
        *,
        name: str,
        defaults: JobOptions | None = None,
        retention: Retention | None = None,
        events_maxlen: int = DEFAULT_EVENTS_MAXLEN,
        replicas: int = 0,
        replica_timeout_s: float = 1.0,
        dead_letter: str | Queue | None = None,
    ) -> None:
        check_client(client)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= 16:
            raise ConfigurationError(f"replicas must be an integer 0..16, got {replicas!r}")
        if isinstance(replica_timeout_s, bool) or not isinstance(replica_timeout_s, int | float) \
                or not 0.001 <= replica_timeout_s <= 60:
            raise ConfigurationError(
                f"replica_timeout_s must be 0.001..60 seconds, got {replica_timeout_s!r}")
        if (isinstance(events_maxlen, bool) or not isinstance(events_maxlen, int)
                or not 100 <= events_maxlen <= 2**63 - 1):
            raise ConfigurationError(
                f"events_maxlen must be an integer of at least 100, got {events_maxlen!r}"
            )
        if defaults is not None and not isinstance(defaults, JobOptions):
            raise ConfigurationError(
                f"defaults must be JobOptions, not {type(defaults).__name__}"
            )
        if retention is not None and not isinstance(retention, Retention):
            raise ConfigurationError(
                f"retention must be a Retention, not {type(retention).__name__}"
            )
        if defaults is not None and (
            defaults.job_id is not None or defaults.delay_s is not None
            or defaults.run_at is not None
        ):
            raise ConfigurationError("queue defaults cannot set job_id, delay_s or run_at")
        self.client = client
        self.keys = QueueKeys.for_queue(name)
        self._dead: Queue | None = None
        self._dead_made = False  # made by dead_letter_queue(): closed with this queue
        dead_name: str | None = None
        if isinstance(dead_letter, Queue):
            self._dead = dead_letter
            dead_name = dead_letter.keys.queue
        elif dead_letter is not None:
            dead_name = QueueKeys.for_queue(dead_letter).queue  # a valid queue name
        if dead_name == name:
            raise ConfigurationError("a queue cannot be its own dead-letter queue")
        #: the name of the queue that jobs failed for good are moved to (None: they stay
        #: failed here); given as a Queue, its retention and replicas apply there
        self.dead_letter: str | None = dead_name
        self.name = name
        self.defaults = defaults or JobOptions()
        self.retention = retention or Retention()
        self.events_maxlen = events_maxlen
        #: replicas that must confirm an enqueue (and a worker's outcomes) before it counts
        self.replicas = replicas
        self.replica_timeout_ms = max(1, round(replica_timeout_s * 1000))
        self._owns_client = False
        self._blocking: AnyRedis | None = None
        self._listener: ResultListener | None = None
        self._closed = False
        # enqueues that arrive while one is on its way to Redis go together in the next
        # round trip (natural batching: a lone call is sent at once, never held back)
        self._sending = False
        self._sender: asyncio.Task[None] | None = None
        self._queued: list[tuple[list[list[Any]], tuple[str, ...],
                                 asyncio.Future[list[Any]]]] = []
        # one connection of the client's pool for the enqueue round trips, without
        # redis-py's per-call layers (a plain client, no replicas to wait for)
        self._line = DirectLine(client) if not replicas and DirectLine.suits(client) else None
        # add_jobs keeps its reply under <call_prefix><producer>:<n> for the n-th call of
        # this producer's last round trip: a round trip sent again after a lost reply gets
        # the first replies (and adds nothing that has run and been deleted since)
        self._memo = f"{self.keys.call_prefix}{secrets.token_hex(6)}:"
        self._round_trips = 0

    @classmethod
    def from_url(cls, url: str | None = None, *, name: str, **kwargs: Any) -> Queue:
        """A queue with its own connection pool to ``url`` (default: the ``REDIS_URL``
        environment variable); close it (or use ``async with``)."""
        if url is None:
            url = os.environ.get("REDIS_URL")
            if not url:
                raise ConfigurationError(
                    f"queue {name!r}: give a Redis URL or set the REDIS_URL environment variable")
        client_kwargs = kwargs.pop("client_kwargs", {})
        queue = cls(client_from_url(url, **client_kwargs), name=name, **kwargs)
        queue._owns_client = True
        return queue

    def __repr__(self) -> str:
        return f"<Queue {self.name}>"

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the result listener and close the connections this queue owns."""
        if self._closed:
            return
        self._closed = True
        if self._line is not None:
            await self._line.close()
        if self._listener is not None:
            await self._listener.close()
        if self._dead is not None and self._dead_made:
            await self._dead.close()  # made here on this client: its own pools only
        if self._blocking is not None and self._blocking is not self.client:
            await self._blocking.aclose()
        if self._owns_client:
            await self.client.aclose()

    def blocking_client(self) -> AnyRedis:
        """A client on its own small pool, for blocking reads."""
        if self._blocking is None:
            self._blocking = blocking_client(self.client)
        return self._blocking

    # ----------------------------------------------------------------- enqueue

    @overload
    async def enqueue(self, task: Task[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Job[R]: ...
    @overload
    async def enqueue(self, task: str, /, *args: Any, **kwargs: Any) -> Job[Any]: ...
    async def enqueue(self, task: Task[Any, Any] | str, /, *args: Any, **kwargs: Any) -> Job[Any]:
        """Enqueue one job and return its handle (the existing job's when its id exists).

        ``enqueue(send_email, "a@b.c", subject="hi")`` checks the arguments against
        the function now. Options come from ``send_email.options(delay_s=5)``; when
        enqueueing by name, ``options=JobOptions(...)`` is the one reserved keyword.
        """
        if isinstance(task, Task):
            call: TaskCall[Any] = task.call(*args, **kwargs)
        elif isinstance(task, str):
            options = kwargs.pop("options", None)
            if options is not None and not isinstance(options, JobOptions):
                raise ConfigurationError(
                    f"options must be JobOptions, not {type(options).__name__}"
                )
            call = TaskCall(task, args, kwargs, options)
        else:
            raise ConfigurationError(f"enqueue needs a Task or a task name, not {task!r}")
        return (await self.enqueue_many([call]))[0]

    async def enqueue_many(self, calls: Iterable[TaskCall[Any]]) -> list[Job[Any]]:
        """Enqueue many jobs in one round trip; each job is added whole or not at all.

        Calls are grouped in chunks of 500 jobs, one atomic script call per chunk.
        Returns one handle per call, in order (an existing id yields the existing job).
        """
        argv_rows: list[list[Any]] = []
        ids: list[str] = []
        headers = collect_headers() if HEADER_SOURCES else None
        for call in calls:
            ids.append(self._job_argv(call, argv_rows, headers))
        if not ids:
            return []
        statuses = await self._add_rows(argv_rows, tuple(ids))
        jobs: list[Job[Any]] = []
        mine = new_job_id.prefix  # ids made here are unique: one found existing was added
        for job_id, status in zip(ids, statuses, strict=True):  # by this call, sent again
            if isinstance(status, bytes):  # the job an open dedup window names
                holder = status.decode()  # (this very job when a lost reply was re-sent)
                jobs.append(Job(self, holder, existed=holder != job_id))
                continue
            existed = status == 0 and not job_id.startswith(mine)
            jobs.append(Job(self, job_id, existed=existed))
        return jobs

    async def _add_rows(self, rows: list[list[Any]], ids: tuple[str, ...]) -> list[Any]:
        """add_jobs for these rows; returns their statuses, in order.

        Natural batching: a call made while no other is on its way goes at once; calls made
        meanwhile (concurrent ``enqueue()`` of a web app's requests) wait for it and then
        go together, in one round trip (one add_jobs call per 500 jobs), sent by a task
        of their own so that the first caller is not held back. Each caller gets its own
        statuses, or the error of the round trip its jobs were in."""
        if self._sending:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._queued.append((rows, ids, future))
            return await future
        self._sending = True
        try:
            statuses, batch = await self._send_rows(rows)
        finally:
            if self._queued:
                self._sender = asyncio.get_running_loop().create_task(self._send_queued())
            else:
                self._sending = False
        self.check_replicated(batch, "enqueue", ids)
        return statuses

    async def _send_queued(self) -> None:
        """Send what waited, all of it per round trip, until nothing waits."""
        try:
            while self._queued:
                waiting, self._queued = self._queued, []
                rows = [row for group, _, _ in waiting for row in group]
                try:
                    statuses, batch = await self._send_rows(rows)
                except BaseException as e:  # each caller gets the round trip's error
                    for _, _, future in waiting:
                        if future.done():
                            continue
                        if isinstance(e, asyncio.CancelledError):
                            future.cancel()
                        else:
                            future.set_exception(e)
                    if not isinstance(e, Exception):
                        raise
                    continue
                start = 0
                for group, group_ids, future in waiting:
                    mine = statuses[start:start + len(group)]
                    start += len(group)
                    if future.done():
                        continue
                    try:
                        self.check_replicated(batch, "enqueue", group_ids)
                    except NotReplicated as e:
                        future.set_exception(e)
                    else:
                        future.set_result(mine)
        finally:
            self._sending = False

    async def _send_rows(self, rows: list[list[Any]]) -> tuple[list[Any], Batch]:
        batch = self.batch()
        script = SCRIPTS["add_jobs"]
        keys = script.keys_of(self.keys)
        self._round_trips += 1
        call_id = str(self._round_trips)
        memo, head = self._memo, [self.keys.job_prefix, self.events_maxlen]
        tail = [self.keys.dedup_prefix, self.keys.group_prefix]
        with wrap_redis_errors(f"enqueue to queue {self.name!r}"):
            if self._line is not None and len(rows) <= _CHUNK:  # one call: the lean path
                return await self._line.call(
                    script, keys, [*head, codec.pack(rows), *tail, memo + "0", call_id]), batch
            for n, start in enumerate(range(0, len(rows), _CHUNK)):
                batch.add(script, keys, [*head, codec.pack(rows[start:start + _CHUNK]), *tail,
                                         f"{memo}{n}", call_id])
            results = await batch.execute(self.client)
        return [s for chunk in results for s in chunk], batch

    def batch(self) -> Batch:
        """A batch of script calls that waits for this queue's ``replicas``."""
        return Batch(replicas=self.replicas, replica_timeout_ms=self.replica_timeout_ms)

    def check_replicated(self, batch: Batch, what: str, job_ids: tuple[str, ...] = ()) -> None:
        """Raise :class:`NotReplicated` when fewer replicas than asked confirmed ``batch``."""
        if self.replicas and (batch.acked or 0) < self.replicas:
            raise NotReplicated(
                f"{what} on queue {self.name!r}: applied on the primary, but {batch.acked or 0}"
                f" of {self.replicas} replica(s) confirmed it within"
                f" {self.replica_timeout_ms} ms; a failover now could lose it (retrying with"
                " the same job ids is safe)", acked=batch.acked or 0, wanted=self.replicas,
                job_ids=job_ids)

    def _job_argv(self, call: TaskCall[Any], out: list[list[Any]],
                  headers: dict[str, str] | None) -> str:
        if call.task is not None:
            call.task.check_arguments(call.args, call.kwargs)
        opts = call.options.merged_over(self.defaults)
        # the options' types and ranges were checked when the JobOptions was made
        job_id = (new_job_id() if opts.job_id is None
                  else check_job_id(opts.job_id, enqueue=True))
        payload = codec.encode_args(call.name, call.args, call.kwargs, headers)
        delay_ms = -1 if opts.delay_s is None else int(opts.delay_s * 1000)
        due_at_ms = -1 if opts.run_at is None else int(opts.run_at.timestamp() * 1000)
        stored = JobOptions(backoff=opts.backoff, timeout_s=opts.timeout_s,
                            retention=opts.retention)
        row = [job_id, call.name, payload, codec.encode_options(stored), opts.priority or 0,
               opts.attempts or 1, delay_ms, due_at_ms]
        if opts.dedup_key is not None or opts.expires_s is not None or opts.group is not None:
            extras: dict[str, Any] = {}
            if opts.dedup_key is not None:
                assert opts.dedup_ttl_s is not None  # JobOptions checks it
                extras["dedup"] = opts.dedup_key
                extras["ttl_ms"] = max(1, int(opts.dedup_ttl_s * 1000))
                if opts.debounce:
                    extras["debounce"] = 1
            if opts.expires_s is not None:
                extras["expires_ms"] = max(1, int(opts.expires_s * 1000))
            if opts.group is not None:
                extras["group"] = opts.group
            row.append(extras)
        out.append(row)
        return job_id

    async def enqueue_flow(self, flow: Flow) -> list[Job[Any]]:
        """Enqueue a :class:`Flow` (jobs that wait for other jobs); returns one handle per
        step, in order (an existing id yields the existing job, and a flow enqueued again
        adds only what is missing).

        The steps go in order, in atomic chunks (500 jobs or about 20,000 edges each), so a
        10,000-job fan-out is many short script calls, not one long one. A job whose
        dependencies are all finished already is waiting at once; the others are
        ``blocked`` until the last of them finishes. A dependency that names no job (in
        the flow before it, or in this queue) is refused with the whole chunk.
        """
        from .flows import enqueue_flow

        return await enqueue_flow(self, flow)

    # ------------------------------------------------------------------ reading

    def job(self, job_id: str) -> Job[Any]:
        """A handle on a job by id (nothing is read until you ask)."""
        return Job(self, check_job_id(job_id))

    async def job_info(self, job_id: str) -> JobInfo | None:
        """The job's record, or None when there is no such job."""
        with wrap_redis_errors(f"read job {job_id!r}"):
            values: list[bytes | None] = await self.client.hmget(  # type: ignore[assignment]
                self.keys.job(job_id), INFO_FIELDS
            )
        if values[2] is None:
            return None
        return JobInfo.from_fields(self.name, job_id, values)

    async def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state."""
        pipe = self.client.pipeline(transaction=False)
        for key in state_keys(self.keys):
            pipe.zcard(key)
        pipe.hget(self.keys.meta, "parked")  # waiting jobs parked by group limits
        with wrap_redis_errors(f"count jobs of queue {self.name!r}"):
            values = await pipe.execute()
        counts = dict(zip(STATE_SETS, values[:-1], strict=True))
        counts[JobState.WAITING] += max(int(values[-1] or 0), 0)
        return counts

    async def job_ids(self, state: JobState, *, offset: int = 0, limit: int = 100,
                      newest_first: bool = False) -> list[str]:
        """Ids of jobs in one state, a page at a time (waiting: in run order)."""
        if offset < 0 or not 1 <= limit <= 1000:
            raise ConfigurationError("offset must be >= 0 and limit between 1 and 1000")
        key = state_key(self.keys, JobState(state))
        with wrap_redis_errors(f"list {state} jobs of queue {self.name!r}"):
            ids: list[bytes] = await self.client.zrange(  # type: ignore[assignment]
                key, offset, offset + limit - 1, desc=newest_first
            )
        return [i.decode() for i in ids]

    async def wait_finished(self, job_id: str, timeout: float | None) -> JobInfo | None:
        """Wait until the job is completed or failed; None on timeout."""
        if timeout is not None and timeout <= 0:  # just look
            now = await self.job_info(job_id)
            if now is None:
                raise JobNotFound(job_id, "result", "no such job (removed, or expired)")
            return now if now.state in FINISHED else None
        if self._listener is None:
            self._listener = ResultListener(
                self.blocking_client(), self.keys.events, self._job_infos,
                lambda info: info.state in FINISHED,
            )
        listener = self._listener
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                with wrap_redis_errors(f"wait for job {job_id!r}"):
                    await listener.start()
            remaining = None if deadline is None else max(deadline - loop.time(), 0)
            with wrap_redis_errors(f"wait for job {job_id!r}"):
                info: JobInfo | None = await listener.wait(job_id, remaining)
        except TimeoutError:
            return None
        if info is None:
            raise JobNotFound(job_id, "result", "no such job (removed, or expired)")
        return info

    async def _job_infos(self, job_ids: list[str]) -> list[JobInfo | None]:
        """Records of many jobs in one round trip (None for a missing job)."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.keys.job(job_id), INFO_FIELDS)
        rows = await pipe.execute()
        return [None if row[2] is None else JobInfo.from_fields(self.name, job_id, row)
                for job_id, row in zip(job_ids, rows, strict=True)]

    def events(self, since: str = "$") -> AsyncIterator[Event]:
        """Iterate over the queue's events from ``since`` ("$": new ones; "0": all kept)."""
        return iterate(self.blocking_client(), self.keys.events, since)

    async def is_paused(self) -> bool:
        with wrap_redis_errors(f"read queue {self.name!r}"):
            return bool(await self.client.hexists(self.keys.meta, "paused"))

    # ------------------------------------------------------------------ changes

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

    async def pause(self) -> None:
        """Workers stop taking jobs from this queue (running ones finish); enqueue goes on."""
        with wrap_redis_errors(f"pause queue {self.name!r}"):
            await self.client.hset(self.keys.meta, "paused", 1)

    async def resume(self) -> None:
        with wrap_redis_errors(f"resume queue {self.name!r}"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hdel(self.keys.meta, "paused")
            pipe.zadd(self.keys.marker, {"w": 0})
            await pipe.execute()

    async def set_limits(self, *, max_starts: int | None = None, per_s: float | None = None,
                         max_active: int | None = None, group_max_starts: int | None = None,
                         group_per_s: float | None = None,
                         group_max_active: int | None = None) -> None:
        """Limit this queue across all its workers (stored in Redis; replaces earlier limits).

        ``max_starts`` per ``per_s`` seconds: at most that many jobs start in any window of
        that length (a sliding window, by Redis's clock; retries count as starts).
        ``max_active``: at most that many jobs of the queue run at once. A worker held back
        by the rate limit sleeps until the window lets the next job start (no polling); one
        held back by ``max_active`` takes the next job when one of its own finishes, and
        looks again at least every 5 s. Jobs held back stay waiting, in order.

        ``group_max_starts`` per ``group_per_s`` and ``group_max_active``: the same limits
        for each group (``JobOptions(group=...)``) on its own, e.g. 10 calls per second per
        customer account; :meth:`set_group_limits` gives one group limits of its own. A job
        whose group has no room is parked: set aside with its group's other waiting jobs,
        which keep their places and return to the line as the group gets room (other
        groups' jobs run meanwhile). Parked jobs count as waiting.
        """
        rate_max, rate_ms, active = _rate_fields(max_starts, per_s, max_active)
        g_rate_max, g_rate_ms, g_active = _rate_fields(group_max_starts, group_per_s,
                                                       group_max_active)
        values = (rate_max, rate_ms, active, g_rate_max, g_rate_ms, g_active)
        fields: dict[Any, Any] = {  # redis-py types the mapping invariantly
            name: value for name, value in zip(_LIMIT_FIELDS, values, strict=True)
            if value is not None}
        with wrap_redis_errors(f"set the limits of queue {self.name!r}"):
            pipe = self.client.pipeline(transaction=True)  # one slot: fine on Cluster too
            pipe.hdel(self.keys.meta, *_LIMIT_FIELDS)
            if fields:
                pipe.hset(self.keys.meta, mapping=fields)
            pipe.zunionstore(self.keys.parked, {self.keys.parked: 0})  # parked: look again
            pipe.zadd(self.keys.marker, {"w": 0})  # idle workers look again
            await pipe.execute()

    async def limits(self) -> QueueLimits:
        """The queue's limits as :meth:`set_limits` stored them."""
        with wrap_redis_errors(f"read the limits of queue {self.name!r}"):
            raw = await self.client.hmget(self.keys.meta, list(_LIMIT_FIELDS))
        v = [None if x is None else int(x) for x in raw]
        return QueueLimits(
            max_starts=v[0], per_s=None if v[1] is None else v[1] / 1000, max_active=v[2],
            group_max_starts=v[3], group_per_s=None if v[4] is None else v[4] / 1000,
            group_max_active=v[5])

    async def set_group_limits(self, group: str, *, max_starts: int | None = None,
                               per_s: float | None = None,
                               max_active: int | None = None) -> None:
        """Give one group limits of its own, in place of the queue's group limits
        (:meth:`set_limits`); with no limit given, the group goes back to those. A limit
        left out is off for this group."""
        _check_group(group)
        rate_max, rate_ms, active = _rate_fields(max_starts, per_s, max_active)
        text = ":".join("" if x is None else str(x) for x in (active, rate_max, rate_ms))
        with wrap_redis_errors(f"set the limits of group {group!r} of queue {self.name!r}"):
            pipe = self.client.pipeline(transaction=True)
            if text == "::":
                pipe.hdel(self.keys.group_limits, group)
            else:
                pipe.hset(self.keys.group_limits, group, text)
                pipe.hset(self.keys.meta, "g_over", 1)  # fetch_jobs reads group-limits
            pipe.zadd(self.keys.parked, {group: 0}, xx=True)  # parked: look again
            pipe.zadd(self.keys.marker, {"w": 0})
            await pipe.execute()

    async def group_limits(self, group: str) -> GroupLimits | None:
        """The limits :meth:`set_group_limits` gave this group (None: it has the
        queue's group limits)."""
        _check_group(group)
        with wrap_redis_errors(f"read the limits of group {group!r} of queue {self.name!r}"):
            raw = await self.client.hget(self.keys.group_limits, group)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        active, rate_max, rate_ms = (int(x) if x else None for x in text.split(":"))
        return GroupLimits(max_starts=rate_max, max_active=active,
                           per_s=None if rate_ms is None else rate_ms / 1000)

    def dead_letter_queue(self) -> Queue | None:
        """The :attr:`dead_letter` queue (None without one): the Queue given, or one of
        that name on this queue's client, with the default retention."""
        if self.dead_letter is not None and self._dead is None:
            self._dead = Queue(self.client, name=self.dead_letter)
            self._dead_made = True
        return self._dead

    async def redrive(self, *, task: str | None = None, error: str | None = None,
                      limit: int | None = None) -> int:
        """This queue being a dead-letter queue: send its jobs back to their origin
        queues as new attempts (all, those of ``task``, or those whose error contains
        ``error``; at most ``limit``), in chunks of 500. Returns how many went back."""
        from .dead_letter import redrive

        return await redrive(self, task=task, error=error, limit=limit)

    async def drain(self) -> int:
        """Delete every waiting and delayed job; returns how many."""
        return await self._loop_script("drain_queue", [self.keys.group_prefix,
                                                       self.events_maxlen])

    async def obliterate(self, *, force: bool = False) -> int:
        """Delete the whole queue: jobs of every state, events, settings, schedules,
        metrics, worker records. Refused while jobs are active unless ``force``.
        Returns the number of jobs deleted."""
        deleted = await self._loop_script("obliterate_queue", ["1" if force else "0",
                                                               self.keys.group_prefix])
        with wrap_redis_errors(f"obliterate {self.name!r}"):  # what is left: a few keys
            rest = [k async for k in self.client.scan_iter(match=self.keys.base + "*",
                                                            count=1000)]
            for start in range(0, len(rest), 500):
                await self.client.delete(*rest[start:start + 500])
        return deleted

    async def _loop_script(self, name: str, extra: list[Any]) -> int:
        script = SCRIPTS[name]
        keys = script.keys_of(self.keys)
        total = 0
        while True:
            with wrap_redis_errors(f"{name} {self.name!r}"):
                n = int(await script(self.client, keys, [self.keys.job_prefix, 1000, *extra]))
            if n < 0:
                error = status_error(n, "*", name.replace("_queue", ""))
                assert error is not None
                raise error
            if n == 0:
                return total
            total += n

    @property
    def schedules(self) -> Schedules:
        """This queue's schedules: ``upsert``, ``remove``, ``list``, ``run_now``
        (see docs/schedules.md)."""
        from ..schedules.store import Schedules

        return Schedules(self)

    async def now(self) -> datetime:
        """Redis's clock (the one that decides due jobs and leases)."""
        from datetime import UTC
        with wrap_redis_errors("read Redis TIME"):
            seconds, micros = await self.client.time()
        return datetime.fromtimestamp(seconds + micros / 1e6, tz=UTC)
