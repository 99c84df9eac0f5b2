"""Exactly one job per tick with several real worker processes racing for every tick.

The worker processes are this module run as a script (``python -m
tests.test_schedules_race URL QUEUE``): each declares the same schedule (a short
interval, catch_up="all" so that no tick may be folded into another) and records
every job it runs in a list inside the queue's hash tag.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

from aiojobs_redis import JobState, Queue, Schedule, Worker, current_job, task

from .conftest import wait_until

WORKERS = 4
EVERY_S = 0.05
TICKS = 300
NAME = "race"


def _schedule(record: object) -> Schedule:
    # max_runs ends the schedule after exactly TICKS ticks (removing it would not: the
    # workers declare it, so they would re-create it within a verification period)
    return Schedule(NAME, record, every_s=EVERY_S, catch_up="all",  # type: ignore[arg-type]
                    max_runs=TICKS)


async def _serve(url: str, queue_name: str) -> None:
    queue = Queue.from_url(url, name=queue_name)
    runs_key = queue.keys.base + "test:runs"

    @task(name="record")
    async def record() -> None:
        await queue.client.rpush(runs_key, current_job().id)

    worker = Worker(queue, tasks=[record], schedules=[_schedule(record)], concurrency=20,
                    lease_ms=5000)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _dump_tasks)
    try:
        await worker.run()
    finally:
        await queue.close()


async def test_every_tick_runs_once_with_racing_worker_processes(queue: Queue,
                                                                redis_url: str) -> None:
    procs = _spawn(redis_url, queue.name)
    runs_key = queue.keys.base + "test:runs"
    try:
        async def ticks_fired() -> int:
            info = await queue.schedules.get(NAME)
            return 0 if info is None else info.runs

        await wait_until(lambda: _at_least(ticks_fired(), TICKS), timeout=45, interval=0.1)
        info = await queue.schedules.get(NAME)
        assert info is not None and info.next_run_at is None  # ended at its run limit
        fired = info.runs

        async def drained() -> bool:
            counts = await queue.counts()
            return counts[JobState.WAITING] == 0 and counts[JobState.ACTIVE] == 0

        await wait_until(drained, timeout=20, interval=0.05)
        final_runs = int(await queue.client.llen(runs_key))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        finished = [_finish(p) for p in procs]
    logs = [err for err, _ in finished]
    hung = sum(h for _, h in finished)
    assert all(p.returncode == 0 or h for p, (_, h) in zip(procs, finished, strict=True)), logs

    raw: list[Any] = await queue.client.lrange(runs_key, 0, -1)
    ran = [r.decode() for r in raw]
    assert len(ran) == final_runs
    ticks = sorted(int(r.rsplit(":", 1)[1]) for r in ran)
    counts = Counter(ticks)
    duplicates = sum(n - 1 for n in counts.values())
    distinct = sorted(counts)
    step = round(EVERY_S * 1000)
    misses = sum((b - a) // step - 1 for a, b in pairwise(distinct))
    fired_by = [len(re.findall(r"⏰ .* schedule race: tick", log)) for log in logs]
    print(f"\nexactly-once race: {WORKERS} worker processes, interval {step} ms, "
          f"{len(distinct)} ticks run ({fired} counted by the schedule), "
          f"{duplicates} duplicates, {misses} misses; ticks fired per worker: {fired_by};"
          f" {hung} worker shutdown(s) hung")
    assert len(distinct) == fired == TICKS
    assert duplicates == 0
    assert misses == 0
    assert all(t % step == 0 for t in distinct)
    assert sum(fired_by) == len(distinct)
    assert sum(1 for n in fired_by if n > 0) >= 2, "the race needs several workers firing"


def _dump_tasks() -> None:
    """On SIGUSR2: every asyncio task's stack to stderr (to debug a hang)."""
    for t in asyncio.all_tasks():
        print(f"--- {t.get_name()}: {t.get_coro()}", file=sys.stderr)
        t.print_stack(file=sys.stderr)
    sys.stderr.flush()


def _spawn(url: str, queue_name: str, n: int = WORKERS) -> list[subprocess.Popen[str]]:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    return [
        subprocess.Popen([sys.executable, "-m", "tests.test_schedules_race", url, queue_name],
                         cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(n)
    ]


def _finish(p: subprocess.Popen[str]) -> tuple[str, bool]:
    """Wait for a worker process to stop after SIGTERM. If it hangs, print its asyncio
    task stacks and kill it: a hung shutdown is a worker-lifecycle bug, reported loudly
    here but not what this module tests (the tick figures are checked from Redis)."""
    try:
        return p.communicate(timeout=15)[1], False
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGUSR2)  # asyncio task stacks
        try:
            err = p.communicate(timeout=3)[1]
        except subprocess.TimeoutExpired:
            err = ""
        p.kill()
        err += p.communicate()[1]
        tasks = err[err.find("--- "):] if "--- " in err else err[-3000:]
        print(f"\nWORKER SHUTDOWN HUNG (pid {p.pid}); killed. Its asyncio tasks:\n{tasks}")
        return err, True


async def test_ticks_go_on_when_a_worker_process_is_killed(queue: Queue, redis_url: str) -> None:
    """SIGKILL one of three workers half-way: the others fire every remaining tick."""
    procs = _spawn(redis_url, queue.name, 3)

    async def runs() -> int:
        info = await queue.schedules.get(NAME)
        return 0 if info is None else info.runs

    try:
        await wait_until(lambda: _at_least(runs(), 60), timeout=30, interval=0.05)
        procs[0].kill()
        procs[0].wait(timeout=10)
        killed_at = await runs()
        await wait_until(lambda: _at_least(runs(), killed_at + 100), timeout=30, interval=0.05)
    finally:
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
        finished = [_finish(p) for p in procs[1:]]
        procs[0].communicate()
    assert all(p.returncode == 0 or h for p, (_, h) in zip(procs[1:], finished, strict=True))
    prefix = f"{queue.keys.job_prefix}sched:{NAME}:"
    keys = [k.decode() async for k in queue.client.scan_iter(match=prefix + "*", count=1000)]
    ticks = sorted(int(k[len(prefix):]) for k in keys)
    step = round(EVERY_S * 1000)
    misses = sum((b - a) // step - 1 for a, b in pairwise(ticks))
    print(f"\nkilled one of 3 workers after {killed_at} ticks; {len(ticks)} tick jobs in all,"
          f" {misses} misses")
    assert len(ticks) >= killed_at + 100 and misses == 0


async def _at_least(value: object, n: int) -> bool:
    assert asyncio.iscoroutine(value)
    got: int = await value
    return got >= n


if __name__ == "__main__":
    import faulthandler

    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(process)d %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiojobs_redis.schedules").setLevel(logging.INFO)
    asyncio.run(_serve(sys.argv[1], sys.argv[2]))
