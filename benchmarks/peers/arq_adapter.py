"""arq adapter: ArqRedis.enqueue_job (no bulk API), Worker(max_jobs=C), library defaults
otherwise (poll_delay 0.5 s). Retries: ``raise Retry(defer=0)``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import _harness as h
from _harness import C
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Retry, Worker


async def noop(ctx: dict[str, Any]) -> None:
    C.begin()
    C.end()


async def sleep(ctx: dict[str, Any]) -> None:
    C.begin()
    await asyncio.sleep(0.001)
    C.end()


async def flaky(ctx: dict[str, Any]) -> None:
    try:
        C.fail_first(ctx["job_try"])
    except RuntimeError:
        raise Retry(defer=0) from None


async def stamp(ctx: dict[str, Any], t0: float) -> None:
    C.stamp(t0)
    C.end()


FUNCTIONS = [noop, sleep, flaky, stamp]


class Producer:
    async def open(self, url: str) -> None:
        self.pool: ArqRedis = await create_pool(RedisSettings.from_dsn(url))

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue(self, queue: str, kind: str, arg: float | None) -> None:
        args = () if arg is None else (arg,)
        await self.pool.enqueue_job(kind, *args, _queue_name=queue)

    async def bulk(self, queue: str, kind: str, n: int) -> None:
        raise h.Unsupported("no bulk enqueue API")

    async def delayed(self, queue: str, n: int, due_at: float) -> None:
        when = datetime.fromtimestamp(due_at, UTC)

        def one() -> Any:
            return self.pool.enqueue_job("noop", _queue_name=queue, _defer_until=when)

        await h.gather_limited([one] * n, h.FILL_IN_FLIGHT)


class Runner:
    async def start(self, url: str, queue: str, concurrency: int) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
        self.worker = Worker(FUNCTIONS, queue_name=queue, redis_pool=self.pool,
                             max_jobs=concurrency, handle_signals=False)
        self.task = asyncio.ensure_future(self.worker.async_run())

    async def stop(self) -> None:
        w = self.worker
        w.allow_pick_jobs = False
        self.task.cancel()  # the poll loop first: it may be starting a batch of jobs
        await asyncio.gather(self.task, return_exceptions=True)
        await asyncio.gather(*w.tasks.values(), return_exceptions=True)  # running jobs end
        await w.close()


if __name__ == "__main__":
    h.run(Producer, Runner, version("arq"))
