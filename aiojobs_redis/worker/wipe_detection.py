"""Notice that a queue's keys vanished (FLUSHALL, FLUSHDB, a careless DEL).

A worker writes a random token under ``ajr:{queue}:alive`` at start (or adopts the
token already there) and looks at it periodically. If the key is gone, or holds
another token (someone re-created it after a wipe), the queue's jobs and
schedules were wiped: the worker says so loudly, once per wipe, and claims anew.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..connection import ClientPipelines
from ..errors import wrap_redis_errors

if TYPE_CHECKING:
    from ..producer.queue import Queue

log = logging.getLogger("aiojobs_redis.worker")


class WipeDetector:
    """The ``alive`` token of one queue, claimed at worker start and checked periodically."""

    __slots__ = ("queue", "token")

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.token: bytes | None = None

    async def claim(self) -> None:
        """Write a token unless one is there; remember the one that is."""
        key = self.queue.keys.alive
        with wrap_redis_errors(f"write the sentinel of queue {self.queue.name!r}"):
            pipe = self.queue.client.pipeline(transaction=False)
            pipe.set(key, secrets.token_hex(8), nx=True)
            pipe.get(key)
            _, self.token = await pipe.execute()

    async def check(self) -> bool:
        """True when the queue's keys look intact; otherwise warn, claim again, False."""
        return (await check_all([self]))[0]

    async def judge(self, value: bytes | None) -> bool:
        """What the sentinel key holds now says whether the keys are intact (True);
        otherwise warn, claim again and return False."""
        if value is not None and value == self.token:
            return True
        if value is None:
            log.warning(
                "QUEUE KEYS VANISHED: FLUSHALL? queue %s: the sentinel key %s written at worker"
                " start is gone, so the queue's jobs, schedules and settings were wiped (FLUSHALL,"
                " FLUSHDB, or deleted keys); schedules declared in worker code are re-created now,"
                " jobs are lost", self.queue.name, self.queue.keys.alive)
        else:
            log.warning(
                "QUEUE KEYS VANISHED: FLUSHALL? queue %s: the sentinel key %s was wiped and"
                " re-created by another process since this worker last looked; the queue's jobs"
                " and schedules stored before were lost", self.queue.name, self.queue.keys.alive)
        await self.claim()
        return False


async def check_all(detectors: Sequence[WipeDetector]) -> list[bool]:
    """:meth:`WipeDetector.check` for many queues: their sentinel keys read in one
    round trip per client (a pipeline of GETs: a cluster client sends one per node)."""
    pipes = ClientPipelines()
    asked: list[tuple[WipeDetector, int, int]] = []  # (detector, client, reply index)
    for d in detectors:
        if d.token is None:  # never claimed (Redis was down at start)
            await d.claim()
            continue
        pipe = pipes.of(d.queue.client)
        asked.append((d, id(d.queue.client), len(pipe)))
        pipe.get(d.queue.keys.alive)
    with wrap_redis_errors("read the sentinel keys of the queues"):
        replies = await pipes.execute()
    values = {id(d): replies[client][i] for d, client, i in asked}
    return [await d.judge(values[id(d)]) if id(d) in values else True for d in detectors]
