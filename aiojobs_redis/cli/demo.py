"""The demo: a worker and a producer on one queue, a few hundred jobs including
failures and retries, live progress, and a summary with Redis round trips per job.

Without a URL it starts a throwaway redis-server on a free loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections.abc import Iterator
from typing import Any

from ..options import FixedBackoff
from ..producer.queue import Queue
from ..producer.task import TaskCall, task
from ..states import JobState
from ..worker.context import current_job
from ..worker.worker import Worker


@task(name="demo.resize_image")
async def resize_image(image_id: int, width: int) -> dict[str, int]:
    await asyncio.sleep(random.uniform(0.002, 0.02))  # pretend to work
    return {"image_id": image_id, "width": width}


@task(name="demo.send_email", attempts=3, backoff=FixedBackoff(delay_s=0.2))
async def send_email(to: str, subject: str) -> str:
    if current_job().attempt == 1 and hash(to) % 4 == 0:
        raise ConnectionError("SMTP server said 421, try again later")
    await asyncio.sleep(0.005)
    return f"sent {subject!r} to {to}"


@task(name="demo.sync_report", timeout_s=5)
def sync_report(rows: int) -> int:
    time.sleep(0.01)  # blocking code runs in a worker thread
    return rows * 2


@task(name="demo.charge_card", attempts=2, backoff=FixedBackoff(delay_s=0.1))
async def charge_card(order: int) -> None:
    raise ValueError(f"card declined for order {order}")


@contextlib.contextmanager
def _server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from .._redis_server import RedisServer

    with RedisServer(appendonly=True) as server:
        print(f"started a throwaway redis-server on {server.url} (set REDIS_URL to use yours)")
        yield server.url


def _calls(n: int) -> list[TaskCall[Any]]:
    calls: list[TaskCall[Any]] = []
    for i in range(n):
        kind = i % 10
        if kind < 5:
            calls.append(resize_image.call(i, 640))
        elif kind < 8:
            calls.append(send_email.call(f"user{i}@example.com", f"order {i}"))
        elif kind < 9:
            calls.append(sync_report.options(priority=5).call(i))
        elif i % 20 == 9:
            calls.append(charge_card.call(i))
        else:
            calls.append(resize_image.options(delay_s=1.0).call(i, 1280))
    return calls


def _line(counts: dict[JobState, int], total: int, started: float) -> str:
    done = counts[JobState.COMPLETED] + counts[JobState.FAILED]
    width = 30
    filled = int(width * done / max(total, 1))
    return (f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  "
            f"waiting {counts[JobState.WAITING]:>4}  delayed {counts[JobState.DELAYED]:>3}  "
            f"active {counts[JobState.ACTIVE]:>3}  completed {counts[JobState.COMPLETED]:>4}  "
            f"failed {counts[JobState.FAILED]:>3}  {time.monotonic() - started:5.1f} s")


async def _commands(queue: Queue) -> int:
    stats = await queue.client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


async def run_demo(*, url: str | None, jobs: int = 400) -> int:
    # the summary reports the failures; one log line per failed job would drown the progress
    logging.getLogger("aiojobs_redis.worker").setLevel(logging.ERROR)
    with _server(url) as redis_url:
        async with Queue.from_url(redis_url, name=f"demo-{random.randrange(10**6)}") as queue:
            worker = Worker(queue, tasks=[resize_image, send_email, sync_report, charge_card],
                            concurrency=20, handle_signals=True)
            runner = asyncio.create_task(worker.run())
            before = await _commands(queue)
            started = time.monotonic()
            handles = await queue.enqueue_many(_calls(jobs))
            one = await queue.enqueue(resize_image, 10**6, 320)
            print(f"enqueued {len(handles)} jobs in one call (one round trip) and 1 more on"
                  " its own; its result:", await one.result(timeout=30))
            total = len(handles) + 1
            tty = sys.stdout.isatty()
            while True:
                counts = await queue.counts()
                if tty:
                    print(_line(counts, total, started), end="", flush=True)
                done = counts[JobState.COMPLETED] + counts[JobState.FAILED]
                if done >= total or runner.done():
                    break
                await asyncio.sleep(0.2)
            elapsed = time.monotonic() - started
            print(_line(counts, total, started) if not tty else "")
            worker.stop()
            await runner
            commands = await _commands(queue) - before
            failed = await queue.job_ids(JobState.FAILED, limit=1)
            print(f"\nsummary: {counts[JobState.COMPLETED]} completed, "
                  f"{counts[JobState.FAILED]} failed for good, {worker.processed} handled by the "
                  f"worker in {elapsed:.2f} s")
            print(f"retries: {await _retries(queue)} attempts were retried with backoff")
            print(f"Redis commands per job (enqueue + run, incl. the demo's own polling): "
                  f"{commands / total:.1f}")
            if failed:
                info = await queue.job(failed[0]).info()
                print(f"a failed job (failed jobs are kept for inspection and retry; this"
                      f" demo's queue is deleted now): {info.task} attempts={info.attempts}"
                      f" error={info.error!r}")
            await queue.obliterate(force=True)
            ok = counts[JobState.COMPLETED] + counts[JobState.FAILED] == total
            return 0 if ok else 1


async def _retries(queue: Queue) -> int:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await queue.client.xrange(  # type: ignore[assignment]
        queue.keys.events, count=1_000_000
    )
    return sum(1 for _, fields in entries if fields.get(b"e") == b"retrying")
