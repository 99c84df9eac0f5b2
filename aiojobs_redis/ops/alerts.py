"""Alerts: a job failed for good, a queue without a live worker, a backlog or an
oldest-job age above a threshold. Each fires once per episode, not once per job.

::

    monitor = AlertMonitor([queue], [
        FailedJobsRule(notify=[Webhook("https://hooks.example/ops")]),
        NoWorkerRule(notify=[page_someone]),
        BacklogRule(max_waiting=10_000, notify=[print]),
        OldestJobRule(max_age_s=300, notify=[print]),
    ], interval_s=30)
    asyncio.create_task(monitor.run())

Every ``interval_s`` the monitor reads a snapshot of each queue (a few O(1) Redis
commands, :func:`aiojobs_redis.ops.metrics.snapshot`). A rule whose condition becomes
true sends one :class:`Alert` with ``firing=True``; when the condition is false
again it sends one with ``firing=False`` (unless ``resolve=False``). A notifier is
a callable (sync or async) taking the Alert, or a :class:`Webhook` that POSTs it
as JSON. A notifier that fails is logged, once per episode, and never stops the
monitor.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgspec

from ..errors import AiojobsRedisError, ConfigurationError
from ..producer.queue import Queue
from . import metrics

log = logging.getLogger("aiojobs_redis.alerts")

_SAMPLE: Final = 5  # failed job ids named in a job_failed alert


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One notification: an episode begins (``firing``) or ends."""

    rule: str  # job_failed | no_worker | backlog | oldest_job_age
    queue: str
    firing: bool
    message: str
    value: float
    threshold: float | None = None
    at_ms: int = 0  # Redis's clock
    job_ids: list[str] = []  # job_failed: some of the jobs that failed in this episode


class Webhook:
    """POST the alert as JSON to ``url`` (in a thread; ``timeout_s`` per request)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0,
                 headers: dict[str, str] | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"a webhook URL must be http(s), got {url!r}")
        self.url = url
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json", **(headers or {})}

    def __repr__(self) -> str:
        return f"<Webhook {self.url}>"

    async def __call__(self, alert: Alert) -> None:
        body = msgspec.json.encode(alert)
        request = urllib.request.Request(self.url, data=body, headers=self.headers,
                                         method="POST")

        def post() -> None:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()

        await asyncio.to_thread(post)


Notifier = Callable[[Alert], Awaitable[None] | None] | Webhook


class Rule:
    """Base of the alert rules: who to notify, and whether to say when it is over."""

    name = "rule"

    def __init__(self, *, notify: Sequence[Notifier], resolve: bool = True) -> None:
        if not notify:
            raise ConfigurationError(f"{type(self).__name__} needs at least one notifier")
        for n in notify:
            if not callable(n):
                raise ConfigurationError(f"a notifier must be callable, got {n!r}")
        self.notify = tuple(notify)
        self.resolve = resolve

    def threshold(self) -> float | None:
        return None

    def measure(self, snap: metrics.Snapshot) -> float:
        raise NotImplementedError

    def breached(self, value: float) -> bool:
        raise NotImplementedError

    def describe(self, queue: str, value: float, firing: bool) -> str:
        raise NotImplementedError


class NoWorkerRule(Rule):
    """No live worker serves the queue."""

    name = "no_worker"

    def measure(self, snap: metrics.Snapshot) -> float:
        return float(len(snap.workers))

    def breached(self, value: float) -> bool:
        return value == 0

    def describe(self, queue: str, value: float, firing: bool) -> str:
        if firing:
            return f"queue {queue}: no live worker"
        return f"queue {queue}: {int(value)} live worker(s) again"


class BacklogRule(Rule):
    """More than ``max_waiting`` jobs waiting."""

    name = "backlog"

    def __init__(self, *, max_waiting: int, notify: Sequence[Notifier],
                 resolve: bool = True) -> None:
        super().__init__(notify=notify, resolve=resolve)
        if max_waiting < 0:
            raise ConfigurationError("max_waiting must be >= 0")
        self.max_waiting = max_waiting

    def threshold(self) -> float:
        return float(self.max_waiting)

    def measure(self, snap: metrics.Snapshot) -> float:
        return float(snap.counts["waiting"])

    def breached(self, value: float) -> bool:
        return value > self.max_waiting

    def describe(self, queue: str, value: float, firing: bool) -> str:
        verb = "above" if firing else "back to at most"
        return f"queue {queue}: {int(value)} jobs waiting, {verb} {self.max_waiting}"


class OldestJobRule(Rule):
    """The next job to run has waited longer than ``max_age_s``."""

    name = "oldest_job_age"

    def __init__(self, *, max_age_s: float, notify: Sequence[Notifier],
                 resolve: bool = True) -> None:
        super().__init__(notify=notify, resolve=resolve)
        if max_age_s < 0:
            raise ConfigurationError("max_age_s must be >= 0")
        self.max_age_s = max_age_s

    def threshold(self) -> float:
        return self.max_age_s

    def measure(self, snap: metrics.Snapshot) -> float:
        return snap.oldest_waiting_age_s or 0.0

    def breached(self, value: float) -> bool:
        return value > self.max_age_s

    def describe(self, queue: str, value: float, firing: bool) -> str:
        verb = "above" if firing else "back under"
        return f"queue {queue}: the next job has waited {value:.1f} s, {verb} {self.max_age_s} s"


class FailedJobsRule(Rule):
    """Jobs failed for good. The episode lasts while every check finds new failures;
    the first check without one ends it. The first check only takes a baseline."""

    name = "job_failed"

    def measure(self, snap: metrics.Snapshot) -> float:
        return float(snap.totals["failed"])

    def breached(self, value: float) -> bool:  # decided by the monitor from deltas
        return value > 0

    def describe(self, queue: str, value: float, firing: bool) -> str:
        if firing:
            return f"queue {queue}: {int(value)} job(s) failed for good"
        return f"queue {queue}: no more jobs failed for good ({int(value)} in this episode)"


class _Episode:
    __slots__ = ("baseline", "count", "firing", "notify_failed")

    def __init__(self) -> None:
        self.firing = False
        self.baseline: float | None = None  # job_failed: the failed total at the last check
        self.count = 0.0  # job_failed: failures in this episode
        self.notify_failed = False


class AlertMonitor:
    """Polls queues every ``interval_s`` and notifies the rules' targets once per episode."""

    def __init__(self, queues: Queue | Sequence[Queue], rules: Sequence[Rule], *,
                 interval_s: float = 30.0) -> None:
        self.queues = (queues,) if isinstance(queues, Queue) else tuple(queues)
        if not self.queues or not all(isinstance(q, Queue) for q in self.queues):
            raise ConfigurationError("AlertMonitor needs one Queue or a sequence of Queues")
        if not rules or not all(isinstance(r, Rule) for r in rules):
            raise ConfigurationError("AlertMonitor needs at least one Rule")
        if interval_s <= 0:
            raise ConfigurationError("interval_s must be > 0")
        self.rules = tuple(rules)
        self.interval_s = interval_s
        self._episodes: dict[tuple[int, str], _Episode] = {}
        self._outage = False

    async def run(self) -> None:
        """Check forever (until cancelled); a Redis outage is logged once."""
        while True:
            try:
                await self.check()
                if self._outage:
                    self._outage = False
                    log.warning("alerts: Redis is back")
            except AiojobsRedisError as e:
                if not self._outage:
                    self._outage = True
                    log.error("alerts: cannot read the queues (%s); retrying", e)
            await asyncio.sleep(self.interval_s)

    async def check(self) -> list[Alert]:
        """One round: read every queue, send and return the alerts of episodes that
        began or ended."""
        snaps = await asyncio.gather(*(metrics.snapshot(q) for q in self.queues))
        sent: list[Alert] = []
        for queue, snap in zip(self.queues, snaps, strict=True):
            for index, rule in enumerate(self.rules):
                episode = self._episodes.setdefault((index, queue.name), _Episode())
                alert = await self._evaluate(queue, rule, snap, episode)
                if alert is not None:
                    await self._send(rule, alert, episode)
                    sent.append(alert)
        return sent

    async def _evaluate(self, queue: Queue, rule: Rule, snap: metrics.Snapshot,
                        episode: _Episode) -> Alert | None:
        value = rule.measure(snap)
        job_ids: list[str] = []
        if isinstance(rule, FailedJobsRule):
            baseline, episode.baseline = episode.baseline, value
            if baseline is None:
                return None
            new = max(value - baseline, 0.0)
            if new > 0:
                episode.count += new
                if episode.firing:
                    return None
                raw: Any = await queue.client.zrevrange(queue.keys.failed, 0, _SAMPLE - 1)
                job_ids = [r.decode() for r in raw]
                episode.firing = True
                value = new
            elif episode.firing:
                episode.firing = False
                value, episode.count = episode.count, 0.0
                if not rule.resolve:
                    return None
                return self._alert(rule, snap, firing=False, value=value)
            else:
                return None
            return self._alert(rule, snap, firing=True, value=value, job_ids=job_ids)
        breached = rule.breached(value)
        if breached == episode.firing:
            return None
        episode.firing = breached
        if not breached and not rule.resolve:
            return None
        return self._alert(rule, snap, firing=breached, value=value)

    @staticmethod
    def _alert(rule: Rule, snap: metrics.Snapshot, *, firing: bool, value: float,
               job_ids: list[str] | None = None) -> Alert:
        return Alert(rule=rule.name, queue=snap.queue, firing=firing,
                     message=rule.describe(snap.queue, value, firing), value=value,
                     threshold=rule.threshold(), at_ms=snap.now_ms, job_ids=job_ids or [])

    async def _send(self, rule: Rule, alert: Alert, episode: _Episode) -> None:
        (log.warning if alert.firing else log.info)("alert: %s", alert.message)
        for notifier in rule.notify:
            try:
                result = notifier(alert)
                if inspect.isawaitable(result):
                    await result
            except Exception as e:  # a broken notifier must not stop the monitor
                if not episode.notify_failed:
                    episode.notify_failed = True
                    log.error("alert notifier %r failed: %s (logged once per episode)",
                              notifier, e)
            else:
                episode.notify_failed = False
