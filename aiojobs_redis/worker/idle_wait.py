"""An idle lane's wait for work: one blocking BZPOPMIN on the queue's marker and the
worker's own wake key, on a connection of the blocking pool (the lean path of
``scripts/direct.py`` where the client allows), with a local timer for the next due time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..scripts.direct import BUSY, DirectLine

if TYPE_CHECKING:
    from ..producer.queue import Queue

log = logging.getLogger("aiojobs_redis.worker")

# how long an idle lane blocks at most before it looks again by itself. Every event that
# makes work (an enqueue, a retry, a release, a promotion, a resume, a recovered job) wakes
# an idle worker through the marker, and a fetch tells the next due time: this is only
# the fallback, kept below the blocking connection's socket timeout (20 s)
MAX_IDLE_BLOCK_S = 15.0
# an idle Redis ends a blocking command's timeout on its next tick (every 100 ms at the
# default hz 10), so a timed wake-up comes from a local timer; the Redis timeout is only
# the fallback, this much later
_TIMEOUT_SLACK_S = 0.25
_WAKE_TTL_MS = 5000


class IdleWait:
    """The idle wait of one lane: :meth:`wait` returns when work may be there."""

    def __init__(self, queue: Queue, worker_id: str,
                 on_outage: Callable[[str], Awaitable[None]]) -> None:
        self.queue = queue
        self.wake_key = queue.keys.base + "wake:" + worker_id
        self.on_outage = on_outage
        self._line: DirectLine | None = None  # on the blocking pool, made at first use
        self._pushes: set[asyncio.Task[None]] = set()  # timed wake-ups being sent

    async def wait(self, next_due_ms: int) -> None:
        """Block until a job is added (marker) or the next delayed job is due, or a
        limit lets more jobs start (``next_due_ms``, from the last fetch; -1: none).

        The timed wake-up is a local timer that pushes this worker's own wake key, which
        the BZPOPMIN also watches: Redis ends a blocking timeout only on its next server
        tick (up to 100 ms late at the default hz 10), a local timer to the millisecond."""
        timeout = MAX_IDLE_BLOCK_S
        timer: asyncio.Task[None] | None = None
        if 0 <= next_due_ms < timeout * 1000:
            due_s = next_due_ms / 1000
            if due_s <= 0.0005:
                return
            timeout = due_s + _TIMEOUT_SLACK_S
            timer = asyncio.create_task(self._timed_wake(due_s))
        try:
            blocking = self.queue.blocking_client()
            if self._line is None and DirectLine.suits(blocking):
                self._line = DirectLine(blocking)
            keys = (self.queue.keys.marker, self.wake_key)
            if self._line is None or await self._line.command(
                    "BZPOPMIN", *keys, round(timeout, 3)) is BUSY:
                await blocking.bzpopmin(list(keys), round(timeout, 3))
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            await self.on_outage(f"Redis unreachable: {e}")
        finally:
            if timer is not None:
                timer.cancel()  # a push already on its way finishes (shielded)

    async def _timed_wake(self, due_s: float) -> None:
        """After ``due_s``, wake the blocking wait through the worker's own key (a key
        left behind by a race with another wake-up expires by itself)."""
        await asyncio.sleep(due_s)
        # not cut by a cancel once sent: a command cut mid-reply costs its connection
        push = asyncio.create_task(self._push_wake())
        self._pushes.add(push)
        push.add_done_callback(self._pushes.discard)
        await asyncio.shield(push)

    async def _push_wake(self) -> None:
        pipe = self.queue.client.pipeline(transaction=False)
        pipe.zadd(self.wake_key, {"w": 0})
        pipe.pexpire(self.wake_key, _WAKE_TTL_MS)
        try:
            await pipe.execute()
        except Exception as e:  # any: then the Redis timeout wakes it instead
            log.debug("queue %s: timed wake-up not sent: %r", self.queue.name, e)

    async def settle(self) -> None:
        """After the wait was cancelled: let a timed wake-up on its way end (before the
        client is closed)."""
        if self._pushes:
            await asyncio.wait(set(self._pushes), timeout=1)

    async def close(self) -> None:
        """Give the blocking line's connection back."""
        if self._line is not None:
            await self._line.close()
