"""Run one job: decode, resolve the task, enforce the timeout, catch everything.

Whatever the handler does (raise any exception, including SystemExit and
KeyboardInterrupt, hang past its timeout, return something MessagePack cannot
encode), the result is an :class:`Outcome` and the worker carries on.

A timeout cancels an async handler. A sync handler runs in a thread, and a Python
thread cannot be killed: when its timeout fires, the executor sets the job's
cooperative flag (``current_job().cancelled``), logs the thread as abandoned and
counts it (:attr:`Executor.abandoned_threads`), then keeps waiting for the thread to
end. Only then is the attempt reported, failed by timeout: until the thread has
really ended the job keeps its concurrency slot (and its lease, so no worker starts
a retry of it). When the worker itself cancels a sync job (lease lost, shutdown),
the thread is abandoned the same way but the cancellation goes on at once; the
thread keeps its thread token (never more than ``concurrency`` handler threads), and
an attempt of the same job that reaches this worker waits for it before starting.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread
from redis.exceptions import RedisError

from .. import codec
from ..backoff import BackoffFunction, retry_delay_s
from ..control import Retry, Unrecoverable, WaitForChildren
from ..errors import AiojobsRedisError, TaskNotFound
from ..options import Backoff, ExponentialBackoff, JobOptions, Retention
from ..producer.flows import FEED_HEADER, fed_results
from ..producer.task import Task, TaskRegistry
from .context import JobContext, WorkerContext, set_current_job

log = logging.getLogger("aiojobs_redis.worker")

DEFAULT_BACKOFF = ExponentialBackoff()

#: ``async def middleware(ctx, call_next)``: runs around every attempt of every job of a
#: worker; ``await call_next()`` runs the rest of the chain and the handler and returns
#: its result (or raises its exception). What the outermost returns is the job's result.
Middleware = Callable[[JobContext, Callable[[], Awaitable[Any]]], Awaitable[Any]]
NO_RETRY = -1
#: Outcome.kind, as fail_jobs reads it (its optional sixth value per outcome)
PLAIN, RETRY_UNCOUNTED, CANCELLED, WAIT = 0, 1, 2, 3


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

    __slots__ = ("children", "error", "job", "kind", "ok", "policy", "retention",
                 "retry_delay_ms", "run_ms", "traceback", "value")

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
        #: PLAIN; RETRY_UNCOUNTED: Retry(count_attempt=False), the attempt is given back;
        #: CANCELLED: its worker stopped it on a cancel request; WAIT: it waits for the
        #: jobs ``children`` it added (edge policy ``policy``)
        self.kind = PLAIN
        self.children: list[str] = []
        self.policy = "f"


class Executor:
    """Runs jobs of one worker; shared by all of its queues."""

    def __init__(self, registry: TaskRegistry, worker: WorkerContext, concurrency: int,
                 middleware: Sequence[Middleware] = ()) -> None:
        self.registry = registry
        self.middleware = tuple(middleware)
        self.worker = worker
        #: one token per running handler thread, taken before the thread starts and given
        #: back when it has really ended (not when its job gave up on it)
        self.thread_tokens = asyncio.Semaphore(concurrency)
        self._no_limit = anyio.CapacityLimiter(math.inf)  # anyio's limiter: see thread_tokens
        self._options_cache: dict[bytes, JobOptions] = {}
        #: job id -> threads of its earlier attempts, given up on but still running
        self._abandoned: dict[str, list[_ThreadRun]] = {}
        self._abandoned_count = 0

    @property
    def abandoned_threads(self) -> int:
        """Sync handlers' threads still running after their job gave up on them (timeout,
        lease lost, shutdown): a thread cannot be killed, only asked to stop."""
        return self._abandoned_count

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
            args, kwargs, ctx.headers = codec.decode_call(job.payload)
        except codec.DecodeError as e:
            return _failure(job, f"DecodeError: {e}", "", NO_RETRY, None)
        feed = ctx.headers.get(FEED_HEADER) if ctx.headers else None
        if feed is not None:  # a flow's step: the results of the jobs it waited for first
            try:
                args = [fed_results(feed, await ctx.dependencies()), *args]
            except codec.DecodeError as e:
                return _failure(job, f"DecodeError: a dependency's result: {e}", "",
                                NO_RETRY, None)
            except (AiojobsRedisError, RedisError, OSError) as e:  # retried in a second
                return _failure(job, f"{type(e).__name__}: reading its dependencies: {e}",
                                "", 1000, None)
        timeout_s = options.timeout_s if options.timeout_s is not None else task.defaults.timeout_s
        set_current_job(ctx)
        scope: asyncio.Timeout | None = None
        scopes: list[asyncio.Timeout] = []  # the handler's timeout, under middleware
        try:
            if self.middleware:
                result = await self._through_middleware(task, job, ctx, args, kwargs, timeout_s,
                                                        scopes)
            elif not task.is_async:
                result = await self._call_sync(task, job, ctx, args, kwargs, timeout_s)
            elif timeout_s is None:
                result = await task.fn(*args, **kwargs)
            else:
                async with asyncio.timeout(timeout_s) as scope:
                    result = await task.fn(*args, **kwargs)
        except Retry as e:
            return self._retry(job, task, options, e, traceback.format_exc())
        except WaitForChildren as e:
            outcome = _failure(job, str(e), "", 0, options.retention)
            outcome.kind, outcome.children, outcome.policy = WAIT, e.children, e.policy
            return outcome
        except Unrecoverable:
            return _failure(job, _describe(), traceback.format_exc(), NO_RETRY,
                            options.retention)
        except _SyncTimeout as e:
            return self._failed(
                job, task, options,
                f"Timeout: the handler ran longer than its timeout of {timeout_s} s"
                f" (a sync handler: its thread ran on {e.overrun_s:.3f} s past the timeout"
                " before it ended)", "",
            )
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
                ctx.mark_cancelled()
                raise  # the worker cancelled us (lease lost, shutdown): not the job's doing
            return self._failed(job, task, options, "CancelledError: the handler was cancelled",
                                traceback.format_exc())
        except TimeoutError:
            if scope is None and scopes:
                scope = scopes[0]
            if scope is not None and scope.expired():
                ctx.mark_cancelled()
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

    async def _through_middleware(self, task: Task[Any, Any], job: FetchedJob, ctx: JobContext,
                                  args: list[Any], kwargs: dict[str, Any],
                                  timeout_s: float | None, scopes: list[asyncio.Timeout]) -> Any:
        """Call the handler through the worker's middleware, the first one outermost. The
        handler's timeout covers the handler alone: a middleware sees it as TimeoutError."""

        async def handler() -> Any:
            if not task.is_async:
                return await self._call_sync(task, job, ctx, args, kwargs, timeout_s)
            if timeout_s is None:
                return await task.fn(*args, **kwargs)
            async with asyncio.timeout(timeout_s) as scope:
                scopes.append(scope)
                return await task.fn(*args, **kwargs)

        call: Callable[[], Awaitable[Any]] = handler
        for middleware in reversed(self.middleware):
            call = functools.partial(middleware, ctx, call)
        return await call()

    async def _call_sync(self, task: Task[Any, Any], job: FetchedJob, ctx: JobContext,
                         args: list[Any], kwargs: dict[str, Any], timeout_s: float | None) -> Any:
        """Run a sync handler in a thread. Past its timeout, return only once the thread
        has really ended; if the worker cancels us, leave the thread running, tracked."""
        while earlier := self._abandoned.get(job.id):
            log.warning("%s:%s attempt %d waits for the thread of an earlier attempt of this"
                        " job, still running", task.name, job.id, job.attempt)
            await asyncio.wait([r.ended for r in earlier if r.ended is not None])
        run = _ThreadRun(task.name, job.id, timeout_s,
                         functools.partial(task.fn, *args, **kwargs), self._thread_ended)
        # a thread token before the clock starts: the timeout is the handler's own time
        await self.thread_tokens.acquire()
        run.started_at = time.perf_counter()
        scope: asyncio.Timeout | None = None
        try:
            if timeout_s is None:
                ok, value = await anyio.to_thread.run_sync(run, abandon_on_cancel=True,
                                                           limiter=self._no_limit)
            else:
                async with asyncio.timeout(timeout_s) as scope:
                    ok, value = await anyio.to_thread.run_sync(run, abandon_on_cancel=True,
                                                               limiter=self._no_limit)
        except TimeoutError:
            if scope is None or timeout_s is None or not scope.expired():
                raise
            ctx.mark_cancelled()
            ended = self._give_up(run, f"ran past its timeout of {timeout_s} s",
                                  "holding its slot until it ends")
            if ended is not None:
                # the slot and the lease stay ours until the thread has really ended; if the
                # worker cancels us meanwhile, the thread stays tracked as abandoned
                await asyncio.shield(ended)
            overrun = max(0.0, (run.ended_at or time.perf_counter()) - run.started_at
                          - timeout_s)
            raise _SyncTimeout(overrun) from None
        except asyncio.CancelledError:
            ctx.mark_cancelled()
            self._give_up(run, f"was cancelled by the worker (lease lost or shutdown; its"
                               f" timeout: {timeout_s} s)",
                          "holding a thread token (not the slot) until it ends")
            raise
        finally:
            if run.ended is None:  # else the thread gives its token back when it ends
                self.thread_tokens.release()
        if not ok:
            raise value
        return value

    def _give_up(self, run: _ThreadRun, what: str, holding: str) -> asyncio.Future[None] | None:
        """The attempt no longer waits for its thread: abandon the thread if it is running
        (returns a future set when it ends), or make sure it never starts the handler."""
        with run.lock:
            if not run.started:
                run.dropped = True
                return None
            if run.ended_at is not None:
                return None
            ended = run.ended = asyncio.get_running_loop().create_future()
        run.abandoned_at = time.perf_counter()
        self._abandoned.setdefault(run.job_id, []).append(run)
        self._abandoned_count += 1
        log.warning("sync handler %s:%s %s; a thread cannot be killed:"
                    " current_job().cancelled is set and the thread is left to finish, %s"
                    " (%d abandoned thread(s) now)", run.task, run.job_id, what, holding,
                    self._abandoned_count)
        return ended

    def _thread_ended(self, run: _ThreadRun) -> None:
        """In the event loop, once an abandoned thread has really ended."""
        self.thread_tokens.release()
        runs = self._abandoned.get(run.job_id, [])
        if run in runs:
            runs.remove(run)
            self._abandoned_count -= 1
        if not runs:
            self._abandoned.pop(run.job_id, None)
        assert run.abandoned_at is not None and run.ended_at is not None
        ran = run.ended_at - run.started_at
        overran = "" if run.timeout_s is None else \
            f", {ran - run.timeout_s:.3f} s past its timeout of {run.timeout_s} s"
        log.warning("sync handler %s:%s: its abandoned thread has ended, %.3f s after it was"
                    " given up on (it ran %.3f s%s; %d abandoned thread(s) now)", run.task,
                    run.job_id, run.ended_at - run.abandoned_at, ran, overran,
                    self._abandoned_count)
        if run.ended is not None and not run.ended.done():
            run.ended.set_result(None)

    def _options(self, data: bytes) -> JobOptions:
        """Decoded job options; most jobs share a few distinct encodings, so cache them."""
        options = self._options_cache.get(data)
        if options is None:
            options = codec.decode_options(data)
            if len(self._options_cache) >= 1024:
                self._options_cache.clear()
            self._options_cache[data] = options
        return options

    def _retry(self, job: FetchedJob, task: Task[Any, Any], options: JobOptions, e: Retry,
               tb: str) -> Outcome:
        """The handler raised Retry: its delay, else the backoff's. A counted attempt is
        retried while attempts remain; one given back is retried whatever they are."""
        error = f"Retry: {e.reason}" if e.reason else "Retry"
        if e.count_attempt and job.attempt >= job.max_attempts:
            return _failure(job, f"{error} (no attempts left)", tb, NO_RETRY,
                            options.retention)
        delay_ms = (self._backoff_ms(task, options, max(job.attempt, 1)) if e.delay_s is None
                    else int(e.delay_s * 1000))
        outcome = _failure(job, error, tb, delay_ms, options.retention)
        if not e.count_attempt:
            outcome.kind = RETRY_UNCOUNTED
        return outcome

    def _failed(self, job: FetchedJob, task: Task[Any, Any], options: JobOptions, error: str,
                tb: str) -> Outcome:
        delay_ms = NO_RETRY
        if job.attempt < job.max_attempts:
            delay_ms = self._backoff_ms(task, options, job.attempt)
        return _failure(job, error, tb, delay_ms, options.retention)

    def _backoff_ms(self, task: Task[Any, Any], options: JobOptions, attempt: int) -> int:
        backoff: Backoff | BackoffFunction = (
            options.backoff or task.defaults.backoff or task.backoff_fn or DEFAULT_BACKOFF
        )
        try:
            return int(retry_delay_s(backoff, attempt) * 1000)
        except Exception:  # a callable backoff may raise; fall back to the default
            log.exception("backoff of task %s raised; using the default", task.name)
            return int(retry_delay_s(DEFAULT_BACKOFF, attempt) * 1000)


class _ThreadRun:
    """One sync attempt: called in the worker thread, it runs the handler and returns
    ``(True, result)`` or ``(False, exception)``, never raising (a SystemExit must not
    reach the event loop). ``lock`` orders the thread's start and end with the event
    loop's giving up on it."""

    __slots__ = ("abandoned_at", "dropped", "ended", "ended_at", "fn", "job_id", "lock",
                 "loop", "on_end", "started", "started_at", "task", "timeout_s")

    def __init__(self, task: str, job_id: str, timeout_s: float | None, fn: Callable[[], Any],
                 on_end: Callable[[_ThreadRun], None]) -> None:
        self.task = task
        self.job_id = job_id
        self.timeout_s = timeout_s
        self.fn = fn
        self.on_end = on_end  # called in the loop when an abandoned thread ends
        self.loop = asyncio.get_running_loop()
        self.lock = threading.Lock()
        self.started = False  # the handler was called
        self.dropped = False  # given up on before it started: it never will
        self.started_at = 0.0
        self.ended_at: float | None = None  # set by the thread when the handler returns
        self.ended: asyncio.Future[None] | None = None  # set when abandoned
        self.abandoned_at: float | None = None

    def __call__(self) -> tuple[bool, Any]:
        with self.lock:
            if self.dropped:
                return False, None
            self.started = True
        try:
            result: tuple[bool, Any] = (True, self.fn())
        except BaseException as e:
            result = (False, e)
        with self.lock:
            self.ended_at = time.perf_counter()
            abandoned = self.ended is not None
        if abandoned:
            with contextlib.suppress(RuntimeError):  # a closed event loop: nobody to tell
                self.loop.call_soon_threadsafe(self.on_end, self)
        return result


class _SyncTimeout(TimeoutError):
    """A sync handler's timeout fired; its thread has ended since, ``overrun_s`` later (a
    TimeoutError to a middleware, like an async handler's)."""

    def __init__(self, overrun_s: float) -> None:
        super().__init__(overrun_s)
        self.overrun_s = overrun_s


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
