"""Schedules of one queue in Redis: upsert, remove, list, run now, and advance due ticks.

Reach it as ``queue.schedules``. Every change is one Lua script: ``upsert_schedule``
(compare-and-set on the definition's digest and the pending tick),
``fire_schedule`` (compare-and-set on the same two, and the tick's job enqueued
in the same step), ``remove_schedule``. Python plans the ticks (croniter runs
here, not in Lua); Redis TIME decides whether a tick is due.
"""

from __future__ import annotations

import builtins
import enum
import logging
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import msgspec

from .. import codec
from ..connection import execute_with_time
from ..errors import ConfigurationError, ScheduleNotFound, wrap_redis_errors
from ..options import JobOptions
from ..producer.job import Job
from ..producer.task import TaskCall
from ..scripts import SCRIPTS, Batches
from ..states import JobState
from .spec import CatchUp, Schedule, ScheduleDef
from .ticks import first_tick, plan, tick_job_id

if TYPE_CHECKING:
    from ..producer.queue import Queue

log = logging.getLogger("aiojobs_redis.schedules")

_DUE_LIMIT: Final = 100
_CACHE_MAX: Final = 1000
_UPSERT_TRIES: Final = 8


class Upserted(enum.StrEnum):
    """What :meth:`Schedules.upsert` did."""

    CREATED = "created"
    REPLACED = "replaced"  # the definition had changed; pending tick re-planned atomically
    UNCHANGED = "unchanged"
    REPAIRED = "repaired"  # same definition, but its index entry had vanished


_UPSERT_STATUS: Final = {1: Upserted.CREATED, 2: Upserted.REPLACED, 0: Upserted.UNCHANGED,
                         3: Upserted.REPAIRED}
_CONFLICT: Final = -5


class ScheduleInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A schedule as stored in Redis, with its next run and its last run's outcome."""

    name: str
    task: str
    cron: str | None
    every_s: float | None
    tz: str
    catch_up: CatchUp
    next_run_at: datetime | None  # when the pending tick's job is enqueued (tick + jitter)
    next_tick_at: datetime | None  # the pending tick itself; None: the schedule has ended
    runs: int  # ticks fired so far
    last_tick_at: datetime | None
    last_job_id: str | None
    last_state: JobState | None  # state of the last tick's job; None when it is gone
    last_error: str | None
    created_at: datetime | None
    updated_at: datetime | None
    definition: ScheduleDef


def _dt(value: bytes | None) -> datetime | None:
    if value is None or int(value) < 0:
        return None
    return datetime.fromtimestamp(int(value) / 1000, UTC)


class Schedules:
    """The schedules of one queue. Cheap to make; holds no connection of its own."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._defs: dict[str, ScheduleDef] = {}  # digest -> definition, bounded
        #: schedule name -> digest of the definition the last upsert found in Redis
        self.replaced_digest: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Schedules of {self.queue.name}>"

    def _key(self, name: str) -> str:
        return self.queue.keys.sched_prefix + name

    def _check(self, schedule: Schedule) -> None:
        if not isinstance(schedule, Schedule):
            raise ConfigurationError(f"expected a Schedule, got {type(schedule).__name__}")
        if schedule.queue is not None and schedule.queue != self.queue.name:
            raise ConfigurationError(
                f"schedule {schedule.name!r} names queue {schedule.queue!r}, not"
                f" {self.queue.name!r}"
            )

    # ----------------------------------------------------------------- changes

    async def upsert(self, schedule: Schedule) -> Upserted:
        """Declare a schedule. The same definition again changes nothing; another
        definition under the same name replaces it atomically: its pending tick is
        re-planned from the last tick handled, so no tick fires twice or is lost."""
        self._check(schedule)
        d = schedule.definition
        blob = d.encode()
        digest = schedule.digest
        k = self.queue.keys
        script = SCRIPTS["upsert_schedule"]
        for _ in range(_UPSERT_TRIES):
            with wrap_redis_errors(f"upsert schedule {d.name!r}"):
                pipe = self.queue.client.pipeline(transaction=False)
                pipe.hmget(self._key(d.name), ["digest", "tick", "last_tick", "created", "runs"])
                pipe.zscore(k.schedules, d.name)
                replies, now_ms = await execute_with_time(self.queue.client, pipe)
                (old_digest, old_tick, last_tick, created, runs), score = replies
            if old_digest is not None and old_digest.decode() == digest and score is not None:
                return Upserted.UNCHANGED
            if old_digest is None:
                basis = now_ms
            elif last_tick is not None:
                basis = int(last_tick)
            else:
                basis = int(created or now_ms)
            tick, due = first_tick(d, basis, int(runs or 0))
            with wrap_redis_errors(f"upsert schedule {d.name!r}"):
                status = int(await script(
                    self.queue.client, script.keys_of(k),
                    [k.sched_prefix, d.name, blob, digest,
                     b"" if old_digest is None else old_digest,
                     b"" if old_tick is None else old_tick, tick, due],
                ))
            if status != _CONFLICT:
                if old_digest is not None:
                    self.replaced_digest[d.name] = old_digest.decode()
                return _UPSERT_STATUS[status]
        raise ConfigurationError(
            f"schedule {d.name!r}: could not upsert after {_UPSERT_TRIES} tries: it keeps"
            " changing under us (two processes declaring it differently?)"
        )

    async def remove(self, name: str) -> bool:
        """Delete a schedule by name; True when it existed. Jobs it enqueued stay."""
        k = self.queue.keys
        script = SCRIPTS["remove_schedule"]
        with wrap_redis_errors(f"remove schedule {name!r}"):
            return int(await script(self.queue.client, script.keys_of(k),
                                    [k.sched_prefix, name])) == 1

    async def run_now(self, name: str) -> Job[Any]:
        """Enqueue one job from the schedule's template now; the schedule's own ticks
        are not touched. The job id is ``sched:<name>:now:<random>``."""
        d = await self._definition(name)
        if d is None:
            raise ScheduleNotFound(name, self.queue.name)
        args, kwargs = codec.decode_args(d.payload)
        stored = codec.decode_options(d.opts)
        options = JobOptions(job_id=f"sched:{name}:now:{secrets.token_hex(6)}",
                             priority=d.priority, attempts=d.max_attempts,
                             backoff=stored.backoff, timeout_s=stored.timeout_s,
                             retention=stored.retention)
        return (await self.queue.enqueue_many([TaskCall(d.task, tuple(args), kwargs, options)]))[0]

    # ----------------------------------------------------------------- reading

    async def _definition(self, name: str) -> ScheduleDef | None:
        with wrap_redis_errors(f"read schedule {name!r}"):
            blob: Any = await self.queue.client.hget(self._key(name), "spec")
        return None if blob is None else ScheduleDef.decode(blob)

    async def names(self) -> builtins.list[str]:
        with wrap_redis_errors(f"list schedules of {self.queue.name!r}"):
            raw: Any = await self.queue.client.zrange(
                self.queue.keys.schedules, 0, -1)
        return sorted(n.decode() for n in raw)

    async def get(self, name: str) -> ScheduleInfo | None:
        infos = await self._infos([name])
        return infos[0] if infos else None

    async def list(self) -> builtins.list[ScheduleInfo]:
        """Every schedule of the queue, by name, with next run and last outcome."""
        return await self._infos(await self.names())

    async def _infos(self, names: builtins.list[str]) -> builtins.list[ScheduleInfo]:
        fields = ["spec", "tick", "due", "runs", "last_tick", "last_job", "created", "updated"]
        with wrap_redis_errors(f"list schedules of {self.queue.name!r}"):
            pipe = self.queue.client.pipeline(transaction=False)
            for name in names:
                pipe.hmget(self._key(name), fields)
            rows = await pipe.execute()
            jobs = [None if row[5] is None else row[5].decode() for row in rows]
            pipe = self.queue.client.pipeline(transaction=False)
            for job_id in jobs:
                if job_id is not None:
                    pipe.hmget(self.queue.keys.job(job_id), ["state", "error"])
            states = iter(await pipe.execute())
        out = []
        for name, row, job_id in zip(names, rows, jobs, strict=True):
            spec, tick, due, runs, last_tick, _, created, updated = row
            if spec is None:
                continue
            state: JobState | None = None
            error: str | None = None
            if job_id is not None:
                raw_state, raw_error = next(states)
                state = None if raw_state is None else JobState(raw_state.decode())
                error = None if raw_error is None else raw_error.decode("utf-8", "replace")
            d = ScheduleDef.decode(spec)
            out.append(ScheduleInfo(
                name=name, task=d.task, cron=d.cron,
                every_s=None if d.every_ms is None else d.every_ms / 1000, tz=d.tz,
                catch_up=d.catch_up, next_run_at=_dt(due), next_tick_at=_dt(tick),
                runs=int(runs or 0), last_tick_at=_dt(last_tick), last_job_id=job_id,
                last_state=state, last_error=error, created_at=_dt(created),
                updated_at=_dt(updated), definition=d,
            ))
        return out

    # ----------------------------------------------------------- advancing ticks

    def add_listing(self, batches: Batches) -> tuple[int, int]:
        """Add the call that lists this queue's due schedules to ``batches`` (a keeper
        lists every queue's in one round trip); returns its handle, for :meth:`advance`."""
        listing = SCRIPTS["list_due_schedules"]
        k = self.queue.keys
        return batches.add(self.queue.client, listing, listing.keys_of(k),
                           [k.sched_prefix, _DUE_LIMIT])

    async def advance(self, listed: Any = None) -> tuple[int, float | None]:
        """Fire every due tick of this queue's schedules (any worker may call this at
        any time, concurrently with others). Returns (ticks fired by this call,
        seconds until the next pending tick is due, or None when none is pending).
        ``listed``: the reply of the listing call made already (:meth:`add_listing`)."""
        k = self.queue.keys
        listing = SCRIPTS["list_due_schedules"]
        fire = SCRIPTS["fire_schedule"]
        fired = 0
        for _ in range(10):  # a few rounds: a round that fired may have made more due
            if listed is not None:
                reply, listed = listed, None
            else:
                with wrap_redis_errors(f"read due schedules of {self.queue.name!r}"):
                    reply = await listing(self.queue.client, listing.keys_of(k),
                                          [k.sched_prefix, _DUE_LIMIT])
            now_ms, next_in = int(reply[0]), int(reply[1])
            if len(reply) == 2:
                return fired, None if next_in < 0 else next_in / 1000
            progressed = False
            for i in range(2, len(reply), 4):
                name, digest = reply[i].decode(), reply[i + 1].decode()
                tick, runs = int(reply[i + 2]), int(reply[i + 3])
                d = await self._cached(name, digest)
                if d is None:
                    continue
                p = plan(d, tick, now_ms, runs)
                if p is None:
                    continue
                args: list[Any] = [
                    k.job_prefix, self.queue.events_maxlen, k.sched_prefix, name, digest, tick,
                    p.handled, p.next_tick, p.next_due, d.task, d.payload, d.opts, d.priority,
                    d.max_attempts, *p.fire,
                ]
                with wrap_redis_errors(f"fire schedule {name!r}"):
                    status = int(await fire(self.queue.client, fire.keys_of(k), args))
                if status == 1:
                    progressed = True
                    fired += len(p.fire)
                    self._log_fired(d, tick, p.fire, p.missed, p.next_tick)
                elif status == 0:
                    progressed = True  # another worker advanced it first: look again
            if not progressed:  # nothing we could advance (undecodable?): poll later
                return fired, 1.0 if next_in < 0 else min(next_in / 1000, 1.0)
        return fired, 0.0

    def _log_fired(self, d: ScheduleDef, tick: int, fire: tuple[int, ...], missed: int,
                   next_tick: int) -> None:
        for t in fire:
            log.info("⏰ %s schedule %s: tick %s -> job %s", self.queue.name, d.name,
                     _iso(t), tick_job_id(d.name, t))
        if missed > 0:
            log.warning("%s schedule %s: %d due tick(s) from %s got no job (catch_up=%s;"
                        " were all workers down?)", self.queue.name, d.name, missed,
                        _iso(tick), d.catch_up.value)
        if next_tick < 0:
            log.info("%s schedule %s has ended (end time or run limit reached)",
                     self.queue.name, d.name)

    async def _cached(self, name: str, digest: str) -> ScheduleDef | None:
        d = self._defs.get(digest)
        if d is not None:
            return d
        with wrap_redis_errors(f"read schedule {name!r}"):
            blob: Any = await self.queue.client.hget(self._key(name), "spec")
        if blob is None or ScheduleDef.digest_of(blob) != digest:
            return None  # changed or removed meanwhile; the next round sees the new state
        try:
            d = ScheduleDef.decode(blob)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            log.error("%s schedule %s: undecodable definition (%s); is a newer or older"
                      " aiojobs_redis writing it?", self.queue.name, name, e)
            return None
        if len(self._defs) >= _CACHE_MAX:
            self._defs.clear()
        self._defs[digest] = d
        return d


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
