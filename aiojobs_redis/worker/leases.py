"""Lease renewal for every running job of a worker in one round trip per period,
plus the worker's heartbeat; and the capped backoff used while Redis is away."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from redis.exceptions import RedisError

from ..connection import ClientPipelines
from ..ops import registry
from ..scripts import SCRIPTS, Batches

if TYPE_CHECKING:
    from .lane import Lane


class LeaseHost(Protocol):
    """What lease renewal and the heartbeat need of the worker: its lanes (their running
    jobs and queues), its identity, lease length and counters."""

    @property
    def id(self) -> str: ...
    @property
    def lease_ms(self) -> int: ...
    @property
    def concurrency(self) -> int: ...
    @property
    def processed(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def abandoned_threads(self) -> int: ...
    @property
    def lanes(self) -> Sequence[Lane]: ...

log = logging.getLogger("aiojobs_redis.worker")

_LEASE_CHUNK = 1000  # jobs per extend_leases call (a script must not unpack() thousands)


class ReconnectBackoff:
    """Sleep 50 ms, 100 ms, ... up to 1 s (with jitter) between attempts while Redis is away.

    Capped at 1 s (docs/guarantees.md): after an outage, the outcomes a worker holds must
    reach Redis before stalled-job recovery may take the jobs (half a lease of serving)."""

    def __init__(self, base_s: float = 0.05, cap_s: float = 1.0) -> None:
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
    """Every ``lease_ms / 3``: extend the leases of all running jobs (one round trip for
    all queues of a client, at most 1,000 jobs per script call) and write the worker's
    heartbeat (one more)."""

    def __init__(self, worker: LeaseHost) -> None:
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
        script = SCRIPTS["extend_leases"]
        batches = Batches()  # every queue's renewals in one round trip (per client)
        handles: list[tuple[Lane, list[tuple[int, int]]]] = []
        for lane in worker.lanes:
            running = [(r.job.id, r.job.token) for r in lane.running.values()]
            if not running:
                continue
            k = lane.queue.keys
            keys = script.keys_of(k)
            mine = []  # at most _LEASE_CHUNK jobs per call
            for start in range(0, len(running), _LEASE_CHUNK):
                args: list[Any] = [k.job_prefix, worker.lease_ms]
                for job_id, token in running[start:start + _LEASE_CHUNK]:
                    args += (job_id, token)
                mine.append(batches.add(lane.queue.client, script, keys, args))
            handles.append((lane, mine))
        if handles:
            replies = await batches.execute()
            for lane, mine in handles:
                lost = [j.decode() for h in mine for j in replies[h][0]]
                if lost:
                    lane.mark_lost(lost)
                cancel = [j.decode() for h in mine for j in replies[h][1]]
                if cancel:
                    lane.cancel_running(cancel)
        await self.heartbeat()

    async def heartbeat(self) -> None:
        worker = self.worker
        now = time.time()
        info = registry.WorkerInfo(
            id=worker.id, host=self.host, pid=os.getpid(),
            queues=[lane.queue.name for lane in worker.lanes], concurrency=worker.concurrency,
            active=sum(len(lane.running) for lane in worker.lanes), started_at=self.started_at,
            heartbeat_at=now, lease_ms=worker.lease_ms, processed=worker.processed,
            failed=worker.failed, abandoned_threads=worker.abandoned_threads,
        )
        record = registry.encode(info)
        pipes = ClientPipelines()  # every queue's record in one round trip (per client)
        for lane in worker.lanes:
            k = lane.queue.keys
            pipe = pipes.of(lane.queue.client)
            pipe.set(k.worker(worker.id), record, px=worker.lease_ms * 2)
            # scored by when the record expires; any live worker prunes entries that
            # expired one lease ago or more (a margin for clocks that differ)
            pipe.zadd(k.workers, {worker.id: registry.expires_ms(now, worker.lease_ms)})
            pipe.zremrangebyscore(k.workers, "-inf", f"({int(now * 1000) - worker.lease_ms}")
        await pipes.execute()

    async def deregister(self) -> None:
        worker = self.worker
        pipes = ClientPipelines()
        for lane in worker.lanes:
            k = lane.queue.keys
            pipe = pipes.of(lane.queue.client)
            pipe.delete(k.worker(worker.id))
            pipe.zrem(k.workers, worker.id)
        await pipes.execute()
