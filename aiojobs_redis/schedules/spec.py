"""Schedules as values, and pure tick arithmetic (no Redis, no clock).

A :class:`Schedule` is what you declare; its :class:`ScheduleDef` is what is
stored in Redis (MessagePack) and compared by digest, so that declaring the same
schedule twice changes nothing. Ticks are instants in epoch milliseconds.

Time zones: cron fields are matched in the zone's wall-clock time (croniter on
naive datetimes, so croniter itself never sees a DST transition), then each wall
time is turned into instants the way Vixie cron does it:

* a *fixed-time* schedule (second, minute and hour fields all without ``*``)
  whose wall time falls into the spring-forward gap runs once, shifted forward by
  the gap (02:30 on a day without 02:30 runs at 03:30); in the repeated fall-back
  hour it runs once, at the first occurrence;
* a *wildcard* schedule (any of those fields starts with ``*``) follows the clock:
  nothing runs for wall times that do not exist, and the repeated hour runs twice.

Ticks are a set of instants: two wall times that map to the same instant are one
tick. Intervals (``every_s``) are elapsed time, aligned to ``start_at`` (or the
Unix epoch), and ignore the zone.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from croniter import croniter

from .. import codec
from ..errors import ConfigurationError
from ..keys import validate_queue_name
from ..options import JobOptions
from ..producer.task import Task

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@\-]{0,99}$")
_ALIASES: Final = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_NEAR: Final = timedelta(hours=3)  # no real zone shifts its offset by more than this at once
_MAX_SCAN: Final = 20_000  # cron wall times looked at per search (a second-cron's DST hour)
MAX_CATCH_UP: Final = 1000
MIN_EVERY_MS: Final = 10


class CatchUp(enum.StrEnum):
    """What to do when more than one tick is due (workers were down or too late)."""

    ONCE = "once"  # one job, for the latest due tick; earlier ones fold into it
    SKIP = "skip"  # no job for a tick more than grace_s late; the latest may still run
    ALL = "all"  # one job per due tick, the latest catch_up_cap of them


class ScheduleDef(msgspec.Struct, frozen=True, kw_only=True):
    """The stored form of a schedule. Its MessagePack encoding's SHA-1 is the digest
    compared on upsert and by the compare-and-set that advances ticks."""

    name: str
    task: str
    payload: bytes  # (args, kwargs), MessagePack, as add_jobs stores it
    opts: bytes  # JobOptions (backoff, timeout_s, retention), MessagePack
    priority: int = 0
    max_attempts: int = 1
    cron: str | None = None
    every_ms: int | None = None
    tz: str = "UTC"
    start_ms: int | None = None
    end_ms: int | None = None
    max_runs: int | None = None
    jitter_ms: int = 0
    catch_up: CatchUp = CatchUp.ONCE
    catch_up_cap: int = 100
    grace_ms: int = 60_000

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @staticmethod
    def digest_of(blob: bytes) -> str:
        return hashlib.sha1(blob).hexdigest()

    @classmethod
    def decode(cls, blob: bytes) -> ScheduleDef:
        return msgspec.msgpack.decode(blob, type=cls)


class Schedule:
    """A named, recurring job: ``Schedule("nightly", sync_all, cron="30 6 * * *",
    tz="Europe/Berlin", jitter_s=30)`` or ``Schedule("pulse", beat, every_s=10)``.

    ``cron``: 5 fields, or 6 with seconds first (``"*/5 * * * * *"``), or an alias
    such as ``@daily``. ``every_s``: a fixed interval. ``start_at``/``end_at``:
    aware datetimes bounding the ticks; ``max_runs``: ticks fired at most.
    ``jitter_s``: each tick's job is enqueued up to this much later, by an amount
    fixed by (name, tick) so every worker agrees. ``catch_up``: see :class:`CatchUp`.
    ``args``/``kwargs``/``options``: the job template. ``queue``: the queue name
    (default: the worker's first queue, or the queue you upsert through).
    """

    __slots__ = ("definition", "digest", "queue", "task")

    definition: ScheduleDef
    digest: str
    queue: str | None
    task: Task[..., Any] | None

    def __init__(
        self,
        name: str,
        task: Task[..., Any] | str,
        /,
        *,
        cron: str | None = None,
        every_s: float | None = None,
        tz: str = "UTC",
        start_at: datetime | None = None,
        end_at: datetime | None = None,
        max_runs: int | None = None,
        jitter_s: float = 0.0,
        catch_up: CatchUp | str = CatchUp.ONCE,
        catch_up_cap: int = 100,
        grace_s: float = 60.0,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: JobOptions | None = None,
        queue: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigurationError(
                f"invalid schedule name {name!r}: 1-100 characters of letters, digits and"
                " '_.:/@-', starting with a letter or digit"
            )
        if (cron is None) == (every_s is None):
            raise ConfigurationError(f"schedule {name!r}: give cron or every_s (exactly one)")
        if queue is not None:
            validate_queue_name(queue)
        kw = dict(kwargs or {})
        if isinstance(task, Task):
            task.check_arguments(tuple(args), kw)
            task_name, base = task.name, task.defaults
        elif isinstance(task, str) and task:
            task_name, base = task, JobOptions()
        else:
            raise ConfigurationError(f"schedule {name!r}: task must be a Task or a task name")
        if options is not None and not isinstance(options, JobOptions):
            raise ConfigurationError(f"schedule {name!r}: options must be JobOptions")
        opts = (options or JobOptions()).merged_over(base)
        if opts.job_id is not None or opts.delay_s is not None or opts.run_at is not None:
            raise ConfigurationError(
                f"schedule {name!r}: job options cannot set job_id, delay_s or run_at"
                " (the schedule decides the id and the time)"
            )
        every_ms = None
        if every_s is not None:
            every_ms = _millis(f"schedule {name!r}: every_s", every_s, MIN_EVERY_MS / 1000)
        if cron is not None:
            cron = _check_cron(name, cron)
        _zone_or_error(name, tz)
        start_ms = _aware_ms(name, "start_at", start_at)
        end_ms = _aware_ms(name, "end_at", end_at)
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise ConfigurationError(f"schedule {name!r}: end_at must be after start_at")
        if max_runs is not None and (isinstance(max_runs, bool) or max_runs < 1):
            raise ConfigurationError(f"schedule {name!r}: max_runs must be >= 1")
        try:
            mode = CatchUp(catch_up)
        except ValueError:
            raise ConfigurationError(
                f"schedule {name!r}: catch_up must be one of {[c.value for c in CatchUp]}"
            ) from None
        if not 1 <= catch_up_cap <= MAX_CATCH_UP:
            raise ConfigurationError(f"schedule {name!r}: catch_up_cap must be 1..{MAX_CATCH_UP}")
        jitter = _millis(f"schedule {name!r}: jitter_s", jitter_s, 0)
        if every_ms is not None and jitter >= every_ms:
            raise ConfigurationError(
                f"schedule {name!r}: jitter_s must be shorter than every_s (a tick's job must"
                " not be due after the next tick)"
            )
        stored = JobOptions(backoff=opts.backoff, timeout_s=opts.timeout_s,
                            retention=opts.retention)
        definition = ScheduleDef(
            name=name, task=task_name,
            payload=codec.encode_args(task_name, tuple(args), kw),
            opts=codec.encode_options(stored),
            priority=opts.priority or 0, max_attempts=opts.attempts or 1,
            cron=cron, every_ms=every_ms, tz=tz, start_ms=start_ms, end_ms=end_ms,
            max_runs=max_runs, jitter_ms=jitter,
            catch_up=mode, catch_up_cap=catch_up_cap,
            grace_ms=_millis(f"schedule {name!r}: grace_s", grace_s, 0.001),
        )
        setter = object.__setattr__
        setter(self, "definition", definition)
        setter(self, "digest", ScheduleDef.digest_of(definition.encode()))
        setter(self, "queue", queue)
        setter(self, "task", task if isinstance(task, Task) else None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Schedule is immutable")

    @property
    def name(self) -> str:
        return self.definition.name

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Schedule) and other.digest == self.digest
                and other.queue == self.queue)

    def __hash__(self) -> int:
        return hash((self.digest, self.queue))

    def __repr__(self) -> str:
        d = self.definition
        when = f"cron={d.cron!r} tz={d.tz}" if d.cron else f"every_s={d.every_ms / 1000:g}"  # type: ignore[operator]
        return f"<Schedule {d.name} {d.task} {when}>"


# ------------------------------------------------------------------ validation

def _millis(what: str, seconds: float, low: float) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds != seconds:
        raise ConfigurationError(f"{what} must be a number")
    if seconds < low:
        raise ConfigurationError(f"{what} must be >= {low}")
    return round(seconds * 1000)


def _aware_ms(name: str, what: str, value: datetime | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ConfigurationError(f"schedule {name!r}: {what} must be a timezone-aware datetime")
    return round(value.timestamp() * 1000)


def _zone_or_error(name: str, tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ConfigurationError(f"schedule {name!r}: unknown time zone {tz!r}") from None


def _check_cron(name: str, expr: str) -> str:
    expr = " ".join(_ALIASES.get(expr.strip(), expr).split())
    fields = expr.split(" ")
    if len(fields) not in (5, 6):
        raise ConfigurationError(
            f"schedule {name!r}: cron needs 5 fields, or 6 with seconds first: {expr!r}"
        )
    try:
        croniter(expr, datetime(2000, 1, 1), second_at_beginning=True)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigurationError(f"schedule {name!r}: invalid cron {expr!r}: {e}") from None
    return expr


# --------------------------------------------------------------- tick arithmetic

def _zone(tz: str) -> ZoneInfo:
    return ZoneInfo(tz)  # ZoneInfo caches instances


def _wildcard(expr: str) -> bool:
    fields = expr.split(" ")
    clock = fields[:3] if len(fields) == 6 else fields[:2]
    return any(f.startswith("*") for f in clock)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def _instants(wall: datetime, zone: ZoneInfo, wildcard: bool) -> list[int]:
    """The instants (ms) at which a cron wall time fires; see the module docstring."""
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    off0, off1 = _offset(first), _offset(second)
    if off0 == off1:
        return [_ms(first)]
    if off0 > off1:  # the repeated (fall-back) hour: fold=0 is the first occurrence
        return [_ms(first), _ms(second)] if wildcard else [_ms(first)]
    # the skipped (spring-forward) hour: fold=0 reads it with the old offset, i.e. shifted
    return [] if wildcard else [_ms(first)]


def _shift_near(t_ms: int, zone: ZoneInfo) -> timedelta:
    """How far the zone's offset moves within a few hours of ``t_ms`` (0 almost always)."""
    t = datetime.fromtimestamp(t_ms / 1000, UTC)
    offs = [_offset((t + d).astimezone(zone)) for d in (-_NEAR, timedelta(0), _NEAR)]
    return max(offs) - min(offs)


def _offset(dt: datetime) -> timedelta:
    off = dt.utcoffset()
    return timedelta(0) if off is None else off


def _scan_cron(expr: str, tz: str, t_ms: int, forward: bool) -> int | None:
    """The first tick after ``t_ms`` (forward) or the last at or before it."""
    zone = _zone(tz)
    wildcard = _wildcard(expr)
    wall = datetime.fromtimestamp(t_ms / 1000, zone).replace(tzinfo=None)
    near = _shift_near(t_ms, zone)
    one = timedelta(seconds=1)
    start = wall - near - one if forward else wall + near + one
    it = croniter(expr, start.replace(microsecond=0), second_at_beginning=True)
    best: int | None = None
    limit: datetime | None = None
    try:
        for _ in range(_MAX_SCAN):
            w: datetime = it.get_next(datetime) if forward else it.get_prev(datetime)
            if limit is not None and (w > limit if forward else w < limit):
                break
            for x in _instants(w, zone, wildcard):
                if (x > t_ms and (best is None or x < best)) if forward else \
                        (x <= t_ms and (best is None or x > best)):
                    best = x
            if best is not None and limit is None:
                reach = _shift_near(best, zone)
                limit = w + reach if forward else w - reach
    except (ValueError, RuntimeError):  # croniter: no match within its search horizon
        return best
    return best


def next_tick_ms(d: ScheduleDef, after_ms: int) -> int | None:
    """The first tick strictly after ``after_ms``, or None when there is none."""
    lo = after_ms if d.start_ms is None else max(after_ms, d.start_ms - 1)
    if d.every_ms is not None:
        anchor = d.start_ms or 0
        x = anchor if lo < anchor else anchor + ((lo - anchor) // d.every_ms + 1) * d.every_ms
    else:
        assert d.cron is not None
        found = _scan_cron(d.cron, d.tz, lo, forward=True)
        if found is None:
            return None
        x = found
    if d.end_ms is not None and x > d.end_ms:
        return None
    return x


def prev_tick_ms(d: ScheduleDef, at_ms: int) -> int | None:
    """The last tick at or before ``at_ms``, or None when there is none."""
    hi = at_ms if d.end_ms is None else min(at_ms, d.end_ms)
    if d.every_ms is not None:
        anchor = d.start_ms or 0
        if hi < anchor:
            return None
        x: int | None = anchor + (hi - anchor) // d.every_ms * d.every_ms
    else:
        assert d.cron is not None
        x = _scan_cron(d.cron, d.tz, hi, forward=False)
    if x is None or (d.start_ms is not None and x < d.start_ms):
        return None
    return x


def _definition(spec: Schedule | ScheduleDef) -> ScheduleDef:
    return spec.definition if isinstance(spec, Schedule) else spec


def next_fire(spec: Schedule | ScheduleDef, after: datetime) -> datetime | None:
    """The schedule's first tick strictly after ``after`` (aware), as an aware UTC
    datetime, without jitter; None when the schedule has no more ticks."""
    if after.tzinfo is None:
        raise ConfigurationError("next_fire needs a timezone-aware datetime")
    x = next_tick_ms(_definition(spec), _ms(after))
    return None if x is None else datetime.fromtimestamp(x / 1000, UTC)


def prev_fire(spec: Schedule | ScheduleDef, at: datetime) -> datetime | None:
    """The schedule's last tick at or before ``at`` (aware), without jitter."""
    if at.tzinfo is None:
        raise ConfigurationError("prev_fire needs a timezone-aware datetime")
    x = prev_tick_ms(_definition(spec), _ms(at))
    return None if x is None else datetime.fromtimestamp(x / 1000, UTC)


def jitter_ms(d: ScheduleDef, tick_ms: int) -> int:
    """The delay added to a tick: pseudo-random in [0, jitter], fixed by (name, tick)."""
    if d.jitter_ms <= 0:
        return 0
    h = hashlib.blake2b(f"{d.name}\x00{tick_ms}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") % (d.jitter_ms + 1)


def tick_job_id(name: str, tick_ms: int) -> str:
    """The id of a tick's job (the same format the fire_schedule script builds)."""
    return f"sched:{name}:{tick_ms}"


class Plan(NamedTuple):
    """What to do with a due schedule: the ticks to enqueue (oldest first), the latest
    tick handled, the next pending tick and its due time (-1, -1: ended)."""

    fire: tuple[int, ...]
    handled: int
    next_tick: int
    next_due: int
    missed: int  # due ticks that got no job (counted up to MAX_CATCH_UP)


def first_tick(d: ScheduleDef, basis_ms: int, runs: int) -> tuple[int, int]:
    """The pending (tick, due) of a definition whose last handled tick (or creation
    time) is ``basis_ms`` and which has fired ``runs`` ticks; (-1, -1) when ended."""
    if d.max_runs is not None and runs >= d.max_runs:
        return -1, -1
    x = next_tick_ms(d, basis_ms)
    return (-1, -1) if x is None else (x, x + jitter_ms(d, x))


def plan(d: ScheduleDef, tick_ms: int, now_ms: int, runs: int) -> Plan | None:
    """Decide the ticks to fire when the pending tick ``tick_ms`` is due at ``now_ms``
    (Redis time); None when it is not due yet."""
    if tick_ms < 0 or tick_ms > now_ms:
        return None
    latest = prev_tick_ms(d, now_ms)
    if latest is None or latest < tick_ms:
        latest = tick_ms
    due: list[int] = [latest]
    if d.catch_up is CatchUp.ALL:
        while len(due) < d.catch_up_cap:
            x = prev_tick_ms(d, due[-1] - 1)
            if x is None or x < tick_ms:
                break
            due.append(x)
        due.reverse()
        fire = due
    elif d.catch_up is CatchUp.SKIP:
        fire = [latest] if now_ms - latest - jitter_ms(d, latest) <= d.grace_ms else []
    else:
        fire = [latest]
    if d.max_runs is not None:
        fire = fire[max(len(fire) - max(d.max_runs - runs, 0), 0):]
    missed = _count_ticks(d, tick_ms, latest) - len(fire)
    nxt = next_tick_ms(d, latest)
    if nxt is None or (d.max_runs is not None and runs + len(fire) >= d.max_runs):
        return Plan(tuple(fire), latest, -1, -1, missed)
    return Plan(tuple(fire), latest, nxt, nxt + jitter_ms(d, nxt), missed)


def _count_ticks(d: ScheduleDef, first: int, last: int) -> int:
    """Ticks in [first, last], counted up to MAX_CATCH_UP."""
    if first >= last:
        return 1
    if d.every_ms is not None:
        return min((last - first) // d.every_ms + 1, MAX_CATCH_UP)
    n, x = 1, first
    while n < MAX_CATCH_UP:
        nxt = next_tick_ms(d, x)
        if nxt is None or nxt > last:
            break
        n, x = n + 1, nxt
    return n
