"""docs/middleware.md, runnable: an error reporter and a metrics middleware around every
job of a worker, and a request id that travels from the producer to the handler.

    REDIS_URL=redis://127.0.0.1:6380/0 python docs/examples/middleware.py
"""

import asyncio
import contextvars
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from aiojobs_redis import (
    FixedBackoff,
    JobContext,
    Queue,
    Worker,
    add_header_source,
    current_job,
    task,
)

CallNext = Callable[[], Awaitable[Any]]


# --- an error reporter (Sentry-shaped: swap `report` for sentry_sdk.capture_exception)

reported: list[str] = []


def report(error: BaseException, context: dict[str, Any]) -> None:
    reported.append(f"{context['task']} attempt {context['attempt']}: {error!r}")


async def report_final_failures(ctx: JobContext, call_next: CallNext) -> Any:
    try:
        return await call_next()
    except Exception as e:
        if ctx.attempt >= ctx.max_attempts:  # retries are expected: report the last one
            report(e, {"job_id": ctx.id, "task": ctx.task, "queue": ctx.queue.name,
                       "attempt": ctx.attempt})
        raise


# --- a metrics middleware: count outcomes and time each task

outcomes: Counter[tuple[str, str]] = Counter()
seconds: Counter[str] = Counter()


async def measure(ctx: JobContext, call_next: CallNext) -> Any:
    start = time.perf_counter()
    try:
        result = await call_next()
    except BaseException:
        outcomes[ctx.task, "error"] += 1
        raise
    else:
        outcomes[ctx.task, "ok"] += 1
        return result
    finally:
        seconds[ctx.task] += time.perf_counter() - start


# --- a request id from the web request into the job's log lines

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
add_header_source(lambda: {"request-id": request_id.get()} if request_id.get() else None)


@task(name="resize")
async def resize(image: str) -> str:
    return f"{image} resized (request {current_job().headers.get('request-id', '-')})"


@task(name="flaky", attempts=2, backoff=FixedBackoff(delay_s=0))
async def flaky() -> None:
    raise ConnectionError("upstream down")


async def main() -> None:
    async with Queue.from_url(os.environ["REDIS_URL"], name="middleware-demo") as queue:
        request_id.set("req-7")  # what a web framework's middleware would do
        resized = await queue.enqueue(resize, "cat.png")
        failing = await queue.enqueue(flaky)
        worker = Worker(queue, tasks=[resize, flaky],
                        middleware=[report_final_failures, measure])  # first: outermost
        await worker.run(burst=True)  # until nothing is left to run
        print(await resized.result(timeout=10))
        print((await failing.info()).state)  # type: ignore[union-attr]
        print(reported)
        print(sorted(outcomes.items()))
        await queue.obliterate()


if __name__ == "__main__":
    asyncio.run(main())
