"""ChasquiMQ adapter: a Rust engine (Redis Streams, its own Redis client) driving asyncio
handlers. Queue.add one by one, Queue.add_bulk in bulk (pipelined XADDs), Worker(concurrency=C),
library defaults otherwise (events stream on, embedded promoter and scheduler on, worker
max_attempts 25). Needs redis-server >= 8.6 (the runner skips it on an older one).

One handler dispatches on the job's name, as the library intends (a Worker takes one
handler). Retries: ``attempts=2`` and a fixed backoff of 0 ms on the job; ChasquiMQ
re-schedules a failed job through its delayed set, which the promoter moves back into the
stream. Where the high-level Queue would fall back to one awaited ``add`` per job (bulk
jobs with retry options, and delayed jobs), the adapter calls the engine's own bulk
methods on ``chasquimq.Producer`` (the package's documented power-user surface):
``add_bulk_with_options`` and ``add_in_bulk``. Delayed jobs travel without a name
(``add_in_bulk`` takes none) and run as no-ops. No rate limiter (on its roadmap as
"Future"): the rate-limited phase says so."""

from __future__ import annotations

import asyncio
import math
import time
from importlib.metadata import version
from typing import Any

import _harness as h
import msgpack
from _harness import C
from chasquimq import Job, Queue, Worker
from chasquimq import Producer as NativeProducer

NIL = msgpack.packb(None, use_bin_type=True)  # what Queue.add(name, None) sends
FLAKY_RETRY = {"max_attempts": 2, "backoff": {"kind": "fixed", "delay_ms": 0}}


async def handle(job: Job) -> None:
    kind = job.name
    if kind in ("noop", ""):  # "": a delayed job (add_in_bulk carries no name)
        C.begin()
        C.end()
    elif kind == "sleep":
        C.begin()
        await asyncio.sleep(0.001)
        C.end()
    elif kind == "flaky":
        C.fail_first(job.attempt + 1)  # job.attempt: 0 on the first delivery
    elif kind == "stamp":
        C.stamp(float(job.data))
        C.end()
    else:
        raise ValueError(f"unknown job kind {kind!r}")


class Producer:
    async def open(self, url: str) -> None:
        self.url = url
        self.queues: dict[str, Queue] = {}
        self.natives: dict[str, NativeProducer] = {}

    def q(self, name: str) -> Queue:
        if name not in self.queues:
            self.queues[name] = Queue(name, redis_url=self.url)
        return self.queues[name]

    def native(self, name: str) -> NativeProducer:
        if name not in self.natives:
            self.natives[name] = NativeProducer(self.url, name)
        return self.natives[name]

    async def close(self) -> None:
        for q in self.queues.values():
            await q.close()
        for p in self.natives.values():
            await p.shutdown()  # what Queue.close() calls (not in _native.pyi)

    async def enqueue(self, queue: str, kind: str, arg: float | None) -> None:
        if kind == "flaky":
            await self.q(queue).add(kind, None, attempts=2, backoff=0)
        else:
            await self.q(queue).add(kind, arg)

    async def bulk(self, queue: str, kind: str, n: int) -> None:
        if kind == "flaky":
            await self.native(queue).add_bulk_with_options(
                [NIL] * n, {"name": kind, "retry": FLAKY_RETRY})
        else:
            await self.q(queue).add_bulk([{"name": kind, "data": None} for _ in range(n)])

    async def delayed(self, queue: str, n: int, due_at: float) -> None:
        delay_ms = max(math.ceil((due_at - time.time()) * 1000), 1)  # relative, never early
        await self.native(queue).add_in_bulk(delay_ms, [NIL] * n)


class Runner:
    async def start(self, url: str, queue: str, concurrency: int) -> None:
        self.worker = Worker(queue, handle, redis_url=url, concurrency=concurrency)
        self.task: asyncio.Future[Any] = asyncio.ensure_future(self.worker.run())
        await asyncio.sleep(0)  # the engine starts connecting

    async def stop(self) -> None:
        await self.worker.close()  # trips the shutdown token: in-flight handlers drain
        await self.task  # the engine has flushed its acks when run() returns


if __name__ == "__main__":
    h.run(Producer, Runner, version("chasquimq"))
