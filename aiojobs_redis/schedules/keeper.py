"""The schedule keeper: the part of every worker that fires due ticks.

No scheduler process, no leader: every worker fires due ticks of every schedule
of its queues, and a compare-and-set in ``fire_schedule.lua`` lets exactly one
of the racing workers fire each tick. The keeper also upserts the schedules
declared in worker code at start and re-verifies them every ``verify_s``
seconds, so that they come back after a FLUSHALL without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from ..errors import ConfigurationError
from ..producer.queue import Queue
from ..scripts import Batches
from .spec import Schedule
from .store import Schedules, Upserted

log = logging.getLogger("aiojobs_redis.schedules")

#: how often a worker re-upserts the schedules declared in its code (seconds)
DEFAULT_VERIFY_S: Final = 5.0
_MAX_SLEEP_S: Final = 1.0  # look for schedules added by producers at least this often


class ScheduleKeeper:
    """Fires due ticks of every schedule of ``queues``; keeps the declared schedules
    in place. ``before_verify`` runs before each re-verification, given the names of
    the queues (the worker checks there, in one round trip, that their keys were not
    wiped); ``stopping`` ends :meth:`run`."""

    def __init__(self, queues: Sequence[Queue], schedules: Sequence[Schedule] = (), *,
                 verify_s: float = DEFAULT_VERIFY_S,
                 before_verify: Callable[[list[str]], Awaitable[object]] | None = None,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        if not 0.01 <= verify_s <= 3600:
            raise ConfigurationError("schedule verification period must be 0.01..3600 s")
        self.verify_s = float(verify_s)
        self.stopping = stopping
        self.before_verify = before_verify
        self.stores = {q.name: Schedules(q) for q in queues}
        self.declared: dict[str, dict[str, Schedule]] = {q.name: {} for q in queues}
        default = queues[0].name
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
        self._contested: set[tuple[str, str, str]] = set()  # (queue, name, digest replaced)

    async def start(self) -> None:
        """Upsert the declared schedules. A Redis error is logged, not raised:
        :meth:`run` tries again at once."""
        try:
            await self.verify(first=True)
            self._verified = True
        except Exception as e:  # never stop the worker for this
            self._episode(e)

    async def verify(self, *, first: bool = False) -> None:
        """Run ``before_verify``, then upsert every declared schedule."""
        if not first and self.before_verify is not None:
            await self.before_verify(list(self.declared))
        for queue, schedules in self.declared.items():
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
            # said once per definition replaced: two workers with two definitions (a
            # rolling deploy) replace each other at every verification
            foreign = (queue, s.name, self.stores[queue].replaced_digest.get(s.name, ""))
            if foreign in self._contested:
                log.debug("queue %s: schedule %s replaced again", queue, s.name)
                return
            if len(self._contested) > 1000:
                self._contested.clear()
            self._contested.add(foreign)
            log.warning("queue %s: schedule %s in Redis differed from this worker's declaration"
                        " and was replaced (does another process declare it differently? Said"
                        " once per definition replaced)", queue, s.name)

    def _episode(self, e: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.error("schedules: %s: %s; retrying (logged once per episode)",
                      type(e).__name__, e)

    async def run(self) -> None:
        """Until the worker stops: fire due ticks, re-verify every ``verify_s``."""
        loop = asyncio.get_running_loop()
        next_verify = loop.time() + (self.verify_s if self._verified else 0.0)
        while not self.stopping():
            wait = _MAX_SLEEP_S
            try:
                batches = Batches()  # every queue's listing in one round trip (per client)
                handles = [(store, store.add_listing(batches)) for store in self.stores.values()]
                listed = await batches.execute()
                for store, handle in handles:
                    _, next_in = await store.advance(listed[handle])
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
