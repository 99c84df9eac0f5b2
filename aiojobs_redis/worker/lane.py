"""One queue served by a worker: the fetch loop and outcome batching (its idle wait is
``idle_wait.py``).

Steady state: every round trip completes (or fails) all the jobs that finished
since the last one and fetches as many new jobs as there are free slots, in one
pipeline. When the queue is empty, one blocking BZPOPMIN on the queue's marker
(a separate connection) wakes the lane when a job is added, or when the next
delayed job is due.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import codec
from .._tasks import cancel_and_wait
from ..ops.metrics import add_outcomes
from ..options import Retention
from ..producer.queue import Queue
from ..scripts import SCRIPTS, Batch
from ..scripts.direct import DirectLine
from .context import JobContext
from .execution import CANCELLED, NO_RETRY, PLAIN, WAIT, FetchedJob, Outcome
from .idle_wait import IdleWait
from .outcome_log import DeadLetters, log_outcome

if TYPE_CHECKING:
    from .context import WorkerContext
    from .execution import Executor

log = logging.getLogger("aiojobs_redis.worker")

_PROMOTE_LIMIT = 1000
_MAX_FETCH = 1000


class Pause(Protocol):
    """The backoff between attempts while Redis is away."""

    async def sleep(self) -> None: ...
    def reset(self) -> None: ...


class LaneHost(Protocol):
    """What a lane needs of the worker that runs it: the shared slots, the executor, the
    lease length and identity it fetches with, the outage backoff, the counters."""

    @property
    def id(self) -> str: ...
    @property
    def lease_ms(self) -> int: ...
    @property
    def stopping(self) -> bool: ...
    @property
    def backoff(self) -> Pause: ...
    @property
    def executor(self) -> Executor: ...
    @property
    def context(self) -> WorkerContext: ...
    def reserve(self, lane: Lane, n: int) -> int: ...
    def release(self, n: int) -> None: ...
    def free_slots(self) -> int: ...
    def count_outcome(self, ok: bool) -> None: ...
    @property
    def log_tracebacks(self) -> bool: ...


class _Trip:
    """The calls of one round trip and what to do with their replies."""

    __slots__ = ("batch", "fetches", "sent")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.sent: list[tuple[int, list[Outcome]]] = []  # (call index, its outcomes)
        self.fetches: list[tuple[int, int]] = []  # (call index, jobs wanted)

    def extend(self, other: _Trip) -> None:
        offset = len(self.batch.calls)
        self.batch.calls.extend(other.batch.calls)
        self.sent += [(i + offset, group) for i, group in other.sent]
        self.fetches += [(i + offset, n) for i, n in other.fetches]


class Running:
    """A job this lane is running."""

    __slots__ = ("cancelled", "job", "lost", "returned", "task")

    def __init__(self, job: FetchedJob) -> None:
        self.job = job
        self.task: asyncio.Task[None] | None = None
        self.cancelled = False  # its cancel was requested: report it cancelled
        self.lost = False  # the lease was lost: drop the outcome
        self.returned = False  # handed back at shutdown: drop the outcome


def _retention_args(retention: Retention, ok: bool) -> tuple[int, int]:
    count = retention.completed_count if ok else retention.failed_count
    age = retention.completed_age_s if ok else retention.failed_age_s
    return (-1 if count is None else count, -1 if age is None else int(age * 1000))


class Lane:
    def __init__(self, worker: LaneHost, queue: Queue, *, burst: bool = False) -> None:
        self.worker = worker
        self.burst = burst  # end when the queue has nothing waiting, delayed or running
        self.queue = queue
        self.running: dict[str, Running] = {}
        self.outcomes: list[Outcome] = []
        self.wake = asyncio.Event()
        self.idle = False  # the last fetch found the queue empty
        self.next_due_ms = -1
        self.held_back = False  # the last fetch was held back by the queue's max_active
        self.fetching = True
        self._waker: asyncio.Task[None] | None = None
        self._dead = DeadLetters(queue, worker.executor.registry)
        self._outage = False
        self._unsent: _Trip | None = None  # a round trip whose reply was lost, to send again
        # jobs that expired before a fetch took them obey the failed-job retention
        self._expired_keep = _retention_args(queue.retention, ok=False)
        self._unreplicated = False
        # the round trips go on a connection of the client's pool of their own, past
        # redis-py's per-call layers (a plain client, no replicas to wait for)
        self._line = (DirectLine(queue.client)
                      if not queue.replicas and DirectLine.suits(queue.client) else None)
        self._idle = IdleWait(queue, worker.id, self._outage_pause)

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            if self._line is not None:
                await self._line.close()
            await self._idle.close()

    async def _loop(self) -> None:
        worker = self.worker
        while True:
            want = 0
            if self.fetching and not worker.stopping and self._unsent is None:
                if self.idle and self._waker is not None and self._waker.done():
                    self._waker = None
                    self.idle = False
                if not self.idle:
                    want = worker.reserve(self, _MAX_FETCH)
            if want == 0 and not self.outcomes and self._unsent is None:
                if worker.stopping and not self.running:
                    break
                if self.idle and self._waker is None and self.fetching and not worker.stopping \
                        and worker.free_slots() > 0:
                    self._waker = asyncio.create_task(self._wait_for_work())
                await self.wake.wait()
                self.wake.clear()
                continue
            try:
                flushed = bool(self.outcomes) or self._unsent is not None
                fetched = want > 0 or (self._unsent is not None and bool(self._unsent.fetches))
                got = await self._round_trip(want)
                if self.burst and fetched and not got and not self.running \
                        and not self.outcomes and self.next_due_ms < 0:
                    break
                if flushed and (self.burst or (self.held_back and not fetched)):
                    # look again: a retry may have made work (burst: before ending), and a
                    # finished job freed room under the queue's max_active
                    self.idle = False
            # the failed round trip is kept whole (its fetch with the slots it reserved)
            # and sent again first, after a pause
            except (RedisConnectionError, RedisTimeoutError, OSError) as e:
                await self._outage_pause(f"Redis unreachable: {e}")
            except ResponseError as e:
                await self._outage_pause(f"Redis refused a command: {e}")
        await self.stop_waker()

    async def _outage_pause(self, reason: str) -> None:
        if not self._outage:
            self._outage = True
            log.error("queue %s: %s; retrying with backoff (logged once per outage)",
                      self.queue.name, reason)
        await self.worker.backoff.sleep()

    async def _round_trip(self, want: int) -> int:
        """Report outcomes and fetch up to ``want`` jobs; returns how many were fetched.

        A round trip that failed (its reply lost: an outage, a restart) is sent again
        verbatim before anything else: the same outcome rows, the same metrics batch id,
        the same fetch nonce, so that the scripts recognise a call they already ran
        (DUPLICATE outcomes, a metrics batch counted once, the same jobs handed out)."""
        q = self.queue
        if self._unsent is not None:
            trip, self._unsent = self._unsent, None
            if self.outcomes or want:  # new work rides along, in calls of its own
                trip.extend(self._build(want))
        else:
            trip = self._build(want)
        try:
            results = await trip.batch.execute(q.client, self._line)
        except BaseException:
            self._unsent = trip  # its fetch keeps the slots it reserved
            raise
        if self._outage:
            self._outage = False
            log.warning("queue %s: Redis is back", q.name)
        self.worker.backoff.reset()
        if trip.batch.reordered:
            self.idle = False  # a call ran before an earlier one: what the fetch saw is stale
        if trip.batch.replicas and (trip.batch.acked or 0) < trip.batch.replicas:
            if not self._unreplicated:
                self._unreplicated = True
                log.warning("queue %s: outcomes recorded on the primary but confirmed by %d of"
                            " %d replica(s); a failover now could make those jobs run again"
                            " (logged once until replicas confirm again)", q.name,
                            trip.batch.acked or 0, trip.batch.replicas)
        elif trip.batch.replicas:
            self._unreplicated = False
        dropped: dict[int, list[Outcome]] = {}
        dead: dict[str, list[str]] = {}
        for index, group in trip.sent:
            for o, status in zip(group, results[index], strict=True):
                if not self._log_outcome(o, int(status)):
                    dropped.setdefault(int(status), []).append(o)
                elif status == 1 and not o.ok and o.kind == PLAIN:
                    target = self._dead.target_of(o.job.task)
                    if target is not None:
                        dead.setdefault(target, []).append(o.job.id)
        for status, lost in dropped.items():  # one line per round trip, not per job
            what = ("lease lost: another worker owns them now" if status == -2 else
                    "the jobs vanished (removed, or the queue wiped)")
            log.warning("queue %s: the outcome of %d job(s) is dropped, %s: %s", q.name,
                        len(lost), what, _some(f"{o.job.task}:{o.job.id}" for o in lost))
        for target, ids in dead.items():
            await self._dead.move(target, ids)
        got = 0
        for index, wanted in trip.fetches:
            reply = results[index]
            due = int(reply[0])
            # -2 - ms: the queue's max_active held jobs back (a finished job frees room)
            self.held_back = due <= -2
            self.next_due_ms = -1 if due == -2 else -2 - due if due < -2 else due
            width = FetchedJob.WIDTH
            n = (len(reply) - 1) // width
            got += n
            self.worker.release(wanted - n)
            self.idle = n < wanted
            for i in range(1, len(reply), width):
                job = FetchedJob(*reply[i:i + width])
                if job.id not in self.running:  # a replayed fetch hands out the same jobs
                    self._start(job)
        return got

    def _build(self, want: int) -> _Trip:
        """The calls of one round trip: this lane's outcomes (and their metrics), a fetch."""
        q = self.queue
        k = q.keys
        outcomes, self.outcomes = self.outcomes, []
        trip = _Trip(q.batch() if outcomes else Batch())  # outcomes wait for q.replicas
        groups: dict[tuple[str, tuple[int, int]], list[Outcome]] = {}
        for o in outcomes:
            retention = _retention_args(o.retention or q.retention, o.ok)
            groups.setdefault(("complete_jobs" if o.ok else "fail_jobs", retention), []).append(o)
        per_call = 1000  # outcome rows per script call at most: a script cannot unpack more
        for (name, (keep_count, keep_age)), group in groups.items():
            script = SCRIPTS[name]
            for start in range(0, len(group), per_call):
                chunk = group[start:start + per_call]
                if name == "complete_jobs":
                    rows: list[tuple[Any, ...]] = [(o.job.id, o.job.token, o.value)
                                                   for o in chunk]
                else:
                    rows = [(o.job.id, o.job.token, o.error, o.traceback, o.retry_delay_ms)
                            if o.kind == PLAIN else
                            (o.job.id, o.job.token, o.error, o.traceback, o.retry_delay_ms,
                             o.kind, o.children, o.policy) if o.kind == WAIT else
                            (o.job.id, o.job.token, o.error, o.traceback, o.retry_delay_ms,
                             o.kind)
                            for o in chunk]
                args = [k.job_prefix, q.events_maxlen, keep_count, keep_age, codec.pack(rows)]
                trip.sent.append((trip.batch.add(script, script.keys_of(k), args), chunk))
        add_outcomes(trip.batch, q, outcomes)  # metrics ride in the same round trip
        if want:
            fetch = SCRIPTS["fetch_jobs"]
            trip.fetches.append((trip.batch.add(fetch, fetch.keys_of(k), [
                k.job_prefix, q.events_maxlen, want, self.worker.lease_ms, self.worker.id,
                secrets.token_hex(6), _PROMOTE_LIMIT, k.fetch_prefix, *self._expired_keep,
                k.group_prefix,
            ]), want))
        return trip

    # --------------------------------------------------------------- the jobs

    def _start(self, job: FetchedJob) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info("→ %s %s:%s attempt %d", self.queue.name, job.task, job.id, job.attempt,
                     extra={"job_id": job.id, "task": job.task, "queue": self.queue.name,
                            "attempt": job.attempt, "worker_id": self.worker.id,
                            "outcome": "started"})
        entry = Running(job)
        self.running[job.id] = entry
        entry.task = asyncio.create_task(self._run_job(entry), name=f"ajr-job:{job.id}")
        entry.task.add_done_callback(lambda _: self._never_ran(entry))

    def _never_ran(self, entry: Running) -> None:
        """A job task cancelled before its first step (a lease lost, a cancel or a
        shutdown right after the fetch) never runs _run_job's cleanup: do it here."""
        if self.running.get(entry.job.id) is entry:
            del self.running[entry.job.id]
            self.worker.release(1)
            self.wake.set()

    async def _run_job(self, entry: Running) -> None:
        job = entry.job
        worker = self.worker
        ctx = JobContext(id=job.id, queue=self.queue, task=job.task, attempt=job.attempt,
                         max_attempts=job.max_attempts, token=job.token, worker=worker.context)
        try:
            outcome = await worker.executor.run(job, ctx)
        except asyncio.CancelledError:
            outcome = None
        except BaseException:  # last line of defence
            log.exception("job %s: internal error while running it", job.id)
            outcome = None
        finally:
            del self.running[job.id]
            worker.release(1)
        if entry.cancelled and not entry.lost and not entry.returned:
            # whatever the handler did once cancelled (even return a value), it was cancelled
            stopped = Outcome(job, ok=False, error="Cancelled", retry_delay_ms=NO_RETRY,
                              retention=outcome.retention if outcome is not None else None)
            stopped.kind = CANCELLED
            stopped.run_ms = outcome.run_ms if outcome is not None else 0.0
            outcome = stopped
        if outcome is not None and not entry.lost and not entry.returned:
            self.outcomes.append(outcome)
        self.wake.set()

    def cancel_running(self, job_ids: list[str]) -> None:
        """Cancel the handlers of these jobs, whose cancel was requested (those not running
        here are someone else's); their outcome is reported as cancelled."""
        for job_id in job_ids:
            entry = self.running.get(job_id)
            if entry is None or entry.task is None or entry.cancelled or entry.lost \
                    or entry.returned:
                continue
            entry.cancelled = True
            entry.task.cancel()
            log.info("⊘ %s %s:%s: cancel requested; cancelling its handler", self.queue.name,
                     entry.job.task, job_id)

    def mark_lost(self, job_ids: list[str]) -> None:
        cancelled = []
        for job_id in job_ids:
            entry = self.running.get(job_id)
            if entry is not None and entry.task is not None:
                cancelled.append(f"{entry.job.task}:{job_id}")
                entry.lost = True
                entry.task.cancel()
        if cancelled:
            log.warning("queue %s: lease lost for %d running job(s); cancelling their handlers"
                        " (another worker may run them now): %s", self.queue.name,
                        len(cancelled), _some(cancelled))

    async def hand_back(self) -> None:
        """Cancel the running jobs and put them back to waiting at once (shutdown)."""
        entries = [e for e in self.running.values() if e.task is not None]
        if not entries:
            return
        for e in entries:
            e.returned = True
            assert e.task is not None
            e.task.cancel()
        await asyncio.gather(*(e.task for e in entries if e.task is not None),
                             return_exceptions=True)
        q = self.queue
        k = q.keys
        script = SCRIPTS["return_jobs"]
        per_call = 1000  # jobs per script call at most; all calls go in one round trip
        batch = Batch()
        for start in range(0, len(entries), per_call):
            args: list[Any] = [k.job_prefix, q.events_maxlen]
            for e in entries[start:start + per_call]:
                args += (e.job.id, e.job.token)
            batch.add(script, script.keys_of(k), args)
        results = await batch.execute(q.client)
        returned = sum(1 for statuses in results for s in statuses if s == 1)
        log.warning("queue %s: handed %d unfinished job(s) back to waiting", q.name, returned)

    def _log_outcome(self, o: Outcome, status: int) -> bool:
        """Count and log one outcome; False when it was dropped (logged by the caller)."""
        if status in (1, 0):  # 0: this attempt's outcome was recorded by a re-sent call
            self.worker.count_outcome(o.ok)
        return log_outcome(self.queue.name, self.worker.id, o, status,
                           self.worker.log_tracebacks)

    # -------------------------------------------------------------- idle wait

    async def _wait_for_work(self) -> None:
        try:
            await self._idle.wait(self.next_due_ms)
        finally:
            self.wake.set()

    async def stop_waker(self) -> None:
        """Cancel the idle wait. redis-py's blocking read can swallow a cancellation that
        races its own timeout (Python 3.11), which left a stopping worker waiting out the
        BZPOPMIN (up to 15 s): cancel again until the task has ended."""
        waker, self._waker = self._waker, None
        if waker is not None:  # an outage there was logged by the wait itself
            await cancel_and_wait([waker], tries=100)
        await self._idle.settle()


def _some(names: Iterable[str], shown: int = 5) -> str:
    """A few names of a long list, and how many more."""
    names = list(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
