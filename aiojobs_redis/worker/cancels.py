"""The push side of cancellation: a worker listens on its queues' cancel channels.

``cancel_job`` publishes a running job's id on its queue's channel (``ajr:{q}:cancel``);
every worker of the queue hears it and the one running the job cancels its handler at
once. Pub/sub delivers at most once: a request published while a worker was not
subscribed (a reconnect) reaches it with its next lease renewal instead, whose reply
names the running jobs with a pending cancel request (at most a third of a lease later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from .lane import Lane
from .leases import ReconnectBackoff

log = logging.getLogger("aiojobs_redis.worker")


class CancelListener:
    """One subscription per Redis client of the worker's lanes, for all their channels
    (``run(lanes)``)."""

    def __init__(self) -> None:
        #: set once every Redis client of the lanes is subscribed
        self.subscribed = asyncio.Event()
        self._waiting = 0

    async def run(self, lanes: Sequence[Lane]) -> None:
        groups: dict[int, list[Lane]] = {}
        for lane in lanes:
            groups.setdefault(id(lane.queue.client), []).append(lane)
        self._waiting = len(groups)
        if not groups:
            self.subscribed.set()
        await asyncio.gather(*(self._listen(group) for group in groups.values()))

    async def _listen(self, lanes: list[Lane]) -> None:
        by_channel = {lane.queue.keys.cancel_channel.encode(): lane for lane in lanes}
        client = lanes[0].queue.blocking_client()  # not a connection of the main pool
        backoff = ReconnectBackoff()
        first = True
        while True:
            pubsub: Any = client.pubsub()
            try:
                await pubsub.subscribe(*by_channel)
                if first:
                    first = False
                    self._waiting -= 1
                    if not self._waiting:
                        self.subscribed.set()
                elif backoff.failures:
                    log.warning("cancel channels of %s: subscribed again",
                                ", ".join(lane.queue.name for lane in lanes))
                backoff.reset()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    lane = by_channel.get(message["channel"])
                    data = message["data"]
                    if lane is not None and isinstance(data, bytes):
                        lane.cancel_running([data.decode("utf-8", "replace")])
            except (RedisError, OSError) as e:
                if not backoff.failures:
                    log.warning("cancel channels of %s: %s; requests arrive with lease"
                                " renewals until subscribed again",
                                ", ".join(lane.queue.name for lane in lanes), e)
                await backoff.sleep()
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await asyncio.shield(pubsub.aclose())
