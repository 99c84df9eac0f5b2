"""``aiojobs-redis worker MODULE:ATTR``: load a user's Worker and run it."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Coroutine
from typing import Any

from ..worker.worker import Worker


def load_attr(spec: str) -> Any:
    """Import ``package.module:attribute``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"expected MODULE:ATTR, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SystemExit(f"cannot import {module_name!r}: {e}") from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


async def resolve_worker(obj: Any) -> Worker:
    """A Worker, or a (sync or async) callable that returns one."""
    if callable(obj) and not isinstance(obj, Worker):
        obj = obj()
        if inspect.isawaitable(obj):
            obj = await obj
    if not isinstance(obj, Worker):
        raise SystemExit(f"expected a Worker (or a factory of one), got {type(obj).__name__}")
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


async def _cmd_worker(args: argparse.Namespace) -> int:
    worker = await resolve_worker(load_attr(args.target))
    try:
        await worker.run(burst=args.burst)
    finally:
        for q in worker.queues:
            await q.close()
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("worker", help="run a worker: MODULE:ATTR names a Worker or a factory")
    p.add_argument("target", metavar="MODULE:ATTR")
    p.add_argument("--burst", action="store_true",
                   help="stop when no job is waiting, delayed or running")
    p.set_defaults(func=_cmd_worker)
