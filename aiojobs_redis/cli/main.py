"""The aiojobs-redis command: run a worker, list live workers, check health,
show counts, show, retry, remove, cancel or change a job, enqueue one, redrive a
dead-letter queue, manage schedules, serve the
dashboard, run the demo."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import redis.exceptions as rx

from .. import __version__
from ..errors import AiojobsRedisError, RedisError, RedisUnavailable
from ..logs import LOG_FORMATS, configure_logging
from ..ops.registry import live_workers
from ..producer.queue import Queue
from . import dashboard, jobs, schedules, worker
from .common import (
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNHEALTHY,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    add_url_option,
    check_url,
    fail,
    plain,
    queue_exists,
    redact,
    redis_url,
)
from .worker import run_loop

log = logging.getLogger("aiojobs_redis.cli")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

EPILOG = f"""\
Global options (--url, --log-level, --log-format, --no-uvloop) may come before or after
the command. --url defaults to $REDIS_URL; --log-level to $AJR_LOG_LEVEL, else INFO;
--log-format (text or json: one JSON object per line) to $AJR_LOG_FORMAT, else text.

exit codes:
  {EXIT_OK}    success (health: the queue, or the worker, is served)
  {EXIT_UNHEALTHY}    unhealthy: no live worker serves the queue (health, workers),
       no such worker (health --worker-id), no such schedule (schedules remove);
       not found: no such queue (counts without --allow-empty), no such job (jobs);
       refused by the job's state (jobs retry: not failed; jobs remove: active;
       jobs cancel: finished; jobs change: running or finished)
  {EXIT_USAGE}    usage or configuration error: bad option, missing or malformed URL,
       MODULE:ATTR that cannot be imported or is not a Worker, missing extra,
       bad JSON in enqueue --args/--kwargs, an invalid job id or queue name
  {EXIT_UNREACHABLE}    Redis is unreachable (refused, timed out, unknown host) or failed
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)
Errors are one line on stderr: "aiojobs-redis: <what went wrong>".
"""


class CliParser(argparse.ArgumentParser):
    """Every parser of the command: errors are one line, and each subcommand accepts
    the global options too (so they may follow the command)."""

    def __init__(self, *args: Any, root: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        if not root:
            _add_global_options(self, root=False)

    def error(self, message: str) -> Any:
        self.exit(EXIT_USAGE, f"aiojobs-redis: {message} (see: {self.prog} --help)\n")


def log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown log level {value!r}: use one of {', '.join(LOG_LEVELS)}")
    return level


def log_format(value: str) -> str:
    fmt = value.strip().lower()
    if fmt not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(
            f"unknown log format {value!r}: use one of {', '.join(LOG_FORMATS)}")
    return fmt


def _add_global_options(parser: argparse.ArgumentParser, *, root: bool) -> None:
    """On the root, the real defaults; on a subcommand, none (a value given before the
    command must survive the subcommand's parse)."""
    group = parser.add_argument_group("global options")
    suppress: dict[str, Any] = {} if root else {"default": argparse.SUPPRESS}
    group.add_argument("--log-level", type=log_level, metavar="LEVEL",
                       help=f"{', '.join(LOG_LEVELS)} (default: $AJR_LOG_LEVEL, else INFO)",
                       **(suppress or {"default": os.environ.get("AJR_LOG_LEVEL", "INFO")}))
    group.add_argument("--log-format", type=log_format, metavar="FORMAT",
                       help="text, or json: one JSON object per line (default:"
                            " $AJR_LOG_FORMAT, else text)",
                       **(suppress or {"default": os.environ.get("AJR_LOG_FORMAT", "text")}))
    group.add_argument("--no-uvloop", action="store_true", help="use asyncio's own loop",
                       **suppress)


async def _cmd_workers(args: argparse.Namespace) -> int:
    async with Queue.from_url(redis_url(args), name=args.queue) as q:
        workers = await live_workers(q.client, q.keys)
    if not workers:
        print(f"no live worker serves queue {args.queue!r}")
        return EXIT_UNHEALTHY
    print(f"{'worker':<40} {'host':<16} {'pid':>7} {'active':>6} {'done':>8} {'failed':>7}"
          f" {'stuck':>5}  queues")
    for w in workers:
        print(f"{w.id:<40} {w.host:<16} {w.pid:>7} {w.active:>6} {w.processed:>8} {w.failed:>7}"
              f" {w.abandoned_threads:>5}  {','.join(w.queues)}")
    if any(w.abandoned_threads for w in workers):
        print("stuck: threads of sync handlers still running after their timeout (each keeps"
              " its slot until it ends)")
    return EXIT_OK


async def _cmd_health(args: argparse.Namespace) -> int:
    async with Queue.from_url(redis_url(args), name=args.queue) as q:
        workers = await live_workers(q.client, q.keys)
        counts = await q.counts()
    summary = ", ".join(f"{state}={n}" for state, n in counts.items())
    if args.worker_id is not None:
        if not any(w.id == args.worker_id for w in workers):
            print(f"UNHEALTHY: worker {args.worker_id!r} has no live heartbeat on queue"
                  f" {args.queue!r}")
            return EXIT_UNHEALTHY
        print(f"OK: worker {args.worker_id!r} is live on queue {args.queue!r} ({summary})")
        return EXIT_OK
    if not workers:
        print(f"UNHEALTHY: no live worker serves queue {args.queue!r} ({summary})")
        return EXIT_UNHEALTHY
    print(f"OK: {len(workers)} live worker(s) on queue {args.queue!r} ({summary})")
    return EXIT_OK


async def _cmd_counts(args: argparse.Namespace) -> int:
    async with Queue.from_url(redis_url(args), name=args.queue) as q:
        if not args.allow_empty and not await queue_exists(q):
            return fail(EXIT_NOT_FOUND,
                        f"queue {args.queue!r} does not exist: none of its keys is in Redis"
                        " (check the name and --url; --allow-empty prints its zero counts)")
        counts = await q.counts()
        paused = await q.is_paused()
    for state, n in counts.items():
        print(f"{state:<10} {n}")
    print(f"{'paused':<10} {paused}")
    return EXIT_OK


async def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    url = args.url or os.environ.get("REDIS_URL")
    if url:
        check_url(url)
    return await run_demo(url=url, jobs=args.jobs)


Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="aiojobs-redis", description=plain(__doc__), epilog=EPILOG,
                       root=True)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--url", help="Redis URL (default: $REDIS_URL)")
    _add_global_options(parser, root=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker.add_parser(sub)

    for name, func, text in [
        ("workers", _cmd_workers, "list the live workers of a queue (exit 1 when none)"),
        ("health", _cmd_health, "exit 0 when a live worker serves the queue, 1 when none,"
                                " 3 when Redis is unreachable (a liveness probe)"),
        ("counts", _cmd_counts, "jobs per state (exit 1 for a queue that does not exist)"),
    ]:
        p = sub.add_parser(name, help=text, description=text, epilog=EPILOG)
        add_url_option(p)
        p.add_argument("--queue", required=True, metavar="NAME")
        if name == "health":
            p.add_argument("--worker-id", metavar="ID",
                           help="check this one worker instead (its id as `workers` lists"
                                " it): exit 0 while its heartbeat is live")
        if name == "counts":
            p.add_argument("--allow-empty", action="store_true",
                           help="print zeros for a queue none of whose keys exists (by"
                                " default that is an error: a misspelt name, say)")
        p.set_defaults(func=func)

    p = sub.add_parser("demo", help="run a demo (starts its own redis-server without REDIS_URL)")
    add_url_option(p, "Redis URL (default: $REDIS_URL, else a throwaway server)")
    p.add_argument("--jobs", type=int, default=400)
    p.set_defaults(func=_cmd_demo)

    jobs.add_parser(sub)
    schedules.add_parser(sub)
    dashboard.add_parser(sub)
    return parser


def _redis_failure(e: BaseException, url: str | None) -> tuple[int, str] | None:
    """(exit code, message) for a failure to talk to Redis, else None."""
    at = f" at {redact(url)}" if url else ""
    if isinstance(e, rx.AuthenticationError):
        return EXIT_USAGE, f"Redis{at} refused the credentials: {e} (check the URL's password)"
    if isinstance(e, RedisUnavailable):
        return EXIT_UNREACHABLE, f"{e} (is Redis running{at}?)"
    if isinstance(e, rx.ConnectionError | rx.TimeoutError | socket.gaierror | ConnectionError
                  | TimeoutError):
        return EXIT_UNREACHABLE, f"Redis is unreachable: {e} (is Redis running{at}?)"
    if isinstance(e, rx.RedisError | RedisError):
        return EXIT_UNREACHABLE, f"Redis{at} failed: {e}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    func: Command = args.func
    try:
        return run_loop(func(args), use_uvloop=not args.no_uvloop)
    except SystemExit as e:
        if isinstance(e.code, str):  # raise SystemExit("message") in a command
            return fail(EXIT_USAGE, e.code)
        raise
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as e:
        failure = _redis_failure(e, getattr(args, "url", None) or os.environ.get("REDIS_URL"))
        if failure is not None:
            return fail(*failure)
        if isinstance(e, AiojobsRedisError):
            return fail(EXIT_USAGE, str(e))
        raise




if __name__ == "__main__":
    sys.exit(main())
