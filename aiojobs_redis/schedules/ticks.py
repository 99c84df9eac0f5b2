"""Pure tick arithmetic of schedules (no Redis, no clock: "now" is a parameter).

Ticks are instants in epoch milliseconds.

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

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

from croniter import croniter

from ..errors import ConfigurationError
from .spec import MAX_CATCH_UP, CatchUp, Schedule, ScheduleDef

_NEAR: Final = timedelta(hours=3)  # no real zone shifts its offset by more than this at once
_MAX_SCAN: Final = 20_000  # cron wall times looked at per search (a second-cron's DST hour)


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
