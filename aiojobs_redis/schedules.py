"""Schedules: named recurring jobs that cannot silently disappear.

* :class:`Schedule` (a value; see :mod:`aiojobs_redis.schedule_spec` for the tick rules),
  :func:`next_fire` / :func:`prev_fire` (pure: "now" is a parameter);
* ``queue.schedules`` (:class:`~aiojobs_redis.schedule_store.Schedules`): upsert,
  remove, list, run_now, from any producer;
* :class:`ScheduleKeeper`: the part of every worker that fires due ticks of every
  schedule of its queues (no scheduler process, no leader: a compare-and-set in
  ``fire_schedule.lua`` lets exactly one of the racing workers fire each tick),
  upserts the schedules declared in worker code at start and re-verifies them every
  ``verify_s`` seconds, so that they come back after a FLUSHALL without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from .errors import ConfigurationError, ScheduleNotFound
from .schedule_spec import CatchUp, Schedule, ScheduleDef, next_fire, prev_fire, tick_job_id
from .schedule_store import ScheduleInfo, Schedules, Upserted
from .sentinel import QueueSentinel

if TYPE_CHECKING:
    from .worker import Worker

__all__ = (
    "DEFAULT_VERIFY_S",
    "CatchUp",
    "Schedule",
    "ScheduleDef",
    "ScheduleInfo",
    "ScheduleKeeper",
    "ScheduleNotFound",
    "Schedules",
    "Upserted",
    "next_fire",
    "prev_fire",
    "tick_job_id",
)

log = logging.getLogger("aiojobs_redis.schedules")

#: how often a worker re-upserts the schedules declared in its code (seconds)
DEFAULT_VERIFY_S: Final = 5.0
_MAX_SLEEP_S: Final = 1.0  # look for schedules added by producers at least this often


class ScheduleKeeper:
    """Fires due ticks of every schedule of the worker's queues; keeps the declared
    schedules (and the queue sentinel) in place. ``verify_s`` defaults to the
    worker's ``schedule_verify_s`` attribute when it has one, else 5 s."""

    def __init__(self, worker: Worker, schedules: Sequence[Schedule] = (), *,
                 verify_s: float | None = None) -> None:
        if verify_s is None:
            verify_s = getattr(worker, "schedule_verify_s", None) or DEFAULT_VERIFY_S
        if not 0.01 <= verify_s <= 3600:
            raise ConfigurationError("schedule verification period must be 0.01..3600 s")
        self.worker = worker
        self.verify_s = float(verify_s)
        self.stores = {q.name: Schedules(q) for q in worker.queues}
        self.sentinels = {q.name: QueueSentinel(q) for q in worker.queues}
        self.declared: dict[str, dict[str, Schedule]] = {q.name: {} for q in worker.queues}
        default = worker.queues[0].name
        for s in schedules:
            if not isinstance(s, Schedule):
                raise ConfigurationError(f"schedules must be Schedule objects, not {s!r}")
            queue = s.queue or default
            if queue not in self.declared:
                raise ConfigurationError(
                    f"schedule {s.name!r} names queue {queue!r}, which this worker does not serve"
                )
            seen = self.declared[queue].get(s.name)
            if seen is not None and seen != s:
                raise ConfigurationError(f"two different schedules are named {s.name!r}")
            self.declared[queue][s.name] = s
        self._failing = False
        self._verified = False

    async def start(self) -> None:
        """Claim the queue sentinels and upsert the declared schedules. A Redis error
        is logged, not raised: :meth:`run` tries again at once."""
        try:
            for sentinel in self.sentinels.values():
                await sentinel.claim()
            await self.verify(first=True)
            self._verified = True
        except Exception as e:  # never stop the worker for this
            self._episode(e)

    async def verify(self, *, first: bool = False) -> None:
        """Check the sentinels, then upsert every declared schedule."""
        for queue, schedules in self.declared.items():
            if not first:
                await self.sentinels[queue].check()
            store = self.stores[queue]
            for s in schedules.values():
                self._report(queue, s, await store.upsert(s), first)

    def _report(self, queue: str, s: Schedule, result: Upserted, first: bool) -> None:
        if result is Upserted.UNCHANGED:
            return
        if first and result is not Upserted.REPAIRED:
            log.info("queue %s: schedule %s %s", queue, s.name, result.value)
        elif result is Upserted.CREATED:
            log.warning(
                "SCHEDULE WAS MISSING: queue %s: schedule %s was not in Redis (FLUSHALL, FLUSHDB"
                " or deleted keys?); re-created from this worker's code. Ticks during the gap did"
                " not run and its run count restarts", queue, s.name)
        elif result is Upserted.REPAIRED:
            log.warning("queue %s: schedule %s had lost its entry in %s (deleted key?);"
                        " restored", queue, s.name, self.stores[queue].queue.keys.schedules)
        else:
            log.warning("queue %s: schedule %s in Redis differed from this worker's declaration"
                        " and was replaced (does another process declare it differently?)",
                        queue, s.name)

    def _episode(self, e: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.error("schedules: %s: %s; retrying (logged once per episode)",
                      type(e).__name__, e)

    async def run(self) -> None:
        """Until the worker stops: fire due ticks, re-verify every ``verify_s``."""
        loop = asyncio.get_running_loop()
        next_verify = loop.time() + (self.verify_s if self._verified else 0.0)
        while not self.worker.stopping:
            wait = _MAX_SLEEP_S
            try:
                for store in self.stores.values():
                    _, next_in = await store.advance()
                    if next_in is not None:
                        wait = min(wait, next_in)
                if loop.time() >= next_verify:
                    await self.verify(first=not self._verified)
                    self._verified = True
                    next_verify = loop.time() + self.verify_s
                if self._failing:
                    self._failing = False
                    log.warning("schedules: working again")
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failure must not stop the worker
                self._episode(e)
                wait = _MAX_SLEEP_S
            wait = min(wait, max(next_verify - loop.time(), 0.0))
            await asyncio.sleep(max(wait, 0.001))
