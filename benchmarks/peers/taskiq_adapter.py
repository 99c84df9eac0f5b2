"""taskiq adapter: RedisStreamBroker from taskiq-redis, ``task.kiq()`` (no bulk API), the
receiver with max_async_tasks=C, no result backend (taskiq's default). Retries:
SimpleRetryMiddleware, ``retry_on_error=True, max_retries=2``. Delayed jobs need a
separate scheduler process in taskiq: not measured."""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import _harness as h
from _harness import C
from taskiq import Context, TaskiqDepends
from taskiq.api import run_receiver_task
from taskiq.middlewares import SimpleRetryMiddleware
from taskiq_redis import RedisStreamBroker


def make_broker(url: str, queue: str) -> tuple[RedisStreamBroker, dict[str, Any]]:
    broker = RedisStreamBroker(url, queue_name=queue).with_middlewares(
        SimpleRetryMiddleware(default_retry_count=2))

    @broker.task(task_name="noop")
    async def noop() -> None:
        C.begin()
        C.end()

    @broker.task(task_name="sleep")
    async def sleep() -> None:
        C.begin()
        await asyncio.sleep(0.001)
        C.end()

    @broker.task(task_name="flaky", retry_on_error=True, max_retries=2)
    async def flaky(context: Context = TaskiqDepends()) -> None:  # noqa: B008
        C.fail_first(int(context.message.labels.get("_retries", 0)) + 1)

    @broker.task(task_name="stamp")
    async def stamp(t0: float) -> None:
        C.stamp(t0)
        C.end()

    return broker, {"noop": noop, "sleep": sleep, "flaky": flaky, "stamp": stamp}


class Producer:
    async def open(self, url: str) -> None:
        self.url = url
        self.brokers: dict[str, tuple[RedisStreamBroker, dict[str, Any]]] = {}

    async def b(self, queue: str) -> tuple[RedisStreamBroker, dict[str, Any]]:
        if queue not in self.brokers:
            broker, tasks = make_broker(self.url, queue)
            await broker.startup()  # creates the consumer group before any message
            self.brokers[queue] = (broker, tasks)
        return self.brokers[queue]

    async def close(self) -> None:
        for broker, _ in self.brokers.values():
            await broker.shutdown()

    async def enqueue(self, queue: str, kind: str, arg: float | None) -> None:
        _, tasks = await self.b(queue)
        if arg is None:
            await tasks[kind].kiq()
        else:
            await tasks[kind].kiq(arg)

    async def bulk(self, queue: str, kind: str, n: int) -> None:
        raise h.Unsupported("no bulk enqueue API")

    async def delayed(self, queue: str, n: int, due_at: float) -> None:
        raise h.Unsupported("delayed jobs need a separate scheduler process")


class Runner:
    async def start(self, url: str, queue: str, concurrency: int) -> None:
        self.broker, _ = make_broker(url, queue)
        self.broker.is_worker_process = True
        await self.broker.startup()
        self.task = asyncio.ensure_future(run_receiver_task(
            self.broker, max_async_tasks=concurrency, run_startup=False))

    async def stop(self) -> None:
        await asyncio.sleep(0.1)  # let the last acks reach Redis: stopping cancels
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.broker.shutdown()


if __name__ == "__main__":
    h.run(Producer, Runner, version("taskiq") + "+taskiq-redis " + version("taskiq-redis"))
