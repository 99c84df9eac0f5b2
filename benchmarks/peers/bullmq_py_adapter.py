"""BullMQ for Python adapter: Queue.add and Queue.addBulk, Worker(concurrency=C), library
defaults otherwise (completed jobs are kept, as BullMQ does by default). Retries:
``attempts=2`` with no backoff (BullMQ retries at once)."""

from __future__ import annotations

import asyncio
import time
from importlib.metadata import version
from typing import Any

import _harness as h
from _harness import C
from bullmq import Queue, Worker


async def process(job: Any, token: str) -> None:
    kind = job.name
    if kind == "noop":
        C.begin()
        C.end()
    elif kind == "sleep":
        C.begin()
        await asyncio.sleep(0.001)
        C.end()
    elif kind == "flaky":
        C.fail_first(job.attemptsMade + 1)
    elif kind == "stamp":
        C.stamp(job.data["t0"])
        C.end()


def job_opts(kind: str) -> dict[str, Any]:
    return {"attempts": 2} if kind == "flaky" else {}


class Producer:
    async def open(self, url: str) -> None:
        self.url = url
        self.queues: dict[str, Queue] = {}

    def q(self, name: str) -> Queue:
        if name not in self.queues:
            self.queues[name] = Queue(name, {"connection": self.url})
        return self.queues[name]

    async def close(self) -> None:
        for q in self.queues.values():
            await q.close()

    async def enqueue(self, queue: str, kind: str, arg: float | None) -> None:
        data = {} if arg is None else {"t0": arg}
        await self.q(queue).add(kind, data, job_opts(kind))

    async def bulk(self, queue: str, kind: str, n: int) -> None:
        await self.q(queue).addBulk([{"name": kind, "data": {}, "opts": job_opts(kind)}
                                     for _ in range(n)])

    async def delayed(self, queue: str, n: int, due_at: float) -> None:
        delay = max(int((due_at - time.time()) * 1000), 1)  # BullMQ takes a relative delay
        await self.q(queue).addBulk([{"name": "noop", "data": {}, "opts": {"delay": delay}}
                                     for _ in range(n)])


class Runner:
    async def start(self, url: str, queue: str, concurrency: int) -> None:
        self.worker = Worker(queue, process, {"connection": url, "concurrency": concurrency})

    async def stop(self) -> None:
        await self.worker.close()


if __name__ == "__main__":
    h.run(Producer, Runner, version("bullmq"))
