"""Stopping asyncio tasks that may swallow a cancellation.

redis-py's blocking reads (BZPOPMIN, XREAD BLOCK) can lose a cancellation that races
their own timeout (Python 3.11's asyncio.wait_for): a task cancelled once may go on
waiting, or loop into its next read. Cancel again until it has ended."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, tries: int = 40,
                          step_s: float = 0.05) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them, cancelling again every ``step_s`` a task that
    is still running; returns the tasks that would not stop after ``tries`` rounds.
    Exceptions of the tasks are retrieved (so that none is logged as never retrieved)."""
    all_tasks = list(tasks)
    pending = {t for t in all_tasks if not t.done()}
    for _ in range(tries):
        if not pending:
            break
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=step_s)
    for t in all_tasks:
        if t.done() and not t.cancelled():
            t.exception()
    return pending


def honour_cancellation() -> None:
    """Raise CancelledError when this task was asked to stop but the cancellation never
    reached it. A redis-py call can swallow one: cancelled while it completes, it returns
    its reply instead of raising (seen with ``client.eval`` about once in 40). A loop that
    awaits Redis calls checks this after each of them, or it would run on for good."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
