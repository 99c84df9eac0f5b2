"""Schedules as values: :class:`Schedule` is what you declare; its
:class:`ScheduleDef` is what is stored in Redis (MessagePack) and compared by
digest, so that declaring the same schedule twice changes nothing. The tick
arithmetic (no Redis, no clock) is in :mod:`aiojobs_redis.schedules.ticks`.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final
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


