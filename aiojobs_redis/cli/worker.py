"""aiojobs-redis worker MODULE:ATTR: load a user's Worker and run it.

MODULE:ATTR names a Worker, or a function (sync or async, no arguments) returning one.

--url URL sets $REDIS_URL before MODULE is imported and the function is called, so it
applies to code that builds its queues from $REDIS_URL; the command checks that every
queue of the Worker connects there and refuses to run otherwise.

--concurrency and --queue build a new Worker with the loaded one's settings (a Worker
subclass is refused: set them in your code); code that holds the loaded Worker object
itself (e.g. to call its stop()) will not see the new one.

--reload (development) runs the worker in a child process and restarts it when a .py
file under the current directory (or each --reload-dir) changes: SIGTERM, so the running
jobs finish or are handed back, then a new process that imports the code afresh. A worker
that exits (a syntax error, say) is started again at the next change. SIGTERM or Ctrl-C
stops the worker gracefully, then the command; a second one stops the worker at once.
Needs the reload extra: pip install 'aiojobs_redis[reload]'.

--processes N runs N worker processes (one event loop each, sharing nothing but Redis)
to use N cores: the command forwards SIGTERM and SIGINT to all of them, starts again one
that exits while the others run, and ends when all have ended.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import inspect
import os
import sys
from collections.abc import Coroutine
from typing import Any

import redis.exceptions as rx
from redis.asyncio.connection import parse_url

from ..errors import RedisUnavailable
from ..producer.queue import Queue
from ..producer.task import Task
from ..worker.worker import Worker
from .common import add_url_option, check_url, plain, redact
from .processes import MAX_PROCESSES, run_processes
from .reload import RELOAD_FD_ENV, run_reloader, stop_when_parent_is_gone


def load_attr(spec: str) -> Any:
    """Import ``package.module:attribute``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"expected MODULE:ATTR (e.g. myapp.jobs:worker), got {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SystemExit(f"cannot import {module_name!r}: {e} (run the command from the"
                         " directory that holds it, or set PYTHONPATH)") from e
    except SyntaxError as e:
        raise SystemExit(f"cannot import {module_name!r}: {type(e).__name__}: {e.msg}"
                         f" ({e.filename}, line {e.lineno})") from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def _is_factory(obj: Any) -> bool:
    target = obj.func if isinstance(obj, functools.partial) else obj
    return inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target)


async def resolve_worker(obj: Any, spec: str = "MODULE:ATTR") -> Worker:
    """A Worker, or a (sync or async) function without arguments that returns one."""
    if isinstance(obj, Task):
        raise SystemExit(f"{spec} is a task ({obj.name!r}), not a Worker: name a Worker, or a"
                         " function returning one, that runs this task")
    if _is_factory(obj):
        try:
            inspect.signature(obj).bind()
        except TypeError:
            raise SystemExit(f"{spec} needs arguments: a Worker factory must take none") from None
        except ValueError:
            pass  # no signature to check: call it and see
        obj = obj()
        if inspect.isawaitable(obj):
            obj = await obj
        if not isinstance(obj, Worker):
            raise SystemExit(f"{spec} returned {type(obj).__name__}, not a Worker")
    if not isinstance(obj, Worker):
        raise SystemExit(f"{spec} is {type(obj).__name__}, not a Worker (nor a function"
                         " returning one)")
    return obj


def run_loop(main: Coroutine[Any, Any, int], *, use_uvloop: bool = True) -> int:
    """Run under uvloop when it is installed (and wanted), else asyncio's loop."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def check_connects_to(worker: Worker, url: str) -> None:
    """Refuse a Worker whose queues do not connect where --url says (best effort: only
    plain redis://, rediss:// and unix:// clients can be compared)."""
    try:
        want = parse_url(url)
    except ValueError:
        return  # a Sentinel or Cluster URL: nothing to compare with
    for q in worker.queues:
        pool = getattr(q.client, "connection_pool", None)
        have: dict[str, Any] = getattr(pool, "connection_kwargs", None) or {}
        if not have or getattr(pool, "service_name", None) is not None:
            continue
        fields = ("path",) if "path" in want else ("host", "port")
        mismatch = [f for f in (*fields, "db")
                    if want.get(f, 0 if f == "db" else None) != have.get(f, 0 if f == "db"
                                                                           else None)]
        if mismatch:
            where = have.get("path") or f"{have.get('host')}:{have.get('port')}"
            raise SystemExit(
                f"--url {redact(url)} does not apply: queue {q.name!r} of the Worker connects to"
                f" {where} (db {have.get('db', 0)}). Build its queues from $REDIS_URL (the"
                " command sets it to --url before importing MODULE), or drop --url")


def with_overrides(worker: Worker, *, queues: list[str] | None,
                   concurrency: int | None) -> tuple[Worker, list[Queue]]:
    """The worker, or a new one with the loaded one's settings and the given queues and
    concurrency; and the loaded worker's queues the new one does not use."""
    if not queues and concurrency is None:
        return worker, []
    served = {q.name: q for q in worker.queues}
    unknown = [name for name in queues or () if name not in served]
    if unknown:
        raise SystemExit(f"the Worker does not serve queue(s) {', '.join(map(repr, unknown))};"
                         f" it serves {', '.join(map(repr, served))}")
    if type(worker) is not Worker:
        raise SystemExit(f"--concurrency and --queue build a new Worker, which a subclass"
                         f" ({type(worker).__name__}) does not allow: set them in your code")
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(Worker).parameters.items():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY or name == "tasks":
            continue
        if not hasattr(worker, name):
            raise SystemExit(f"--concurrency and --queue cannot rebuild this Worker (its"
                             f" {name!r} is unknown): set them in your code")
        kwargs[name] = getattr(worker, name)
    if concurrency is not None:
        kwargs["concurrency"] = concurrency
    keep = [served[name] for name in dict.fromkeys(queues)] if queues else list(worker.queues)
    tasks = [worker.registry.get(name) for name in worker.registry.names()]
    rebuilt = Worker(keep, tasks=tasks, **kwargs)
    return rebuilt, [q for q in worker.queues if q not in keep]


async def _cmd_worker(args: argparse.Namespace) -> int:
    if not 1 <= args.processes <= MAX_PROCESSES:
        raise SystemExit(f"--processes must be 1..{MAX_PROCESSES}, got {args.processes}")
    if args.processes > 1:
        return await run_processes(args)
    if args.reload:
        return await run_reloader(args)
    if args.reload_dir:
        raise SystemExit("--reload-dir needs --reload")
    reload_fd = os.environ.pop(RELOAD_FD_ENV, None)
    if reload_fd is not None:
        stop_when_parent_is_gone(int(reload_fd))
    url: str | None = getattr(args, "url", None)
    if url:
        check_url(url)
        os.environ["REDIS_URL"] = url  # before the import: module-level code may read it
    loaded = await resolve_worker(load_attr(args.target), args.target)
    to_close: list[Queue] = list(loaded.queues)
    try:
        if url:
            check_connects_to(loaded, url)
        worker, _ = with_overrides(loaded, queues=args.queue, concurrency=args.concurrency)
        try:
            await worker.run(burst=args.burst)
        except (rx.ConnectionError, rx.TimeoutError, RedisUnavailable, ConnectionError,
                TimeoutError) as e:
            if worker.lanes:  # it ran: a real failure, reported as such
                raise
            # stopped (SIGTERM/SIGINT) while it waited for an unreachable Redis
            raise RedisUnavailable(f"the worker stopped before it started ({e})") from e
    finally:
        for q in to_close:
            await q.close()
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="run a worker: MODULE:ATTR names a Worker or a factory",
                       description=plain(__doc__))
    p.add_argument("target", metavar="MODULE:ATTR")
    p.add_argument("--burst", action="store_true",
                   help="stop when no job is waiting, delayed or running")
    p.add_argument("--concurrency", type=int, metavar="N",
                   help="at most N jobs at once (default: the Worker's own)")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="run N worker processes, one event loop each (default 1): to use N"
                        " cores; each has the Worker's concurrency")
    p.add_argument("--queue", action="append", metavar="NAME",
                   help="serve only this queue of the Worker (repeat for several); a queue"
                        " it does not serve is refused")
    add_url_option(p, "sets $REDIS_URL before MODULE is imported: your code must build its"
                      " queues from $REDIS_URL (checked: else the command refuses to run)")
    p.add_argument("--reload", action="store_true",
                   help="development: restart the worker when a .py file under the current"
                        " directory changes (needs pip install 'aiojobs_redis[reload]')")
    p.add_argument("--reload-dir", action="append", metavar="DIR",
                   help="with --reload: watch this directory instead of the current one"
                        " (repeat for several)")
    p.set_defaults(func=_cmd_worker)
