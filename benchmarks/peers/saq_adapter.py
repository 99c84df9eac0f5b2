"""saq adapter: Queue.enqueue (no bulk API), Worker(concurrency=C), library defaults
otherwise. Retries: ``retries=2`` on the job, ``retry_delay`` 0 (the default)."""

from __future__ import annotations

import asyncio
import math
from importlib.metadata import version
from typing import Any

import _harness as h
from _harness import C
from saq import Queue, Worker


async def noop(ctx: dict[str, Any]) -> None:
    C.begin()
    C.end()


async def sleep(ctx: dict[str, Any]) -> None:
    C.begin()
    await asyncio.sleep(0.001)
    C.end()


async def flaky(ctx: dict[str, Any]) -> None:
    C.fail_first(ctx["job"].attempts)


async def stamp(ctx: dict[str, Any], *, t0: float) -> None:
    C.stamp(t0)
    C.end()


FUNCTIONS = [noop, sleep, flaky, stamp]


class Producer:
    async def open(self, url: str) -> None:
        self.url = url
        self.queues: dict[str, Queue] = {}

    async def q(self, name: str) -> Queue:
        if name not in self.queues:
            self.queues[name] = q = Queue.from_url(self.url, name=name)
            await q.connect()
        return self.queues[name]

    async def close(self) -> None:
        for q in self.queues.values():
            await q.disconnect()

    async def enqueue(self, queue: str, kind: str, arg: float | None) -> None:
        q = await self.q(queue)
        if kind == "stamp":
            await q.enqueue("stamp", t0=arg)
        elif kind == "flaky":
            await q.enqueue("flaky", retries=2)
        else:
            await q.enqueue(kind)

    async def bulk(self, queue: str, kind: str, n: int) -> None:
        raise h.Unsupported("no bulk enqueue API")

    async def delayed(self, queue: str, n: int, due_at: float) -> None:
        q = await self.q(queue)
        when = math.ceil(due_at)  # saq schedules in whole seconds (the runner picks one)

        def one() -> Any:
            return q.enqueue("noop", scheduled=when)

        await h.gather_limited([one] * n, h.FILL_IN_FLIGHT)


class Runner:
    async def start(self, url: str, queue: str, concurrency: int) -> None:
        self.queue = Queue.from_url(url, name=queue)
        await self.queue.connect()
        self.worker = Worker(self.queue, FUNCTIONS, concurrency=concurrency,
                             shutdown_grace_period_s=1)
        self.worker.SIGNALS = []
        self.task = asyncio.ensure_future(self.worker.start())

    async def stop(self) -> None:
        await self.worker.stop()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.queue.disconnect()


if __name__ == "__main__":
    h.run(Producer, Runner, version("saq"))
