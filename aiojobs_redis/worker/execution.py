"""Run one job: decode, resolve the task, enforce the timeout, catch everything.

Whatever the handler does (raise any exception, including SystemExit and
KeyboardInterrupt, hang past its timeout, return something MessagePack cannot
encode), the result is an :class:`Outcome` and the worker carries on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import traceback
from typing import Any

import anyio
import anyio.to_thread

from .. import codec
from ..backoff import BackoffFunction, retry_delay_s
from ..errors import TaskNotFound
from ..options import Backoff, ExponentialBackoff, JobOptions, Retention
from ..producer.task import Task, TaskRegistry
from .context import JobContext, WorkerContext, set_current_job

log = logging.getLogger("aiojobs_redis.worker")

DEFAULT_BACKOFF = ExponentialBackoff()
NO_RETRY = -1


class FetchedJob:
    """A job as fetch_jobs hands it to a worker."""

    __slots__ = ("attempt", "id", "max_attempts", "options", "payload", "task", "token", "wait_ms")

    #: values per job in fetch_jobs' reply
    WIDTH = 8

    def __init__(self, job_id: bytes, token: bytes, task: bytes, payload: bytes, options: bytes,
                 attempt: int, max_attempts: int, wait_ms: int) -> None:
        self.id = job_id.decode()
        self.token = token.decode()
        self.task = task.decode("utf-8", "replace")
        self.payload = payload
        self.options = options
        self.attempt = int(attempt)
        self.max_attempts = int(max_attempts)
        self.wait_ms = int(wait_ms)  # from runnable to taken, by Redis's clock


class Outcome:
    """How an attempt ended. ``ok``: ``value`` is the encoded result; else ``error``,
    ``traceback`` and ``retry_delay_ms`` (-1: do not retry) describe the failure."""

    __slots__ = ("error", "job", "ok", "retention", "retry_delay_ms", "run_ms", "traceback",
                 "value")

    def __init__(self, job: FetchedJob, *, ok: bool, value: bytes = b"", error: str = "",
                 traceback: str = "", retry_delay_ms: int = NO_RETRY,
                 retention: Retention | None = None) -> None:
        self.job = job
        self.ok = ok
        self.value = value
        self.error = error
        self.traceback = traceback
        self.retry_delay_ms = retry_delay_ms
        self.retention = retention
        self.run_ms = 0.0  # how long the handler ran (set by the executor)


class Executor:
    """Runs jobs of one worker; shared by all of its queues."""

    def __init__(self, registry: TaskRegistry, worker: WorkerContext, concurrency: int) -> None:
        self.registry = registry
        self.worker = worker
        self.thread_limiter = anyio.CapacityLimiter(concurrency)
        self._options_cache: dict[bytes, JobOptions] = {}

    async def run(self, job: FetchedJob, ctx: JobContext) -> Outcome:
        start = time.perf_counter()
        outcome = await self._run(job, ctx)
        outcome.run_ms = (time.perf_counter() - start) * 1000
        return outcome

    async def _run(self, job: FetchedJob, ctx: JobContext) -> Outcome:
        try:
            task = self.registry.get(job.task)
        except TaskNotFound as e:
            return _failure(job, f"TaskNotFound: {e}", "", NO_RETRY, None)
        try:
            options = self._options(job.options)
            args, kwargs = codec.decode_args(job.payload)
        except codec.DecodeError as e:
            return _failure(job, f"DecodeError: {e}", "", NO_RETRY, None)
        timeout_s = options.timeout_s if options.timeout_s is not None else task.defaults.timeout_s
        set_current_job(ctx)
        scope: asyncio.Timeout | None = None
        try:
            if timeout_s is None:
                result = await self._call(task, args, kwargs)
            else:
                async with asyncio.timeout(timeout_s) as scope:
                    result = await self._call(task, args, kwargs)
        except TypeError:
            try:  # arguments are checked only when the call fails: no cost on the hot path
                task.signature.bind(*args, **kwargs)
            except TypeError as e:
                return _failure(job, f"TypeError: arguments do not fit task {task.name!r}: {e}",
                                "", NO_RETRY, options.retention)
            return self._failed(job, task, options, _describe(), traceback.format_exc())
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the worker cancelled us (lease lost, shutdown): not the job's doing
            return self._failed(job, task, options, "CancelledError: the handler was cancelled",
                                traceback.format_exc())
        except TimeoutError:
            if scope is not None and scope.expired():
                return self._failed(
                    job, task, options,
                    f"Timeout: the handler ran longer than its timeout of {timeout_s} s", "",
                )
            return self._failed(job, task, options, _describe(), traceback.format_exc())
        except BaseException:  # a job's exception must never stop the worker
            return self._failed(job, task, options, _describe(), traceback.format_exc())
        try:
            value = codec.encode_value(result)
        except TypeError as e:
            return _failure(job, f"EncodeError: the result of {task.name!r}: {e}", "", NO_RETRY,
                            options.retention)
        return Outcome(job, ok=True, value=value, retention=options.retention)

    async def _call(self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
        if task.is_async:
            return await task.fn(*args, **kwargs)
        return await anyio.to_thread.run_sync(
            functools.partial(task.fn, *args, **kwargs),
            abandon_on_cancel=True, limiter=self.thread_limiter,
        )

    def _options(self, data: bytes) -> JobOptions:
        """Decoded job options; most jobs share a few distinct encodings, so cache them."""
        options = self._options_cache.get(data)
        if options is None:
            options = codec.decode_options(data)
            if len(self._options_cache) >= 1024:
                self._options_cache.clear()
            self._options_cache[data] = options
        return options

    def _failed(self, job: FetchedJob, task: Task[Any, Any], options: JobOptions, error: str,
                tb: str) -> Outcome:
        backoff: Backoff | BackoffFunction = (
            options.backoff or task.defaults.backoff or task.backoff_fn or DEFAULT_BACKOFF
        )
        delay_ms = NO_RETRY
        if job.attempt < job.max_attempts:
            try:
                delay_ms = int(retry_delay_s(backoff, job.attempt) * 1000)
            except Exception:  # a callable backoff may raise; fall back to the default
                log.exception("backoff of task %s raised; using the default", task.name)
                delay_ms = int(retry_delay_s(DEFAULT_BACKOFF, job.attempt) * 1000)
        return _failure(job, error, tb, delay_ms, options.retention)


def _failure(job: FetchedJob, error: str, tb: str, retry_delay_ms: int,
             retention: Retention | None) -> Outcome:
    return Outcome(job, ok=False, error=error, traceback=tb, retry_delay_ms=retry_delay_ms,
                   retention=retention)


def _describe() -> str:
    import sys

    exc = sys.exc_info()[1]
    if exc is None:
        return "unknown error"
    name = type(exc).__qualname__
    text = str(exc)
    return f"{name}: {text}" if text else name
