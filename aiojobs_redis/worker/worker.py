"""The worker: lifecycle, signals, and the parts that do the work (orchestration only).

One :class:`~aiojobs_redis.worker.lane.Lane` per queue fetches and reports jobs; the
:class:`~aiojobs_redis.worker.leases.LeaseKeeper` renews leases and the heartbeat;
:class:`~aiojobs_redis.worker.maintenance.Maintenance` recovers stalled jobs;
:class:`~aiojobs_redis.worker.execution.Executor` runs each job.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from redis.exceptions import RedisError

from .._tasks import cancel_and_wait
from ..connection import check_server
from ..errors import AiojobsRedisError, ConfigurationError
from ..producer.queue import Queue
from ..producer.task import Task, TaskRegistry
from ..schedules.keeper import ScheduleKeeper
from ..schedules.spec import Schedule
from .cancels import CancelListener
from .context import WorkerContext
from .execution import Executor, Middleware
from .lane import Lane
from .leases import LeaseKeeper, ReconnectBackoff
from .maintenance import Maintenance
from .tracing import tracing_middleware
from .watchdog import LoopWatchdog
from .wipe_detection import WipeDetector, check_all

log = logging.getLogger("aiojobs_redis.worker")

Hook = Callable[[WorkerContext], Awaitable[None] | None]


class WorkerState(enum.StrEnum):
    """Where a :class:`Worker` is in its life (``worker.state``): a worker runs once."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Worker:
    """Runs jobs of one or more queues with at most ``concurrency`` handlers at once.

    ``lease_ms``: how long a job stays owned without renewal (renewed every third of
    it); a dead worker's jobs run again elsewhere after at most about this long.
    ``max_stalls``: a job whose worker died this many times is failed, not retried.
    ``shutdown_timeout_s``: on SIGTERM/SIGINT, how long running jobs may finish
    before they are handed back to waiting.
    ``middleware``: ``async def m(ctx, call_next)`` callables run around every attempt,
    the first outermost (see docs/middleware.md).
    ``log_tracebacks``: log the traceback of a job failed for good (once, at WARNING);
    every attempt's traceback is kept on the job either way.
    """

    def __init__(
        self,
        queues: Queue | Sequence[Queue],
        *,
        tasks: Iterable[Task[Any, Any]],
        concurrency: int = 50,
        lease_ms: int = 30_000,
        max_stalls: int = 3,
        stalled_check_s: float | None = None,
        shutdown_timeout_s: float = 30.0,
        on_startup: Sequence[Hook] = (),
        on_shutdown: Sequence[Hook] = (),
        handle_signals: bool = True,
        schedules: Sequence[Schedule] = (),
        schedule_verify_s: float = 5.0,
        middleware: Sequence[Middleware] = (),
        log_tracebacks: bool = True,
    ) -> None:
        self.queues: tuple[Queue, ...] = (queues,) if isinstance(queues, Queue) else tuple(queues)
        if not self.queues or not all(isinstance(q, Queue) for q in self.queues):
            raise ConfigurationError("Worker needs one Queue or a sequence of Queues")
        if len({q.name for q in self.queues}) != len(self.queues):
            raise ConfigurationError("a worker cannot serve the same queue twice")
        if not 1 <= concurrency <= 10_000:
            raise ConfigurationError("concurrency must be between 1 and 10000")
        if lease_ms < 1000:
            raise ConfigurationError("lease_ms must be at least 1000")
        if max_stalls < 0:
            raise ConfigurationError("max_stalls must be >= 0")
        if shutdown_timeout_s < 0:
            raise ConfigurationError("shutdown_timeout_s must be >= 0")
        self.registry = TaskRegistry(tasks)
        if not len(self.registry):
            raise ConfigurationError("a worker needs at least one task")
        self.concurrency = concurrency
        self.lease_ms = lease_ms
        self.max_stalls = max_stalls
        self.stalled_check_s = stalled_check_s or min(lease_ms / 4000, 5.0)
        self.shutdown_timeout_s = shutdown_timeout_s
        self.on_startup = tuple(on_startup)
        self.on_shutdown = tuple(on_shutdown)
        self.handle_signals = handle_signals
        self.schedules = tuple(schedules)
        self.schedule_verify_s = schedule_verify_s
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.context = WorkerContext(self.id, self.queues)
        self.middleware = (*tracing_middleware(), *middleware)
        if not all(callable(m) for m in self.middleware):
            raise ConfigurationError("middleware must be async callables (ctx, call_next)")
        self.log_tracebacks = log_tracebacks
        self.executor = Executor(self.registry, self.context, concurrency, self.middleware)
        # every worker fires due ticks of every schedule of its queues, declared here or not
        self.wipe_detectors = {q.name: WipeDetector(q) for q in self.queues}
        self.schedule_keeper = ScheduleKeeper(
            self.queues, self.schedules, verify_s=schedule_verify_s,
            before_verify=lambda names: check_all([self.wipe_detectors[n] for n in names]),
            stopping=lambda: self.stopping)
        self.backoff = ReconnectBackoff()
        self.state = WorkerState.CREATED
        self.stopping = False
        self.processed = 0
        self.failed = 0
        self.lanes: list[Lane] = []
        self.watchdog: LoopWatchdog | None = None
        #: the cancel channels' listener; ``cancels.subscribed`` is set once it listens
        self.cancels = CancelListener()
        self._free = concurrency
        self._stop_requested: asyncio.Event | None = None
        self._immediate = False
        self._stopped: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.id} {self.state} queues={[q.name for q in self.queues]}>"

    # ------------------------------------------------------------- slots

    def reserve(self, lane: Lane, n: int) -> int:
        """Take up to ``n`` free slots for ``lane``. While other queues have work, a lane
        holds at most its fair share of the concurrency, so no queue starves another."""
        limit = self._free
        if len(self.lanes) > 1:
            busy = sum(1 for other in self.lanes if other is lane or not other.idle)
            share = -(-self.concurrency // busy)
            limit = min(limit, max(share - len(lane.running), 0))
        k = min(n, limit)
        self._free -= k
        return k

    def release(self, n: int) -> None:
        if n > 0:
            self._free += n
            for lane in self.lanes:
                lane.wake.set()

    def free_slots(self) -> int:
        return self._free

    def running_count(self) -> int:
        return sum(len(lane.running) for lane in self.lanes)

    def _describe_running(self) -> str:
        jobs = [f"{r.job.task}:{r.job.id}" for lane in list(self.lanes)
                for r in list(lane.running.values())]
        if not jobs:
            return "no job"
        more = f" and {len(jobs) - 5} more" if len(jobs) > 5 else ""
        return ", ".join(jobs[:5]) + more

    @property
    def abandoned_threads(self) -> int:
        """Sync handlers' threads still running after their job gave up on them (timeout,
        lease lost, shutdown): a Python thread cannot be killed, only asked to stop."""
        return self.executor.abandoned_threads

    def count_outcome(self, ok: bool) -> None:
        if ok:
            self.processed += 1
        else:
            self.failed += 1

    # ---------------------------------------------------------- lifecycle

    async def run(self, *, burst: bool = False) -> None:
        """Run until stopped (SIGTERM/SIGINT or :meth:`stop`); with ``burst``, until
        no job is waiting, delayed or running."""
        if self.state is not WorkerState.CREATED:
            raise ConfigurationError(f"a worker runs once; this one is {self.state}")
        self.state = WorkerState.STARTING
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        started_up = False
        installed = self._install_signals(loop) if self.handle_signals else []
        background: list[asyncio.Task[None]] = []
        lane_tasks: list[asyncio.Task[None]] = []
        try:
            await self._wait_for_redis()
            for hook in self.on_startup:
                await _call_hook(hook, self.context)
            started_up = True
            self.lanes = [Lane(self, q, burst=burst) for q in self.queues]
            leases = LeaseKeeper(self)
            await leases.heartbeat()
            self.watchdog = LoopWatchdog(self._describe_running)
            background = [asyncio.create_task(leases.run(), name="ajr-leases"),
                          asyncio.create_task(Maintenance(
                              self.queues, max_stalls=self.max_stalls,
                              check_s=self.stalled_check_s, lease_ms=self.lease_ms).run(),
                              name="ajr-maintenance"),
                          asyncio.create_task(self.watchdog.run(), name="ajr-watchdog"),
                          asyncio.create_task(self.cancels.run(self.lanes), name="ajr-cancels")]
            for detector in self.wipe_detectors.values():
                with contextlib.suppress(RedisError, OSError, AiojobsRedisError):
                    await detector.claim()  # else the first check claims it
            await self.schedule_keeper.start()
            background.append(asyncio.create_task(self.schedule_keeper.run(),
                                                  name="ajr-schedules"))
            lane_tasks = [asyncio.create_task(lane.run(), name=f"ajr-lane:{lane.queue.name}")
                          for lane in self.lanes]
            self.state = WorkerState.RUNNING
            log.info("worker %s started: queues %s, tasks %s, concurrency %d", self.id,
                     ", ".join(q.name for q in self.queues), ", ".join(self.registry.names()),
                     self.concurrency)
            all_lanes: asyncio.Future[list[None]] = asyncio.gather(*lane_tasks)
            stop_wait: asyncio.Future[Any] = asyncio.ensure_future(self._stop_requested.wait())
            await asyncio.wait([all_lanes, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            await self._shutdown(lane_tasks)
            # renewal stops first: a heartbeat after the deregistration would list this
            # stopped worker again for two leases
            await cancel_and_wait(background[:1])
            with contextlib.suppress(RedisError, OSError):
                await leases.deregister()
        finally:
            self.stopping = True
            await _cancel_all([*background, *lane_tasks])
            for lane in self.lanes:
                await lane.stop_waker()
            # shutdown hooks undo what startup did: not after a startup that never ran or
            # failed (a failing on_shutdown would then hide the real error)
            for hook in self.on_shutdown if started_up else ():
                try:
                    await _call_hook(hook, self.context)
                except Exception:
                    log.exception("shutdown hook %r failed", hook)
            for sig in installed:
                loop.remove_signal_handler(sig)
            self.state = WorkerState.STOPPED
            self._stopped.set()
            log.info("worker %s stopped: %d completed, %d failed", self.id, self.processed,
                     self.failed)

    async def _shutdown(self, lane_tasks: list[asyncio.Task[None]]) -> None:
        assert self._stop_requested is not None
        self.state = WorkerState.STOPPING
        self.stopping = True
        for lane in self.lanes:
            lane.wake.set()
            await lane.stop_waker()
        running = self.running_count()
        if running and not self._immediate:
            log.info("stopping: waiting up to %.1f s for %d running job(s)",
                     self.shutdown_timeout_s, running)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.shutdown_timeout_s
            while self.running_count() and not self._immediate and loop.time() < deadline:
                self._stop_requested.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(),
                                           min(0.05, max(deadline - loop.time(), 0)))
        for lane in self.lanes:
            try:
                await asyncio.wait_for(lane.hand_back(), 5.0)
            except (RedisError, OSError, TimeoutError) as e:
                log.error("queue %s: could not hand jobs back (%s); they will be recovered"
                          " after their lease", lane.queue.name, e)
        # lanes flush the outcomes they hold, then end
        _, pending = await asyncio.wait(lane_tasks, timeout=10.0)
        if pending:
            where = "; ".join(
                f"{t.get_name()} at {' <- '.join(_frames(t))}" for t in pending)
            log.error("stopping: %d queue(s) could not report their last outcomes to Redis;"
                      " those jobs will run again after their lease (%s)", len(pending), where)

    def stop(self, *, immediate: bool = False) -> None:
        """Ask the worker to stop: gracefully, or at once with ``immediate``."""
        if immediate:
            self._immediate = True
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def wait_stopped(self) -> None:
        if self._stopped is not None:
            await self._stopped.wait()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        installed = []
        handlers: list[tuple[signal.Signals, Callable[..., None], tuple[Any, ...]]] = [
            (signal.SIGTERM, self._on_signal, (signal.SIGTERM,)),
            (signal.SIGINT, self._on_signal, (signal.SIGINT,)),
        ]
        if hasattr(signal, "SIGUSR1"):
            handlers.append((signal.SIGUSR1, self._dump_tasks, ()))
        for sig, handler, args in handlers:
            try:
                loop.add_signal_handler(sig, handler, *args)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or not supported here
            installed.append(sig)
        return installed

    def _dump_tasks(self) -> None:
        """SIGUSR1: log where every task of the worker's loop is waiting (for a hang)."""
        for t in asyncio.all_tasks():
            log.warning("task %s: %s", t.get_name(), " <- ".join(_frames(t)) or "(not started)")

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stopping or (self._stop_requested is not None and self._stop_requested.is_set()):
            log.warning("%s again: stopping at once", sig.name)
            self.stop(immediate=True)
        else:
            log.warning("%s: stopping gracefully (send it again to stop at once)", sig.name)
            self.stop()

    async def _wait_for_redis(self) -> None:
        logged = False
        while True:
            try:
                for q in self.queues:
                    for warning in await check_server(q.client):
                        log.warning("queue %s: %s", q.name, warning)
                return
            except (RedisError, OSError) as e:
                if not logged:
                    log.error("worker %s: Redis is unreachable (%s); waiting for it", self.id, e)
                    logged = True
                if self._stop_requested is not None and self._stop_requested.is_set():
                    raise
                await self.backoff.sleep()


def _frames(task: asyncio.Task[Any]) -> list[str]:
    """Where a task waits: its chain of awaited coroutines, outermost first."""
    frames: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(frames) < 20:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel tasks and wait for them, cancelling again a task that swallowed its
    cancellation (Python 3.11's asyncio.wait_for, used by redis-py, can lose one)."""
    pending = await cancel_and_wait(tasks, tries=20, step_s=0.5)
    for t in pending:
        log.error("task %s would not stop; leaving it behind", t.get_name())
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            log.error("task %s had failed: %r", t.get_name(), t.exception())


async def _call_hook(hook: Hook, ctx: WorkerContext) -> None:
    result = hook(ctx)
    if inspect.isawaitable(result):
        await result
