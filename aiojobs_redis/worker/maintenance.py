"""Duties any live worker does periodically: recover stalled jobs.

Every worker runs them; the scripts are atomic and idempotent, so no leader is
needed and one dead worker stops nothing while another is alive.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..ops.metrics import record_stalled
from ..scripts import SCRIPTS, Batches
from .lane import _retention_args

if TYPE_CHECKING:
    from ..producer.queue import Queue

log = logging.getLogger("aiojobs_redis.worker")

_RECOVER_LIMIT = 1000


def _recover_call(queue: Queue, max_stalls: int, gap_ms: int) -> tuple[list[str], list[Any]]:
    k = queue.keys
    # jobs failed for too many stalls obey the queue's failed-job retention, as fail_jobs does
    keep_count, keep_age_ms = _retention_args(queue.retention, ok=False)
    return SCRIPTS["recover_stalled"].keys_of(k), [
        k.job_prefix, queue.events_maxlen, max_stalls, _RECOVER_LIMIT, keep_count, keep_age_ms,
        gap_ms]


async def recover_stalled(queue: Queue, max_stalls: int, gap_ms: int = -1,
                          on_deferred: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Put jobs whose lease ran out back to waiting (or fail them); returns the counts.

    ``gap_ms``: a pause of Redis longer than this (no call served) restarts its serving
    clock, and nothing is recovered until it has served that long again (-1: no clock);
    ``on_deferred`` is told how long recovery waits then."""
    reply = await SCRIPTS["recover_stalled"](queue.client, *_recover_call(queue, max_stalls,
                                                                          gap_ms))
    return await _recovered(queue, max_stalls, reply, on_deferred)


async def _recovered(queue: Queue, max_stalls: int, reply: Any,
                     on_deferred: Callable[[int], None] | None) -> tuple[int, int]:
    requeued, failed, deferred_ms = reply
    if int(deferred_ms) > 0 and on_deferred is not None:
        on_deferred(int(deferred_ms))
    if requeued or failed:
        log.warning("queue %s: recovered %d stalled job(s), failed %d after %d stalls",
                    queue.name, requeued, failed, max_stalls)
        await record_stalled(queue, int(requeued), int(failed))  # a separate, best-effort call
    return int(requeued), int(failed)


class Maintenance:
    """Every ``check_s`` (jittered): recover the stalled jobs of ``queues``."""

    def __init__(self, queues: Sequence[Queue], *, max_stalls: int, check_s: float,
                 lease_ms: int) -> None:
        self.queues = tuple(queues)
        self.max_stalls = max_stalls
        self.check_s = check_s
        self._deferring: set[str] = set()  # queues whose recovery waits (logged once)
        # a pause of Redis longer than this is "not serving": half a lease (a pause that
        # can expire a lease is longer than two thirds of it), and longer than this
        # worker's own gaps between checks so that its calls alone keep the clock going
        self.gap_ms = max(lease_ms // 2, int(check_s * 1500) + 100)

    async def run(self) -> None:
        while True:
            # spread the checks of many workers over the interval
            await asyncio.sleep(self.check_s * (0.5 + random.random()))
            script = SCRIPTS["recover_stalled"]
            batches = Batches()  # every queue's check in one round trip (per client)
            handles = [(queue, batches.add(queue.client, script,
                                           *_recover_call(queue, self.max_stalls, self.gap_ms)))
                       for queue in self.queues]
            try:
                replies = await batches.execute()
            except (RedisError, OSError) as e:
                log.debug("stalled-job checks skipped: %s", e)
                continue
            for queue, handle in handles:
                name = queue.name
                waited: list[int] = []
                try:
                    await _recovered(queue, self.max_stalls, replies[handle], waited.append)
                except (RedisError, OSError) as e:
                    log.debug("stalled-job metrics of %s not recorded: %s", name, e)
                if not waited:
                    self._deferring.discard(name)
                elif name not in self._deferring:  # once per pause
                    self._deferring.add(name)
                    log.warning(
                        "queue %s: Redis served no call for a while (a pause, an outage or a"
                        " restart): stalled-job recovery waits %d ms so that live workers"
                        " renew their leases first", name, waited[0])
