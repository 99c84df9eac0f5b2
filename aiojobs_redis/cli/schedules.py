"""``aiojobs-redis schedules list | sync MODULE:ATTR | remove NAME | run-now NAME``.

``sync`` upserts schedules declared in code (idempotent: run it at every deploy or
after a FLUSHALL); MODULE:ATTR names a Schedule, a list of them, a Worker (its
``schedules``), or a callable returning one of these. With ``--prune`` it also
removes the queue's schedules that the code no longer declares.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ..schedules.spec import Schedule
from ..schedules.store import ScheduleInfo, Upserted
from ..worker.worker import Worker
from .common import add_url_option, plain, redis_url
from .worker import load_attr


def add_parser(subparsers: Any) -> None:
    """Add the ``schedules`` command to ``aiojobs-redis`` (an argparse subparsers object)."""
    p = subparsers.add_parser("schedules", help="list, sync, remove or run schedules",
                              description=plain(__doc__),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="schedules_command", required=True)

    def common(q: argparse.ArgumentParser, *, queue_required: bool = True) -> None:
        add_url_option(q)
        q.add_argument("--queue", required=queue_required, metavar="NAME",
                       help="the queue" + ("" if queue_required else
                                           " (default: the schedule's or the worker's)"))

    q = sub.add_parser("list", help="schedules with their next run and last outcome")
    common(q)
    q.set_defaults(func=cmd_list)

    q = sub.add_parser("sync", help="upsert the schedules declared in code (idempotent)")
    q.add_argument("target", metavar="MODULE:ATTR")
    q.add_argument("--prune", action="store_true",
                   help="also remove the queue's schedules the code does not declare")
    common(q, queue_required=False)
    q.set_defaults(func=cmd_sync)

    q = sub.add_parser("remove", help="remove a schedule (jobs it enqueued stay)")
    q.add_argument("name")
    common(q)
    q.set_defaults(func=cmd_remove)

    q = sub.add_parser("run-now", help="enqueue one job of a schedule now; its ticks stay")
    q.add_argument("name")
    common(q)
    q.set_defaults(func=cmd_run_now)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def format_table(infos: Iterable[ScheduleInfo]) -> list[str]:
    lines = [f"{'name':<24} {'when':<22} {'tz':<16} {'next run':<26} {'runs':>6}"
             f"  {'last tick':<26} last outcome"]
    for i in infos:
        when = i.cron if i.cron is not None else f"every {i.every_s:g} s"
        outcome = "-" if i.last_job_id is None else (
            "gone (retention)" if i.last_state is None else str(i.last_state))
        if i.last_error:
            outcome += f": {i.last_error[:60]}"
        lines.append(f"{i.name:<24} {when:<22} {i.tz:<16} {_when(i.next_run_at):<26}"
                     f" {i.runs:>6}  {_when(i.last_tick_at):<26} {outcome}")
    return lines


async def cmd_list(args: argparse.Namespace) -> int:
    from ..producer.queue import Queue

    async with Queue.from_url(redis_url(args), name=args.queue) as queue:
        infos = await queue.schedules.list()
    if not infos:
        print(f"queue {args.queue!r} has no schedules")
        return 0
    print("\n".join(format_table(infos)))
    return 0


async def load_schedules(target: str) -> tuple[list[Schedule], str | None]:
    """The schedules named by MODULE:ATTR, and the default queue (a worker's first)."""
    obj = load_attr(target)
    if inspect.isfunction(obj):
        obj = obj()
        if inspect.isawaitable(obj):
            obj = await obj
    default: str | None = None
    if isinstance(obj, Worker):
        default = obj.queues[0].name
        obj = obj.schedules
    items = [obj] if isinstance(obj, Schedule) else list(obj) if isinstance(obj, Iterable) else []
    if not items or not all(isinstance(s, Schedule) for s in items):
        raise SystemExit(f"{target}: expected a Schedule, a list of Schedules or a Worker")
    return items, default


async def cmd_sync(args: argparse.Namespace) -> int:
    from ..producer.queue import Queue

    schedules, default = await load_schedules(args.target)
    by_queue: dict[str, list[Schedule]] = {}
    for s in schedules:
        name = s.queue or args.queue or default
        if name is None:
            raise SystemExit(f"schedule {s.name!r} names no queue: give --queue")
        by_queue.setdefault(name, []).append(s)
    url = redis_url(args)
    changed = 0
    for queue_name, items in by_queue.items():
        async with Queue.from_url(url, name=queue_name) as queue:
            for s in items:
                result = await queue.schedules.upsert(s)
                changed += result is not Upserted.UNCHANGED
                print(f"{queue_name} {s.name}: {result}")
            if args.prune:
                keep = {s.name for s in items}
                for name in await queue.schedules.names():
                    if name not in keep and await queue.schedules.remove(name):
                        changed += 1
                        print(f"{queue_name} {name}: removed (not declared)")
    print(f"{len(schedules)} schedule(s) in sync, {changed} changed")
    return 0


async def cmd_remove(args: argparse.Namespace) -> int:
    from ..producer.queue import Queue

    async with Queue.from_url(redis_url(args), name=args.queue) as queue:
        removed = await queue.schedules.remove(args.name)
    print(f"{args.queue} {args.name}: {'removed' if removed else 'no such schedule'}")
    return 0 if removed else 1


async def cmd_run_now(args: argparse.Namespace) -> int:
    from ..producer.queue import Queue

    async with Queue.from_url(redis_url(args), name=args.queue) as queue:
        job = await queue.schedules.run_now(args.name)
    print(f"{args.queue} {args.name}: enqueued job {job.id}")
    return 0
