"""Queue metrics kept in Redis, bounded: a ring of one-minute slots and cumulative totals.

Written by workers in the same round trip as the outcomes they report (one
``record_metrics`` call per batch, never a key per job), and by the stalled-job
check. Two hashes per queue:

``ajr:{q}:metrics``
    a ring of :data:`MINUTE_SLOTS` one-minute slots (1440: the last 24 hours);
    field ``minute % 1440`` holds ``"minute c1 c2 ..."``, the :data:`LAYOUT`
    counters of that minute. At most 1440 fields, whatever the uptime.
``ajr:{q}:metrics:total``
    the same counters, cumulative (what Prometheus scrapes), and the
    :data:`EVENTS` that job-control scripts count themselves: at most
    :data:`TOTAL_FIELDS` fields.

Wait and run times are kept as histograms over :data:`BUCKETS_MS`, so
percentiles over any window are estimated from the summed buckets. The backlog,
the oldest waiting job's age and the live workers are read when asked
(:func:`snapshot`), never stored.
"""

from __future__ import annotations

import asyncio
import bisect
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec

from ..connection import AnyRedis, execute_with_time
from ..errors import wrap_redis_errors
from ..keys import QueueKeys
from ..scripts import SCRIPTS, Batch
from ..states import STATE_SETS, state_keys
from .registry import WorkerInfo, live_workers

if TYPE_CHECKING:
    from ..producer.queue import Queue


class _Attempt(Protocol):
    @property
    def attempt(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def wait_ms(self) -> int: ...


class Outcome(Protocol):
    """What metrics read of a worker's outcome (aiojobs_redis.worker.execution.Outcome)."""

    @property
    def job(self) -> _Attempt: ...
    @property
    def ok(self) -> bool: ...
    @property
    def retry_delay_ms(self) -> int: ...
    @property
    def run_ms(self) -> float: ...
    @property
    def kind(self) -> int: ...  # 0 plain, 1 a retry that gives its attempt back, 2 cancelled

#: size of the ring: one slot per minute, 24 hours
MINUTE_SLOTS: Final = 1440
#: upper bounds (ms, inclusive) of the wait- and run-time histogram buckets; one more
#: bucket holds everything above the last bound
BUCKETS_MS: Final[tuple[int, ...]] = (
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000,
    300_000, 900_000, 3_600_000,
)
COUNTERS: Final = ("completed", "failed", "retried", "stalled", "wait_sum_ms", "run_sum_ms")
_NB = len(BUCKETS_MS) + 1
#: the counters of one slot, in order; also the field names of the totals hash
LAYOUT: Final[tuple[str, ...]] = (
    COUNTERS + tuple(f"wait:{i}" for i in range(_NB)) + tuple(f"run:{i}" for i in range(_NB))
)
WIDTH: Final = len(LAYOUT)
#: cumulative only, counted by the scripts where they happen (cancel_job, fail_jobs,
#: recover_stalled, return_jobs; add_jobs; add_dead_jobs; fetch_jobs; the scripts that
#: finish a job release the jobs of a flow that waited for it)
EVENTS: Final = ("cancelled", "deduplicated", "dead_lettered", "limited", "parked", "released")
TOTAL_FIELDS: Final = WIDTH + len(EVENTS)
_INDEX: Final = {name: i for i, name in enumerate(LAYOUT)}
_WAIT0: Final = _INDEX["wait:0"]
_RUN0: Final = _INDEX["run:0"]



def bucket_of(ms: float) -> int:
    """Index of the histogram bucket that holds a duration of ``ms`` milliseconds."""
    return bisect.bisect_left(BUCKETS_MS, ms)


class Increments:
    """Counts to add to the current minute and the totals, gathered in Python: a list
    in :data:`LAYOUT` order (the worker fills it for every batch of outcomes)."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values = [0] * WIDTH

    def __bool__(self) -> bool:
        return any(self.values)

    @property
    def counts(self) -> Counter[str]:
        """The non-zero counts by name."""
        return Counter({LAYOUT[i]: n for i, n in enumerate(self.values) if n})

    def add(self, name: str, n: int = 1) -> None:
        if name not in _INDEX:
            raise KeyError(f"unknown metrics counter {name!r}")
        self.values[_INDEX[name]] += n

    def observe(self, kind: str, ms: float) -> None:
        """Count one duration (``kind``: "wait" or "run") in its bucket and in the sum."""
        ms = max(ms, 0.0)
        self.values[_INDEX[f"{kind}:0"] + bucket_of(ms)] += 1
        self.values[_INDEX[f"{kind}_sum_ms"]] += round(ms)

    def argv(self) -> list[Any]:
        # a fresh id per batch: a call re-sent after a lost reply is not counted twice
        args: list[Any] = [MINUTE_SLOTS, WIDTH, secrets.token_hex(8)]
        for i, n in enumerate(self.values):
            if n:
                args += (i + 1, LAYOUT[i], n)
        return args


_COMPLETED, _FAILED, _RETRIED = _INDEX["completed"], _INDEX["failed"], _INDEX["retried"]
_WAIT_SUM, _RUN_SUM = _INDEX["wait_sum_ms"], _INDEX["run_sum_ms"]


def outcome_increments(outcomes: Iterable[Outcome]) -> Increments:
    """What a batch of outcomes adds. A failure is counted as a retry when fail_jobs will
    retry it (attempts left and a retry delay, or an attempt given back), else as failed
    for good; a cancelled attempt counts in no outcome counter (its times do count).
    (On the worker's hot path: plain list arithmetic.)"""
    inc = Increments()
    values = inc.values
    bounds = BUCKETS_MS
    for o in outcomes:
        job = o.job
        if o.ok:
            values[_COMPLETED] += 1
        elif o.kind:
            if o.kind == 1:
                values[_RETRIED] += 1
        elif o.retry_delay_ms >= 0 and job.attempt < job.max_attempts:
            values[_RETRIED] += 1
        else:
            values[_FAILED] += 1
        wait = job.wait_ms if job.wait_ms > 0 else 0
        values[_WAIT0 + bisect.bisect_left(bounds, wait)] += 1
        values[_WAIT_SUM] += wait
        run = o.run_ms if o.run_ms > 0 else 0.0
        values[_RUN0 + bisect.bisect_left(bounds, run)] += 1
        values[_RUN_SUM] += round(run)
    return inc


def add_outcomes(batch: Batch, queue: Queue, outcomes: Sequence[Outcome]) -> None:
    """The worker's hook: add one ``record_metrics`` call for these outcomes to ``batch``,
    so that metrics ride in the round trip that reports the outcomes."""
    if not outcomes:
        return
    inc = outcome_increments(outcomes)
    script = SCRIPTS["record_metrics"]
    batch.add(script, script.keys_of(queue.keys), inc.argv())


async def record(client: AnyRedis, keys: QueueKeys, increments: Increments) -> int | None:
    """Add ``increments`` to the current minute of a queue in one call; returns that minute."""
    if not increments:
        return None
    script = SCRIPTS["record_metrics"]
    with wrap_redis_errors(f"record metrics of queue {keys.queue!r}"):
        return int(await script(client, script.keys_of(keys), increments.argv()))


async def record_stalled(queue: Queue, requeued: int, failed: int) -> None:
    """Count stalled recoveries (jobs put back to waiting, or failed after too many stalls)."""
    inc = Increments()
    inc.add("stalled", requeued + failed)
    inc.add("failed", failed)
    # unwrapped: the maintenance loop logs redis-py errors and carries on
    script = SCRIPTS["record_metrics"]
    await script(queue.client, script.keys_of(queue.keys), inc.argv())


# ------------------------------------------------------------------------------ reading


def percentile(buckets: Sequence[int], q: float) -> float | None:
    """Estimate the ``q``-quantile (0..1) in ms from bucket counts (linear within a bucket);
    None when there is no observation. Above the last bound it answers the last bound."""
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            if i >= len(BUCKETS_MS):
                return float(BUCKETS_MS[-1])
            low = 0.0 if i == 0 else float(BUCKETS_MS[i - 1])
            high = float(BUCKETS_MS[i])
            return low + (high - low) * max(rank - seen, 0.0) / n
        seen += n
    return float(BUCKETS_MS[-1])


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    """Wait or run times over a window (ms; None without observations)."""

    count: int
    mean_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None

    @classmethod
    def of(cls, buckets: Sequence[int], sum_ms: int) -> Timing:
        count = sum(buckets)
        return cls(count=count, mean_ms=sum_ms / count if count else None,
                   p50_ms=percentile(buckets, 0.5), p90_ms=percentile(buckets, 0.9),
                   p99_ms=percentile(buckets, 0.99))


class Minute(msgspec.Struct, frozen=True, kw_only=True):
    """The counts of one minute."""

    minute: int  # unix time // 60 (Redis's clock)
    completed: int
    failed: int
    retried: int
    stalled: int
    wait_p50_ms: float | None
    wait_p99_ms: float | None
    run_p50_ms: float | None
    run_p99_ms: float | None


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """Metrics of the last ``minutes`` minutes, oldest first, with a summary."""

    queue: str
    minutes: int
    series: list[Minute]
    completed: int
    failed: int
    retried: int
    stalled: int
    wait: Timing
    run: Timing


def _parse_slot(raw: bytes | None, minute: int) -> list[int] | None:
    if raw is None:
        return None
    words = raw.split()
    if not words or int(words[0]) != minute:
        return None  # empty, or stale (written a ring-length ago)
    counts = [int(w) for w in words[1:WIDTH + 1]]
    counts += [0] * (WIDTH - len(counts))
    return counts


async def redis_minute(client: AnyRedis) -> int:
    seconds, _micros = await client.time()
    return int(seconds) // 60


async def read_window(client: AnyRedis, keys: QueueKeys, minutes: int = 60,
                      *, now_minute: int | None = None) -> Window:
    """The per-minute series of the last ``minutes`` minutes (1..1440), the current one
    included, and the window's totals and percentiles."""
    if not 1 <= minutes <= MINUTE_SLOTS:
        raise ValueError(f"minutes must be between 1 and {MINUTE_SLOTS}")
    with wrap_redis_errors(f"read metrics of queue {keys.queue!r}"):
        if now_minute is None:
            now_minute = await redis_minute(client)
        wanted = list(range(now_minute - minutes + 1, now_minute + 1))
        raw: Any = await client.hmget(keys.metrics, [m % MINUTE_SLOTS for m in wanted])
    total = [0] * WIDTH
    series: list[Minute] = []
    for m, value in zip(wanted, raw, strict=True):
        counts = _parse_slot(value, m)
        if counts is None:
            series.append(Minute(minute=m, completed=0, failed=0, retried=0, stalled=0,
                                 wait_p50_ms=None, wait_p99_ms=None, run_p50_ms=None,
                                 run_p99_ms=None))
            continue
        for i, n in enumerate(counts):
            total[i] += n
        wait_b = counts[_WAIT0:_WAIT0 + _NB]
        run_b = counts[_RUN0:_RUN0 + _NB]
        series.append(Minute(
            minute=m, completed=counts[0], failed=counts[1], retried=counts[2], stalled=counts[3],
            wait_p50_ms=percentile(wait_b, 0.5), wait_p99_ms=percentile(wait_b, 0.99),
            run_p50_ms=percentile(run_b, 0.5), run_p99_ms=percentile(run_b, 0.99),
        ))
    return Window(
        queue=keys.queue, minutes=minutes, series=series,
        completed=total[0], failed=total[1], retried=total[2], stalled=total[3],
        wait=Timing.of(total[_WAIT0:_WAIT0 + _NB], total[_INDEX["wait_sum_ms"]]),
        run=Timing.of(total[_RUN0:_RUN0 + _NB], total[_INDEX["run_sum_ms"]]),
    )


async def read_totals(client: AnyRedis, keys: QueueKeys) -> dict[str, int]:
    """The cumulative counters (every name of :data:`LAYOUT` and :data:`EVENTS`, 0 when
    never written)."""
    with wrap_redis_errors(f"read metrics of queue {keys.queue!r}"):
        raw: Any = await client.hgetall(keys.metrics_total)
    return _totals(raw)


def _totals(raw: Mapping[bytes, bytes]) -> dict[str, int]:
    totals = dict.fromkeys(LAYOUT + EVENTS, 0)
    for k, v in raw.items():
        name = k.decode()
        if name in totals:
            totals[name] = int(v)
    return totals


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A queue's state right now: counts, pause, workers, head-of-line age, totals."""

    queue: str
    counts: dict[str, int]
    paused: bool
    workers: list[WorkerInfo]
    oldest_waiting_age_s: float | None  # of the next job to run; None when none waits
    now_ms: int  # Redis's clock
    totals: dict[str, int]


async def snapshot(queue: Queue) -> Snapshot:
    """Read everything the dashboard's queue list, Prometheus and alerts need, in two
    round trips (plus the worker registry), whatever the size of the queue."""
    k = queue.keys
    pipe = queue.client.pipeline(transaction=False)
    for key in state_keys(k):
        pipe.zcard(key)
    pipe.hexists(k.meta, "paused")
    pipe.zrange(k.wait, 0, 0)
    pipe.hgetall(k.metrics_total)
    with wrap_redis_errors(f"read queue {queue.name!r}"):
        (replies, now_ms), workers = await asyncio.gather(
            execute_with_time(queue.client, pipe), live_workers(queue.client, k))
        n = len(STATE_SETS)
        counts = {str(s): int(c) for s, c in zip(STATE_SETS, replies[:n], strict=True)}
        paused, head, totals = replies[n:]
        age: float | None = None
        if head:
            # waiting since it became runnable: its 'ready' stamp (a retried, promoted or
            # recovered job's wait starts again then), else since it was created or due
            fields: Any = await queue.client.hmget(k.job(head[0].decode()),
                                                   ["ready", "created", "due"])
            ready, created, due = fields
            if ready is not None:
                age = max(now_ms - int(ready), 0) / 1000
            elif created is not None:
                age = max(now_ms - max(int(created), int(due or -1)), 0) / 1000
    return Snapshot(queue=queue.name, counts=counts, paused=bool(paused), workers=workers,
                    oldest_waiting_age_s=age, now_ms=now_ms, totals=_totals(totals))
