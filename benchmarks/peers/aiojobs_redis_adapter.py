"""aiojobs_redis adapter: Queue.enqueue / enqueue_many, Worker(concurrency=C),
Queue.set_limits(max_starts=, per_s=) for the rate limit (kept in Redis, for every worker)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import _harness as h
from _harness import C

import aiojobs_redis as ajr
from aiojobs_redis import FixedBackoff, Queue, Worker, current_job, task


@task(name="noop")
async def noop() -> None:
    C.begin()
    C.end()


@task(name="sleep")
async def sleep() -> None:
    C.begin()
    await asyncio.sleep(0.001)
    C.end()


@task(name="flaky", attempts=2, backoff=FixedBackoff(delay_s=0.0))
async def flaky() -> None:
    C.fail_first(current_job().attempt)


@task(name="stamp")
async def stamp(t0: float) -> None:
    C.stamp(t0)
    C.end()


_tick_ids: list[str] = []


@task(name="tick")
async def tick() -> None:
    C.tick()
    _tick_ids.append(current_job().id)


async def _granted_starts(queue: Queue) -> list[float]:
    """When the limiter let each tick job start: the 'started' time (Redis's clock) the
    fetch wrote into its record. A handler's own clock reading comes later, by however
    long the worker's loop took to reach it, which says nothing of the limit."""
    pipe = queue.client.pipeline(transaction=False)
    for job_id in _tick_ids:
        pipe.hget(queue.keys.job(job_id), "started")
    return [int(v) / 1000 for v in await pipe.execute() if v is not None]


TASKS: dict[str, Any] = {"noop": noop, "sleep": sleep, "flaky": flaky, "stamp": stamp,
                         "tick": tick}


class Producer:
    def __init__(self) -> None:
        self.queues: dict[str, Queue] = {}
        self.url = ""

    async def open(self, url: str) -> None:
        self.url = url

    def q(self, name: str) -> Queue:
        if name not in self.queues:
            self.queues[name] = Queue.from_url(self.url, name=name)
        return self.queues[name]

    async def close(self) -> None:
        for q in self.queues.values():
            await q.close()

    async def enqueue(self, queue: str, kind: str, arg: float | None) -> None:
        if arg is None:
            await self.q(queue).enqueue(TASKS[kind])
        else:
            await self.q(queue).enqueue(TASKS[kind], arg)

    async def bulk(self, queue: str, kind: str, n: int) -> None:
        t = TASKS[kind]
        await self.q(queue).enqueue_many([t.call() for _ in range(n)])

    async def delayed(self, queue: str, n: int, due_at: float) -> None:
        t = noop.options(run_at=datetime.fromtimestamp(due_at, UTC))
        await self.q(queue).enqueue_many([t.call() for _ in range(n)])

    async def set_limits(self, queue: str, max_starts: int, per_s: float) -> None:
        await self.q(queue).set_limits(max_starts=max_starts, per_s=per_s)


class Runner:
    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None

    async def start(self, url: str, queue: str, concurrency: int) -> None:
        self.queue = Queue.from_url(url, name=queue)
        self.worker = Worker(self.queue, tasks=list(TASKS.values()), concurrency=concurrency,
                             handle_signals=False)
        self.task = asyncio.create_task(self.worker.run())

    async def stop(self) -> None:
        self.worker.stop()
        assert self.task is not None
        await self.task
        if _tick_ids:
            C.starts = await _granted_starts(self.queue)
        await self.queue.close()


if __name__ == "__main__":
    h.run(Producer, Runner, ajr.__version__)
