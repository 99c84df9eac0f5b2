"""Duties any live worker does periodically: recover stalled jobs.

Every worker runs them; the scripts are atomic and idempotent, so no leader is
needed and one dead worker stops nothing while another is alive.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ..ops.metrics import record_stalled
from ..scripts import SCRIPTS

if TYPE_CHECKING:
    from ..producer.queue import Queue
    from .worker import Worker

log = logging.getLogger("aiojobs_redis.worker")

_RECOVER_LIMIT = 1000


async def recover_stalled(queue: Queue, max_stalls: int) -> tuple[int, int]:
    """Put jobs whose lease ran out back to waiting (or fail them); returns the counts."""
    k = queue.keys
    script = SCRIPTS["recover_stalled"]
    requeued, failed = await script(
        queue.client, script.keys_of(k),
        [k.job_prefix, queue.events_maxlen, max_stalls, _RECOVER_LIMIT],
    )
    if requeued or failed:
        log.warning("queue %s: recovered %d stalled job(s), failed %d after %d stalls",
                    queue.name, requeued, failed, max_stalls)
        await record_stalled(queue, int(requeued), int(failed))  # a separate, best-effort call
    return int(requeued), int(failed)


class Maintenance:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def run(self) -> None:
        interval = self.worker.stalled_check_s
        while True:
            # spread the checks of many workers over the interval
            await asyncio.sleep(interval * (0.5 + random.random()))
            for lane in self.worker.lanes:
                try:
                    await recover_stalled(lane.queue, self.worker.max_stalls)
                except (RedisError, OSError) as e:
                    log.debug("stalled-job check of %s skipped: %s", lane.queue.name, e)
