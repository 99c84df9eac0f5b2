"""Child side of the benchmark protocol, shared by every Python adapter (stdlib only).

An adapter script is run by its library's own virtualenv python as

    python <lib>_adapter.py producer|worker '<json config>'

and talks to the runner over stdin/stdout, one JSON object per line.

producer: prints {"ev": "ready", "version": ...}, then answers each command line
    {"cmd": "enqueue"|"enqueue_concurrent"|"bulk"|"fill"|"fill_delayed"|"stamp"|"set_limits"
    |"quit", "n", "max_s", "producers" (enqueue_concurrent: coroutines at once), ...} with
    {"ok": true, "elapsed": s, "count": jobs} or
    {"ok": false, "unsupported"|"error": ..}.
    A loop stops early at ``max_s`` seconds; bulk calls carry ``chunk`` jobs each.
    "set_limits" {"queue", "max_starts", "per_s"}: limit the queue to ``max_starts`` job
    starts per ``per_s`` seconds, or answer "unsupported" (an adapter without a
    ``set_limits`` method). Where a library's limiter is a worker option instead, the
    producer only answers ok and the worker applies its config's "rate_limit".
worker: config {"queue", "concurrency", ...; "rate_limit": {"max_starts", "per_s"} in the
    rate-limited phase}; prints {"ev": "ready", "t": wall time} just
    before its worker starts, {"ev": "progress", "done": k} while it runs, and on a
    {"cmd": "stop"} line stops gracefully and prints {"ev": "stopped", ...} with its
    counters, start times (every start of a "tick" job in "starts": when the limiter granted
    it where the library records that, else the handler's clock), latencies and peak RSS,
    then exits.

Job kinds every adapter registers: "noop"; "sleep" (asyncio.sleep(0.001)); "flaky"
(fails on its first attempt, succeeds on the second: retries have no backoff);
"stamp" (argument: the producer's time.time() just before the enqueue call).
Adapters with a rate limiter also register "tick": a no-op that records its start time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

KINDS = ("noop", "sleep", "flaky", "stamp", "tick")
FILL_IN_FLIGHT = 64  # concurrent one-by-one enqueues when a library has no bulk API
PROGRESS_EVERY_S = 0.02
STOP_TIMEOUT_S = 20.0


class Unsupported(Exception):
    """The library has no such feature (the row says so)."""


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Counters:
    """What a worker's handlers record; read by the harness."""

    def __init__(self) -> None:
        self.done = 0
        self.failed_attempts = 0
        self.first_start = 0.0
        self.last_end = 0.0
        self.latencies: list[float] = []
        self.starts: list[float] = []

    def begin(self) -> None:
        if not self.first_start:
            self.first_start = time.time()

    def end(self) -> None:
        self.done += 1
        self.last_end = time.time()

    def tick(self) -> None:
        """For the tick kind: record this start's wall clock time."""
        now = time.time()
        self.starts.append(now)
        if not self.first_start:
            self.first_start = now
        self.done += 1
        self.last_end = now

    def stamp(self, t0: float) -> None:
        now = time.time()
        self.latencies.append(now - t0)
        if not self.first_start:
            self.first_start = now

    def fail_first(self, attempt: int) -> None:
        """For the flaky kind: raise on the first attempt (1-based), else count success."""
        self.begin()
        if attempt <= 1:
            self.failed_attempts += 1
            raise RuntimeError("flaky: first attempt fails")
        self.end()


C = Counters()


class Producer(Protocol):
    async def open(self, url: str) -> None: ...
    async def close(self) -> None: ...
    async def enqueue(self, queue: str, kind: str, arg: float | None) -> None: ...
    async def bulk(self, queue: str, kind: str, n: int) -> None:
        """Enqueue n jobs in one bulk call of the library; raise Unsupported if none."""
    async def delayed(self, queue: str, n: int, due_at: float) -> None:
        """Enqueue n noop jobs (bulk where possible) all due at epoch ``due_at``."""
    # optional: async def set_limits(self, queue: str, max_starts: int, per_s: float) -> None
    # (the queue's rate limit; an adapter without it answers "no rate limiter")


class WorkerRunner(Protocol):
    async def start(self, url: str, queue: str, concurrency: int) -> None:
        """Build and start the worker in the background (connections made)."""
    async def stop(self) -> None:
        """Stop gracefully: let running handlers end and their outcomes reach Redis."""


class Deadline:
    """Stops a loop of enqueues early: each phase is bounded in time."""

    def __init__(self, max_s: float | None) -> None:
        self.end = time.perf_counter() + max_s if max_s else float("inf")

    def over(self) -> bool:
        return time.perf_counter() >= self.end


async def _timed(coro: Awaitable[int]) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        count = await coro
    except Unsupported as e:
        return {"ok": False, "unsupported": str(e) or "not supported"}
    except Exception as e:  # reported to the runner, which marks the row
        traceback.print_exc()
        return {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    return {"ok": True, "elapsed": time.perf_counter() - t, "count": count}


async def _one_by_one(p: Producer, queue: str, kind: str, n: int, dl: Deadline) -> int:
    count = 0
    while count < n and not dl.over():
        await p.enqueue(queue, kind, None)
        count += 1
    return count


async def _chunked(p: Producer, queue: str, kind: str, n: int, dl: Deadline,
                   chunk: int) -> int:
    count = 0
    while count < n and not dl.over():
        k = min(chunk, n - count)
        await p.bulk(queue, kind, k)
        count += k
    return count


async def _concurrent(p: Producer, queue: str, kind: str, n: int, dl: Deadline,
                      producers: int = FILL_IN_FLIGHT) -> int:
    """``producers`` coroutines at once, each enqueueing one job at a time (awaited), ``n``
    in all: the enqueue_concurrent phase (a web app's requests), and the fill of a library
    without a bulk API."""
    count = 0

    async def lane() -> None:
        nonlocal count
        while count < n and not dl.over():
            count += 1
            await p.enqueue(queue, kind, None)

    await asyncio.gather(*(lane() for _ in range(producers)))
    return count


async def _fill(p: Producer, queue: str, kind: str, n: int, dl: Deadline, chunk: int) -> int:
    try:
        return await _chunked(p, queue, kind, n, dl, chunk)
    except Unsupported:
        return await _concurrent(p, queue, kind, n, dl)


async def _delayed(p: Producer, queue: str, n: int, due_at: float, dl: Deadline,
                   chunk: int) -> int:
    count = 0
    while count < n and not dl.over():
        k = min(chunk, n - count)
        await p.delayed(queue, k, due_at)
        count += k
    return count


async def _stamps(p: Producer, queue: str, n: int, interval: float) -> int:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        await p.enqueue(queue, "stamp", time.time())
        delay = start + (i + 1) * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return n


async def _set_limits(p: Producer, queue: str, max_starts: int, per_s: float) -> int:
    set_limits = getattr(p, "set_limits", None)
    if set_limits is None:
        raise Unsupported("no rate limiter")
    await set_limits(queue, max_starts, per_s)
    return 0


async def _read_commands() -> asyncio.Queue[dict[str, Any] | None]:
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            if line.strip():
                loop.call_soon_threadsafe(q.put_nowait, json.loads(line))
        loop.call_soon_threadsafe(q.put_nowait, None)

    # a daemon thread (portable across event loops) that never holds up the exit
    threading.Thread(target=reader, name="stdin", daemon=True).start()
    return q


async def producer_main(p: Producer, cfg: dict[str, Any], version: str) -> None:
    await p.open(cfg["url"])
    emit({"ev": "ready", "version": version, "pid": os.getpid()})
    commands = await _read_commands()
    while (cmd := await commands.get()) is not None:
        name, queue = cmd["cmd"], cmd.get("queue", "")
        n, kind = int(cmd.get("n", 0)), cmd.get("kind", "noop")
        dl = Deadline(cmd.get("max_s"))
        chunk = int(cmd.get("chunk", 1000))
        if name == "quit":
            break
        if name == "enqueue":
            emit(await _timed(_one_by_one(p, queue, kind, n, dl)))
        elif name == "enqueue_concurrent":
            emit(await _timed(_concurrent(p, queue, kind, n, dl, int(cmd["producers"]))))
        elif name == "bulk":
            emit(await _timed(_chunked(p, queue, kind, n, dl, chunk)))
        elif name == "fill":
            emit(await _timed(_fill(p, queue, kind, n, dl, chunk)))
        elif name == "fill_delayed":
            emit(await _timed(_delayed(p, queue, n, float(cmd["due_at"]), dl, chunk)))
        elif name == "stamp":
            emit(await _timed(_stamps(p, queue, n, float(cmd["interval"]))))
        elif name == "set_limits":
            emit(await _timed(_set_limits(p, queue, int(cmd["max_starts"]),
                                          float(cmd["per_s"]))))
        else:
            emit({"ok": False, "error": f"unknown command {name!r}"})
    await p.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def worker_main(w: WorkerRunner, cfg: dict[str, Any]) -> None:
    commands = await _read_commands()
    await w.start(cfg["url"], cfg["queue"], int(cfg["concurrency"]))
    emit({"ev": "ready", "t": time.time(), "pid": os.getpid()})
    cpu0 = _cpu()
    stop_cmd = asyncio.ensure_future(commands.get())
    last = -1
    while not stop_cmd.done():
        if C.done != last:
            last = C.done
            emit({"ev": "progress", "done": last})
        await asyncio.wait([stop_cmd], timeout=PROGRESS_EVERY_S)
    t = time.time()
    stop_error = None
    try:
        await asyncio.wait_for(w.stop(), STOP_TIMEOUT_S)
    except BaseException as e:  # the counts stand; the row notes the failed stop
        traceback.print_exc()
        stop_error = f"{type(e).__name__}: {e}"[:200]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    emit({
        "ev": "stopped",
        "done": C.done,
        "failed_attempts": C.failed_attempts,
        "first_start": C.first_start,
        "last_end": C.last_end,
        "latencies": C.latencies,
        "starts": C.starts,
        "stop_s": time.time() - t,
        "stop_error": stop_error,
        "maxrss_kb": usage.ru_maxrss,
        "cpu_s": _cpu() - cpu0,  # from ready to stopped
    })


def run(make_producer: Callable[[], Producer], make_worker: Callable[[], WorkerRunner],
        version: str) -> None:
    """Entry point of an adapter script."""
    logging.disable(logging.CRITICAL)  # the same for every library: no log I/O in the loop
    role, cfg = sys.argv[1], json.loads(sys.argv[2])
    main: Coroutine[Any, Any, None]
    if role == "producer":
        main = producer_main(make_producer(), cfg, version)
    elif role == "worker":
        main = worker_main(make_worker(), cfg)
    else:
        raise SystemExit(f"unknown role {role!r}")
    code = 0
    try:
        try:
            import uvloop  # every Python library runs on uvloop when its venv has it
        except ImportError:
            asyncio.run(main)
        else:
            uvloop.run(main)
    except BaseException:  # the runner reads the traceback from our stderr log
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no waiting for library threads or connection finalizers


async def gather_limited(coros: list[Callable[[], Awaitable[Any]]], limit: int) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(c: Callable[[], Awaitable[Any]]) -> None:
        async with sem:
            await c()

    await asyncio.gather(*(one(c) for c in coros))
