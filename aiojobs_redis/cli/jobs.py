"""``aiojobs-redis jobs show | retry | cancel | change | remove ID --queue NAME``.

``jobs show`` prints a job's record: state, task, attempts, times (ISO-8601, UTC),
error and traceback, arguments, progress and result (as JSON, long values cut), then
its log lines; ``--json`` prints the whole record as one JSON object. ``jobs retry``
puts a failed job back to waiting with a fresh set of attempts; ``jobs cancel`` cancels
a waiting or delayed job (it never runs) or asks the worker of an active one to stop
it; ``jobs change`` gives a waiting or delayed job a new ``--priority`` and/or
``--delay``; ``jobs remove`` deletes a job that is not active. An unknown job id, or a
job whose state refuses the operation, exits with 1.
"""

from __future__ import annotations

import argparse
import getpass
import socket
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final

from ..errors import ConfigurationError, InvalidJobId, JobNotFound, JobStateError
from ..logs import iso_time, json_line, jsonable
from ..options import JobOptions
from ..producer.job import JobInfo, JobLogLine
from ..producer.job_ids import check_job_id
from ..producer.queue import Queue
from ..states import JobState
from . import enqueue, redrive
from .common import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    add_url_option,
    cut,
    fail,
    plain,
    queue_exists,
    redis_url,
)

#: characters of JSON shown for arguments, progress and result in text output
VALUE_CAP: Final = 2000
#: characters of an error message or traceback shown in text output
TEXT_CAP: Final = 20_000


def add_parser(subparsers: Any) -> None:
    """Add ``jobs``, ``enqueue`` and ``redrive`` to ``aiojobs-redis`` (an argparse
    subparsers object)."""
    p = subparsers.add_parser("jobs", help="show, retry, cancel, change or remove one job by"
                                           " its id",
                              description=plain(__doc__))
    sub = p.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("job_id", metavar="ID", help="the job's id")
        q.add_argument("--queue", required=True, metavar="NAME", help="the job's queue")
        add_url_option(q)

    q = sub.add_parser("show", help="the job's state, task, attempts, times, error,"
                                    " arguments, result and log")
    common(q)
    q.add_argument("--json", action="store_true",
                   help="print the record as one JSON object (values not cut)")
    q.set_defaults(func=cmd_show)

    q = sub.add_parser("retry", help="put a failed job back to waiting, with fresh attempts")
    common(q)
    q.set_defaults(func=cmd_retry)

    q = sub.add_parser("remove", help="delete a job (an active one is refused)")
    common(q)
    q.set_defaults(func=cmd_remove)

    q = sub.add_parser("cancel", help="cancel a waiting or delayed job, or stop an active one"
                                      " (a finished job is refused)")
    common(q)
    q.set_defaults(func=cmd_cancel)

    q = sub.add_parser("change", help="give a waiting or delayed job a new priority and/or"
                                      " delay (a running or finished job is refused)",
                       description="Give a waiting or delayed job a new --priority, a new"
                                   " --delay, or both. A delay\nabove 0 makes it delayed,"
                                   " --delay 0 makes it wait now. A running or finished\n"
                                   "job is refused (exit 1); neither option is a usage"
                                   " error (exit 2).")
    common(q)
    q.add_argument("--priority", type=int, metavar="N",
                   help="-1000..1000, higher runs first (among the jobs of a priority, a"
                        " waiting job keeps its place)")
    q.add_argument("--delay", type=float, metavar="SECONDS",
                   help="run it no earlier than SECONDS from now (0: now)")
    q.set_defaults(func=cmd_change)

    enqueue.add_parser(subparsers)  # aiojobs-redis enqueue TASK --queue NAME
    redrive.add_parser(subparsers)  # aiojobs-redis redrive --queue DEAD (a dead-letter queue)


# ------------------------------------------------------------------ jobs show


def printable(text: str) -> str:
    """``text`` safe for a terminal: control and format characters (escape sequences,
    bidi overrides, ...) written as escapes; line breaks and tabs kept."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c in "\n\t" or c.isprintable():
            out.append(c)
        elif unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(c.encode("unicode_escape").decode("ascii"))
        else:
            out.append(c)
    return "".join(out)


def value_text(value: Any, cap: int = VALUE_CAP) -> str:
    """A decoded value (arguments, progress, result) as one line of JSON, cut at ``cap``
    characters."""
    return cut(json_line(value), cap)


def _when(value: datetime | None) -> str | None:
    return None if value is None else iso_time(value)


def info_dict(info: JobInfo, logs: list[JobLogLine] | None = None) -> dict[str, Any]:
    """The record as JSON-able data (times as ISO-8601 UTC strings), with its log."""
    return {
        "id": info.id, "queue": info.queue, "task": info.task, "state": str(info.state),
        "priority": info.priority, "attempts": info.attempts,
        "max_attempts": info.max_attempts, "stalls": info.stalls,
        "created_at": _when(info.created_at), "started_at": _when(info.started_at),
        "finished_at": _when(info.finished_at), "due_at": _when(info.due_at),
        "worker": info.worker, "error": info.error, "traceback": info.traceback,
        "args": jsonable(info.args), "kwargs": jsonable(info.kwargs),
        "payload_error": info.payload_error,
        "progress": jsonable(info.progress), "result": jsonable(info.result),
        "cancelled_by": info.cancelled_by, "cancel_requested": info.cancel_requested,
        "logs": [{"at": iso_time(line.at), "attempt": line.attempt, "text": line.text}
                 for line in logs or ()],
    }


def info_lines(info: JobInfo, logs: list[JobLogLine] | None = None) -> Iterator[str]:
    """The record as text lines for a terminal, then its log lines (when it has any):
    ``logs:``, then one ``  <time> [attempt N] <text>`` each, oldest first."""
    def row(name: str, value: object) -> str:
        text = printable(str(value)).replace("\n", "\n" + " " * 13)
        return f"{name:<12} {text}"

    yield row("id", info.id)
    yield row("queue", info.queue)
    yield row("task", info.task)
    yield row("state", info.state)
    yield row("attempts", f"{info.attempts} of {info.max_attempts}"
                          + (f" (stalled {info.stalls} time(s))" if info.stalls else ""))
    yield row("priority", info.priority)
    for name, when in (("created", info.created_at), ("started", info.started_at),
                       ("finished", info.finished_at), ("due", info.due_at)):
        if when is not None:
            yield row(name, iso_time(when))
    if info.worker:
        yield row("worker", info.worker)
    if info.cancelled_by:
        yield row("cancelled_by", info.cancelled_by)
    if info.cancel_requested and info.state is JobState.ACTIVE:
        yield row("cancel", "requested: its worker is stopping it")
    if info.payload_error:
        yield row("arguments", f"cannot be decoded: {info.payload_error}")
    else:
        yield row("args", value_text(info.args))
        yield row("kwargs", value_text(info.kwargs))
    if info.progress is not None:
        yield row("progress", value_text(info.progress))
    if info.result is not None:
        yield row("result", value_text(info.result))
    if info.error:
        yield row("error", cut(info.error, TEXT_CAP))
    if info.traceback:
        yield "traceback:"
        for line in printable(cut(info.traceback, TEXT_CAP)).splitlines():
            yield "  " + line
    if logs:
        yield "logs:"
        for entry in logs:
            head = f"  {iso_time(entry.at)} [attempt {entry.attempt}] "
            text = printable(entry.text).replace("\n", "\n" + " " * len(head))
            yield head + text


async def _not_found(queue: Queue, e: JobNotFound) -> int:
    hint = ""
    if not await queue_exists(queue):
        hint = f" (queue {queue.name!r} has no keys at all: is its name right?)"
    return fail(EXIT_NOT_FOUND, f"no job {e.job_id!r} in queue {queue.name!r}: removed,"
                                f" expired by retention, or never enqueued{hint}")


async def _refused(queue: Queue, job_id: str, why: str) -> int:
    info = await queue.job_info(job_id)
    if info is None:
        return fail(EXIT_NOT_FOUND, f"no job {job_id!r} in queue {queue.name!r} (it went"
                                    " away meanwhile)")
    return fail(EXIT_NOT_FOUND, f"job {job_id!r} is {info.state}: {why}")


async def cmd_show(args: argparse.Namespace) -> int:
    async with Queue.from_url(redis_url(args), name=args.queue) as queue:
        job = queue.job(args.job_id)
        try:
            info = await job.info()
            logs = await job.logs()
        except JobNotFound as e:
            return await _not_found(queue, e)
    if args.json:
        print(json_line(info_dict(info, logs)))
    else:
        print("\n".join(info_lines(info, logs)))
    return EXIT_OK


async def cmd_retry(args: argparse.Namespace) -> int:
    async with Queue.from_url(redis_url(args), name=args.queue) as queue:
        job = queue.job(args.job_id)
        try:
            await queue.retry_jobs([job.id], strict=True)
        except JobNotFound as e:
            return await _not_found(queue, e)
        except JobStateError:
            return await _refused(queue, job.id, "only a failed job can be retried")
    print(f"{args.queue} {args.job_id}: retried (waiting)")
    return EXIT_OK


async def cmd_remove(args: argparse.Namespace) -> int:
    async with Queue.from_url(redis_url(args), name=args.queue) as queue:
        job = queue.job(args.job_id)
        try:
            await queue.remove_job(job.id)
        except JobNotFound as e:
            return await _not_found(queue, e)
        except JobStateError:
            return await _refused(queue, job.id, "an active job cannot be removed (its"
                                                    " worker owns it until it finishes)")
    print(f"{args.queue} {args.job_id}: removed")
    return EXIT_OK


def requester() -> str:
    """Who cancels, as the job's record keeps it: ``cli:<user>@<host>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no $USER/$LOGNAME and no passwd entry (a container)
        user = "?"
    who = f"cli:{user}@{socket.gethostname()}"
    return who.encode()[:200].decode("utf-8", "ignore")  # the record keeps 1-200 bytes


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with Queue.from_url(redis_url(args), name=args.queue) as queue:
        job = queue.job(args.job_id)
        try:
            state = await job.cancel(by=requester())
        except JobNotFound as e:
            return await _not_found(queue, e)
        except JobStateError:
            return await _refused(queue, job.id, "only a waiting, delayed or active job can"
                                                    " be cancelled")
    if state is JobState.ACTIVE:
        print(f"{args.queue} {args.job_id}: cancellation requested (running on its worker)")
    else:
        print(f"{args.queue} {args.job_id}: cancelled")
    return EXIT_OK


def change_options(args: argparse.Namespace) -> JobOptions:
    """The new priority and delay of ``jobs change``, checked before anything connects."""
    if args.priority is None and args.delay is None:
        raise SystemExit("jobs change: give --priority N, --delay SECONDS or both")
    for flag, option, value in (("--delay", "delay_s", args.delay),
                                ("--priority", "priority", args.priority)):
        try:
            JobOptions(**{option: value})
        except ConfigurationError as e:
            raise SystemExit(f"{flag}: {e}") from None
    return JobOptions(priority=args.priority, delay_s=args.delay)


async def cmd_change(args: argparse.Namespace) -> int:
    options = change_options(args)
    try:
        job_id = check_job_id(args.job_id)
    except InvalidJobId as e:
        raise SystemExit(str(e)) from None
    async with Queue.from_url(redis_url(args), name=args.queue) as queue:
        try:
            state = await queue.change_job(job_id, priority=options.priority,
                                           delay_s=options.delay_s)
        except JobNotFound as e:
            return await _not_found(queue, e)
        except JobStateError:
            return await _refused(queue, job_id, "only a waiting or delayed job can change")
    what = []
    if options.priority is not None:
        what.append(f"priority {options.priority}")
    if options.delay_s is not None:
        what.append(f"delay {options.delay_s:g} s")
    print(f"{args.queue} {args.job_id}: changed ({', '.join(what)}): {state}")
    return EXIT_OK


# -------------------------------------------------------------------- enqueue
