"""streaq adapter: task.enqueue() and Worker.enqueue_many (bulk), Worker(concurrency=C),
library defaults otherwise. Retries: ``raise StreaqRetry(delay=0)``."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import _harness as h
from _harness import C
from streaq import StreaqRetry, Worker


def make_worker(url: str, queue: str, concurrency: int = 16) -> tuple[Worker[Any], dict[str, Any]]:
    w: Worker[Any] = Worker(redis_url=url, queue_name=queue, concurrency=concurrency,
                            handle_signals=False)

    @w.task(name="noop", silent=True)
    async def noop() -> None:
        C.begin()
        C.end()

    @w.task(name="sleep", silent=True)
    async def sleep() -> None:
        C.begin()
        await asyncio.sleep(0.001)
        C.end()

    @w.task(name="flaky", silent=True)
    async def flaky() -> None:
        try:
            C.fail_first(flaky.context.tries)
        except RuntimeError:
            raise StreaqRetry("first attempt", delay=0) from None

    @w.task(name="stamp", silent=True)
    async def stamp(t0: float) -> None:
        C.stamp(t0)
        C.end()

    return w, {"noop": noop, "sleep": sleep, "flaky": flaky, "stamp": stamp}


class Producer:
    async def open(self, url: str) -> None:
        self.url = url
        self.stack = contextlib.AsyncExitStack()
        self.workers: dict[str, tuple[Worker[Any], dict[str, Any]]] = {}

    async def w(self, queue: str) -> tuple[Worker[Any], dict[str, Any]]:
        if queue not in self.workers:
            w, tasks = make_worker(self.url, queue)
            await self.stack.enter_async_context(w)  # connects, loads the Lua library
            self.workers[queue] = (w, tasks)
        return self.workers[queue]

    async def close(self) -> None:
        await self.stack.aclose()

    async def enqueue(self, queue: str, kind: str, arg: float | None) -> None:
        _, tasks = await self.w(queue)
        if arg is None:
            await tasks[kind].enqueue()
        else:
            await tasks[kind].enqueue(arg)

    async def bulk(self, queue: str, kind: str, n: int) -> None:
        w, tasks = await self.w(queue)
        await w.enqueue_many([tasks[kind].enqueue() for _ in range(n)])

    async def delayed(self, queue: str, n: int, due_at: float) -> None:
        w, tasks = await self.w(queue)
        when = datetime.fromtimestamp(due_at, UTC)
        await w.enqueue_many([tasks["noop"].enqueue().start(schedule=when) for _ in range(n)])


class Runner:
    async def start(self, url: str, queue: str, concurrency: int) -> None:
        self.worker, _ = make_worker(url, queue, concurrency)
        self.task = asyncio.ensure_future(self.worker.run_async())

    async def stop(self) -> None:
        await asyncio.sleep(0.1)  # let the last outcomes reach Redis: stopping cancels
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


if __name__ == "__main__":
    h.run(Producer, Runner, version("streaq"))
