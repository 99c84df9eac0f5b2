"""Helpers to test your own tasks: a real worker run until the queue is idle, and a fake
job context to call a handler directly.

The pytest fixtures (``ajr_redis_server``, ``ajr_redis_url``, ``ajr_queue``) come from
:mod:`aiojobs_redis.testing.plugin`, which pytest loads by itself once aiojobs_redis is
installed. See docs/testing.md for the patterns.

- :func:`run_until_idle` runs a real :class:`~aiojobs_redis.Worker` on a queue until no
  job is waiting or active (delayed jobs and retry backoff are not waited out unless
  ``include_delayed=True``) and returns an :class:`IdleResult`.
- :func:`job_context` sets a :class:`FakeJobContext` as ``current_job()`` for a block;
  :func:`call_task` calls a task's function under it, no Redis needed.

They live in :mod:`aiojobs_redis.testing.idle` and :mod:`aiojobs_redis.testing.fake`;
import them from here, this package's names are the kit's public API.
"""

from __future__ import annotations

from .._redis_server import RedisServer
from .fake import FakeJobContext, call_task, job_context
from .idle import Attempt, IdleResult, IdleTimeout, run_until_idle

__all__ = (
    "Attempt",
    "FakeJobContext",
    "IdleResult",
    "IdleTimeout",
    "RedisServer",
    "call_task",
    "job_context",
    "run_until_idle",
)
