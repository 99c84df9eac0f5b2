"""``aiojobs-redis redrive --queue DEAD [--task T] [--error TEXT] [--limit N]``.

Sends the jobs of a dead-letter queue back to their origin queues, as new waiting jobs
with the same ids and fresh attempts, oldest first: all of them, or those of a task, or
those whose error contains a text; at most N. Prints how many went back. A job with no
origin (the queue is not a dead-letter queue) stays where it is.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Final

from ..producer.queue import Queue
from .common import EXIT_OK, add_url_option, plain, queue_exists, redis_url

log = logging.getLogger("aiojobs_redis.cli")

MAX_LIMIT: Final = 1_000_000
MAX_TASK_NAME: Final = 200  # a Task's name is 1..200 characters
MAX_ERROR_TEXT: Final = 1000


def add_parser(subparsers: Any) -> None:
    """Add ``redrive`` to ``aiojobs-redis`` (an argparse subparsers object)."""
    p = subparsers.add_parser(
        "redrive", help="send the jobs of a dead-letter queue back to their origin queues",
        description=plain(__doc__))
    p.add_argument("--queue", required=True, metavar="DEAD",
                   help="the dead-letter queue (as in Queue(..., dead_letter=DEAD))")
    p.add_argument("--task", metavar="T", help="only the jobs of this task (its name)")
    p.add_argument("--error", metavar="TEXT",
                   help="only the jobs whose error contains TEXT")
    p.add_argument("--limit", type=int, metavar="N",
                   help=f"at most N jobs, oldest first (1..{MAX_LIMIT:,})")
    add_url_option(p)
    p.set_defaults(func=cmd_redrive)


def redrive_filters(args: argparse.Namespace) -> dict[str, Any]:
    """The filters of ``redrive``, checked before anything connects."""
    if args.task is not None and not 1 <= len(args.task) <= MAX_TASK_NAME:
        raise SystemExit(f"--task: a task name has 1 to {MAX_TASK_NAME} characters")
    if args.error is not None and not 1 <= len(args.error) <= MAX_ERROR_TEXT:
        raise SystemExit(f"--error: give a text of 1 to {MAX_ERROR_TEXT} characters")
    if args.limit is not None and not 1 <= args.limit <= MAX_LIMIT:
        raise SystemExit(f"--limit: give a number from 1 to {MAX_LIMIT:,}, got {args.limit}")
    return {"task": args.task, "error": args.error, "limit": args.limit}


async def cmd_redrive(args: argparse.Namespace) -> int:
    filters = redrive_filters(args)
    async with Queue.from_url(redis_url(args), name=args.queue) as dead:
        n = await dead.redrive(**filters)
        if n == 0 and not await queue_exists(dead):
            log.warning("queue %r has no keys at all: is its name right?", args.queue)
    print(f"{n} job(s) sent back to their origin queues")
    return EXIT_OK
