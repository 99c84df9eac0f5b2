"""Lease renewal for every running job of a worker in one round trip per period,
plus the worker's heartbeat; and the capped backoff used while Redis is away."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..ops import registry
from ..scripts import SCRIPTS

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("aiojobs_redis.worker")


class ReconnectBackoff:
    """Sleep 50 ms, 100 ms, ... up to 2 s (with jitter) between attempts while Redis is away."""

    def __init__(self, base_s: float = 0.05, cap_s: float = 2.0) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    async def sleep(self) -> None:
        delay = min(self.cap_s, self.base_s * 2 ** min(self.failures, 10))
        self.failures += 1
        await asyncio.sleep(delay * (0.5 + random.random() / 2))

    def reset(self) -> None:
        self.failures = 0


class LeaseKeeper:
    """Every ``lease_ms / 3``: extend the leases of all running jobs (one script call
    per queue, all queues in one pipeline) and write the worker's heartbeat."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.started_at = time.time()
        self.host = socket.gethostname()
        self._outage = False

    async def run(self) -> None:
        period = self.worker.lease_ms / 3000
        while True:
            try:
                await self.renew()
                if self._outage:
                    self._outage = False
                    log.warning("lease renewal: Redis is back")
            except (RedisError, OSError) as e:
                if not self._outage:
                    self._outage = True
                    log.error("lease renewal failed (%s); jobs may be recovered by other workers"
                              " if this lasts longer than the lease (%d ms)", e,
                              self.worker.lease_ms)
            await asyncio.sleep(period)

    async def renew(self) -> None:
        worker = self.worker
        for lane in worker.lanes:
            running = [(r.job.id, r.job.token) for r in lane.running.values()]
            if not running:
                continue
            k = lane.queue.keys
            args: list[Any] = [k.job_prefix, worker.lease_ms]
            for job_id, token in running:
                args += (job_id, token)
            script = SCRIPTS["extend_leases"]
            lost = await script(lane.queue.client, script.keys_of(k), args)
            if lost:
                lane.mark_lost([j.decode() for j in lost])
        await self.heartbeat()

    async def heartbeat(self) -> None:
        worker = self.worker
        now = time.time()
        info = registry.WorkerInfo(
            id=worker.id, host=self.host, pid=os.getpid(),
            queues=[lane.queue.name for lane in worker.lanes], concurrency=worker.concurrency,
            active=sum(len(lane.running) for lane in worker.lanes), started_at=self.started_at,
            heartbeat_at=now, lease_ms=worker.lease_ms, processed=worker.processed,
            failed=worker.failed,
        )
        record = registry.encode(info)
        for lane in worker.lanes:
            k = lane.queue.keys
            pipe = lane.queue.client.pipeline(transaction=False)
            pipe.set(k.worker(worker.id), record, px=worker.lease_ms * 2)
            pipe.zadd(k.workers, {worker.id: int(now * 1000)})
            await pipe.execute()

    async def deregister(self) -> None:
        worker = self.worker
        for lane in worker.lanes:
            k = lane.queue.keys
            pipe = lane.queue.client.pipeline(transaction=False)
            pipe.delete(k.worker(worker.id))
            pipe.zrem(k.workers, worker.id)
            await pipe.execute()
