"""``aiojobs-redis enqueue TASK --queue NAME`` adds a job of a task by its name, with
arguments given as JSON; it prints the job's id. The worker that runs it checks the
arguments against the function.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, Final

from ..errors import ConfigurationError, InvalidJobId
from ..options import JobOptions
from ..producer.job_ids import check_job_id
from ..producer.queue import Queue
from ..producer.task import TaskCall
from .common import EXIT_OK, add_url_option, cut, redis_url

log = logging.getLogger("aiojobs_redis.cli")

MAX_TASK_NAME: Final = 200  # a Task's name is 1..200 characters


def add_parser(subparsers: Any) -> None:
    """Add ``enqueue`` to ``aiojobs-redis`` (an argparse subparsers object)."""
    p = subparsers.add_parser(
        "enqueue", help="enqueue a job of a task by name; prints the job id",
        description="Enqueue one job of TASK (a task's name, as @task(name=...) gives it)\n"
                    "and print its id. Arguments are JSON; the worker that runs the job\n"
                    "checks them against the function. Bad JSON exits with 2.")
    p.add_argument("task_name", metavar="TASK", help="the task's name")
    p.add_argument("--queue", required=True, metavar="NAME")
    p.add_argument("--args", metavar="JSON", default="[]",
                   help="positional arguments, a JSON array (default: [])")
    p.add_argument("--kwargs", metavar="JSON", default="{}",
                   help="keyword arguments, a JSON object (default: {})")
    p.add_argument("--job-id", metavar="ID",
                   help="the job's id (default: a new unique one); when a job of that id"
                        " exists, nothing is enqueued and its id is printed")
    p.add_argument("--delay", type=float, metavar="SECONDS", help="run it after this delay")
    p.add_argument("--priority", type=int, metavar="N",
                   help="-1000..1000, higher runs first (default: 0)")
    p.add_argument("--attempts", type=int, metavar="N",
                   help="run it at most N times (default: 1; the task's own @task(attempts=)"
                        " is not known here)")
    add_url_option(p)
    p.set_defaults(func=cmd_enqueue)


def _json_type(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "an object" if isinstance(
        value, dict) else "an array"


def _json_option(name: str, text: str, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    what = "a JSON array" if kind is list else "a JSON object"
    try:
        value = json.loads(text)
    except ValueError as e:
        raise SystemExit(f"{name} must be {what}: {e} in {cut(text, 200)!r}") from None
    if not isinstance(value, kind):
        raise SystemExit(f"{name} must be {what}, not {_json_type(value)}: {cut(text, 200)!r}")
    return value


def enqueue_call(args: argparse.Namespace) -> TaskCall[Any]:
    """The job to enqueue, checked before anything connects."""
    name: str = args.task_name
    if not name or len(name) > MAX_TASK_NAME:
        raise SystemExit(f"a task name has 1 to {MAX_TASK_NAME} characters, got {name!r}")
    positional = _json_option("--args", args.args, list)
    keywords = _json_option("--kwargs", args.kwargs, dict)
    if args.job_id is not None:
        try:
            check_job_id(args.job_id, enqueue=True)
        except InvalidJobId as e:
            raise SystemExit(f"--job-id: {e}") from None
    for flag, option, value in (("--delay", "delay_s", args.delay),
                                ("--priority", "priority", args.priority),
                                ("--attempts", "attempts", args.attempts)):
        try:
            JobOptions(**{option: value})
        except ConfigurationError as e:
            raise SystemExit(f"{flag}: {e}") from None
    options = JobOptions(job_id=args.job_id, delay_s=args.delay, priority=args.priority,
                         attempts=args.attempts)
    # TaskCall, not Queue.enqueue(name, ...): a keyword argument named "options" stays one
    return TaskCall(name, tuple(positional), keywords, options)


async def cmd_enqueue(args: argparse.Namespace) -> int:
    call = enqueue_call(args)
    async with Queue.from_url(redis_url(args), name=args.queue) as queue:
        [job] = await queue.enqueue_many([call])
    if job.existed:
        log.warning("queue %s: a job with id %r exists already; nothing was enqueued",
                    args.queue, job.id)
    print(job.id)
    return EXIT_OK
