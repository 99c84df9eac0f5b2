"""The producer API: enqueue jobs, read them, wait for results, manage the queue."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, overload

from ..connection import AnyRedis, blocking_client, check_client, client_from_url
from ..errors import (
    ConfigurationError,
    JobNotFound,
    NotReplicated,
    status_error,
    wrap_redis_errors,
)
from ..keys import QueueKeys
from ..options import JobOptions, Retention
from ..scripts import SCRIPTS, Batch
from ..states import FINISHED, STATE_SETS, JobState, state_key, state_keys
from .events import Event, ResultListener, iterate
from .headers import HEADER_SOURCES, collect_headers
from .job import (
    INFO_FIELDS,
    Job,
    JobInfo,
)
from .job_control import JobControl
from .job_ids import check_job_id, new_job_id
from .limits import LimitMethods
from .sending import RowSending
from .task import Task, TaskCall

if TYPE_CHECKING:
    from ..schedules.store import Schedules
    from .flows import Flow

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_EVENTS_MAXLEN: Final = 10_000


class Queue(RowSending, JobControl, LimitMethods):
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
        self._init_sending()

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
        with wrap_redis_errors("read Redis TIME"):
            seconds, micros = await self.client.time()
        return datetime.fromtimestamp(seconds + micros / 1e6, tz=UTC)
