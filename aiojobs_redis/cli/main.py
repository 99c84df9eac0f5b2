"""The ``aiojobs-redis`` command: run a worker, list live workers, check health,
show counts, run the demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import AiojobsRedisError
from ..ops.registry import live_workers
from ..producer.queue import Queue
from . import dashboard, schedules, worker
from .worker import run_loop

log = logging.getLogger("aiojobs_redis.cli")


def _url(args: argparse.Namespace) -> str:
    url: str | None = args.url or os.environ.get("REDIS_URL")
    if not url:
        raise SystemExit("give --url or set REDIS_URL")
    return url


async def _cmd_workers(args: argparse.Namespace) -> int:
    async with Queue.from_url(_url(args), name=args.queue) as q:
        workers = await live_workers(q.client, q.keys)
    if not workers:
        print(f"no live worker serves queue {args.queue!r}")
        return 1
    print(f"{'worker':<40} {'host':<16} {'pid':>7} {'active':>6} {'done':>8} {'failed':>7}"
          "  queues")
    for w in workers:
        print(f"{w.id:<40} {w.host:<16} {w.pid:>7} {w.active:>6} {w.processed:>8} {w.failed:>7}"
              f"  {','.join(w.queues)}")
    return 0


async def _cmd_health(args: argparse.Namespace) -> int:
    async with Queue.from_url(_url(args), name=args.queue) as q:
        workers = await live_workers(q.client, q.keys)
        counts = await q.counts()
    summary = ", ".join(f"{state}={n}" for state, n in counts.items())
    if not workers:
        print(f"UNHEALTHY: no live worker serves queue {args.queue!r} ({summary})")
        return 1
    print(f"OK: {len(workers)} live worker(s) on queue {args.queue!r} ({summary})")
    return 0


async def _cmd_counts(args: argparse.Namespace) -> int:
    async with Queue.from_url(_url(args), name=args.queue) as q:
        counts = await q.counts()
        paused = await q.is_paused()
    for state, n in counts.items():
        print(f"{state:<10} {n}")
    print(f"{'paused':<10} {paused}")
    return 0


async def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return await run_demo(url=args.url or os.environ.get("REDIS_URL"), jobs=args.jobs)


Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiojobs-redis", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("AJR_LOG_LEVEL", "INFO"))
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop")
    sub = parser.add_subparsers(dest="command", required=True)

    worker.add_parser(sub)

    for name, func, text in [
        ("workers", _cmd_workers, "list the live workers of a queue"),
        ("health", _cmd_health, "exit 1 when no live worker serves the queue (a liveness probe)"),
        ("counts", _cmd_counts, "jobs per state"),
    ]:
        p = sub.add_parser(name, help=text)
        p.add_argument("--url", help="Redis URL (default: $REDIS_URL)")
        p.add_argument("--queue", required=True)
        p.set_defaults(func=func)

    p = sub.add_parser("demo", help="run a demo (starts its own redis-server without REDIS_URL)")
    p.add_argument("--url", help="Redis URL (default: $REDIS_URL, else a throwaway server)")
    p.add_argument("--jobs", type=int, default=400)
    p.set_defaults(func=_cmd_demo)

    schedules.add_parser(sub)
    dashboard.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    func: Command = args.func
    try:
        return run_loop(func(args), use_uvloop=not args.no_uvloop)
    except AiojobsRedisError as e:
        print(f"aiojobs-redis: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
