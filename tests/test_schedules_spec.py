"""Pure schedule arithmetic: cron in a real zone across DST, intervals, bounds, jitter,
catch-up plans, and declaration errors. No Redis, no clock: "now" is a parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from aiojobs_redis import (
    CatchUp,
    ConfigurationError,
    ExponentialBackoff,
    JobOptions,
    Schedule,
    next_fire,
    prev_fire,
    task,
)
from aiojobs_redis.schedules.spec import ScheduleDef
from aiojobs_redis.schedules.ticks import (
    first_tick,
    jitter_ms,
    plan,
    tick_job_id,
)

BERLIN = ZoneInfo("Europe/Berlin")
# 2024: spring forward on 31 March 02:00 CET -> 03:00 CEST;
#       fall back on 27 October 03:00 CEST -> 02:00 CET


@task(name="sync")
async def sync(service: str, *, full: bool = False) -> None:
    return None


def berlin(cron: str) -> Schedule:
    return Schedule("s", "t", cron=cron, tz="Europe/Berlin")


def ticks(s: Schedule, after: datetime, n: int) -> list[str]:
    """The next n ticks as Berlin wall times with their UTC offset."""
    out = []
    t: datetime | None = after
    for _ in range(n):
        assert t is not None
        t = next_fire(s, t)
        assert t is not None
        out.append(t.astimezone(BERLIN).strftime("%m-%d %H:%M%z"))
    return out


def ticks_back(s: Schedule, before: datetime, n: int) -> list[str]:
    """The last n ticks at or before ``before``, oldest first (prev_fire agrees with next_fire)."""
    out = []
    t: datetime | None = before
    for _ in range(n):
        assert t is not None
        t = prev_fire(s, t)
        assert t is not None
        out.append(t.astimezone(BERLIN).strftime("%m-%d %H:%M%z"))
        t -= timedelta(milliseconds=1)
    return out[::-1]


SPRING = datetime(2024, 3, 30, 12, 0, tzinfo=BERLIN)
FALL = datetime(2024, 10, 26, 12, 0, tzinfo=BERLIN)


# ------------------------------------------------------------------ DST: fixed times

def test_fixed_time_in_the_skipped_hour_runs_once_shifted() -> None:
    # 02:30 does not exist on 31 March: it runs once, at 03:30 CEST, not skipped, not twice
    got = ticks(berlin("30 2 * * *"), SPRING, 3)
    assert got == ["03-31 03:30+0200", "04-01 02:30+0200", "04-02 02:30+0200"]
    assert ticks_back(berlin("30 2 * * *"), datetime(2024, 4, 2, 12, tzinfo=BERLIN), 3) == got


def test_fixed_time_in_the_repeated_hour_runs_once() -> None:
    # 02:30 happens twice on 27 October: it runs at the first one only
    got = ticks(berlin("30 2 * * *"), FALL, 3)
    assert got == ["10-27 02:30+0200", "10-28 02:30+0100", "10-29 02:30+0100"]
    assert ticks_back(berlin("30 2 * * *"), datetime(2024, 10, 29, 12, tzinfo=BERLIN), 3) == got


def test_daily_job_outside_the_transition_keeps_its_wall_time() -> None:
    got = ticks(berlin("30 6 * * *"), SPRING, 3)
    assert got == ["03-31 06:30+0200", "04-01 06:30+0200", "04-02 06:30+0200"]
    got = ticks(berlin("30 6 * * *"), FALL, 2)
    assert got == ["10-27 06:30+0100", "10-28 06:30+0100"]
    # 23 hours and 25 hours of real time between the runs around the transitions
    a = next_fire(berlin("30 6 * * *"), SPRING)
    assert a is not None
    b = next_fire(berlin("30 6 * * *"), a)
    assert b is not None and b - a == timedelta(hours=24)


def test_two_wall_times_on_one_instant_are_one_tick() -> None:
    # 02:10/02:30 shift onto 03:10/03:30, which are ticks anyway: one run each
    got = ticks(berlin("10,30 2,3 * * *"), datetime(2024, 3, 31, 0, 0, tzinfo=BERLIN), 4)
    assert got == ["03-31 03:10+0200", "03-31 03:30+0200", "04-01 02:10+0200", "04-01 02:30+0200"]


# --------------------------------------------------------------- DST: wildcard times

def test_wildcard_schedule_follows_the_clock_in_spring() -> None:
    # no tick for wall times that do not exist; nothing doubled at 03:00
    got = ticks(berlin("*/30 * * * *"), datetime(2024, 3, 31, 1, 0, tzinfo=BERLIN), 4)
    assert got == ["03-31 01:30+0100", "03-31 03:00+0200", "03-31 03:30+0200", "03-31 04:00+0200"]
    back = ticks_back(berlin("*/30 * * * *"), datetime(2024, 3, 31, 4, 0, tzinfo=BERLIN), 4)
    assert back == got


def test_wildcard_schedule_runs_the_repeated_hour_twice() -> None:
    got = ticks(berlin("*/30 * * * *"), datetime(2024, 10, 27, 1, 0, tzinfo=BERLIN), 7)
    assert got == ["10-27 01:30+0200", "10-27 02:00+0200", "10-27 02:30+0200",
                   "10-27 02:00+0100", "10-27 02:30+0100", "10-27 03:00+0100", "10-27 03:30+0100"]
    back = ticks_back(berlin("*/30 * * * *"), datetime(2024, 10, 27, 3, 30, tzinfo=BERLIN), 7)
    assert back == got


def test_hourly_is_every_real_hour_across_both_transitions() -> None:
    s = berlin("0 * * * *")
    for start in (datetime(2024, 3, 30, 22, tzinfo=UTC), datetime(2024, 10, 26, 22, tzinfo=UTC)):
        t: datetime | None = start
        for _ in range(8):
            assert t is not None
            n = next_fire(s, t)
            assert n is not None and n - t == timedelta(hours=1)
            t = n


def test_next_fire_from_inside_the_repeated_hour() -> None:
    s = berlin("*/30 * * * *")
    first_pass = datetime(2024, 10, 27, 2, 40, tzinfo=BERLIN)  # fold=0: 00:40 UTC
    n = next_fire(s, first_pass)
    assert n is not None and n.astimezone(BERLIN).strftime("%H:%M%z") == "02:00+0100"
    second_pass = datetime(2024, 10, 27, 2, 40, fold=1, tzinfo=BERLIN)
    n = next_fire(s, second_pass)
    assert n is not None and n.astimezone(BERLIN).strftime("%H:%M%z") == "03:00+0100"


def test_seconds_field_comes_first() -> None:
    s = Schedule("s", "t", cron="*/15 * * * * *")
    t0 = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    got = [next_fire(s, t0 + timedelta(seconds=i)) for i in (0, 15, 29)]
    assert got == [t0 + timedelta(seconds=15), t0 + timedelta(seconds=30),
                   t0 + timedelta(seconds=30)]


def test_aliases() -> None:
    s = Schedule("s", "t", cron="@hourly")
    assert next_fire(s, datetime(2024, 1, 1, 12, 5, tzinfo=UTC)) == datetime(2024, 1, 1, 13,
                                                                             tzinfo=UTC)


# ----------------------------------------------------------------- intervals, bounds

def test_interval_ticks_align_to_the_epoch_or_the_start() -> None:
    s = Schedule("s", "t", every_s=30)
    assert next_fire(s, datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC)) == \
        datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
    assert next_fire(s, datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)) == \
        datetime(2024, 1, 1, 0, 1, tzinfo=UTC)
    start = datetime(2024, 1, 1, 0, 0, 7, tzinfo=UTC)
    s = Schedule("s", "t", every_s=30, start_at=start)
    assert next_fire(s, datetime(2023, 1, 1, tzinfo=UTC)) == start
    assert next_fire(s, start) == start + timedelta(seconds=30)
    assert prev_fire(s, start - timedelta(seconds=1)) is None


def test_intervals_are_elapsed_time_across_dst() -> None:
    s = Schedule("s", "t", every_s=3600, tz="Europe/Berlin")
    t = datetime(2024, 10, 27, 0, 0, tzinfo=UTC)
    n = next_fire(s, t)
    assert n is not None and n - t == timedelta(hours=1)


def test_start_end_and_cron_bounds() -> None:
    start = datetime(2024, 1, 10, tzinfo=UTC)
    end = datetime(2024, 1, 12, tzinfo=UTC)
    s = Schedule("s", "t", cron="0 0 * * *", start_at=start, end_at=end)
    assert next_fire(s, datetime(2024, 1, 1, tzinfo=UTC)) == start
    assert next_fire(s, start) == datetime(2024, 1, 11, tzinfo=UTC)
    assert next_fire(s, datetime(2024, 1, 11, tzinfo=UTC)) == end  # end is inclusive
    assert next_fire(s, end) is None
    assert prev_fire(s, datetime(2025, 1, 1, tzinfo=UTC)) == end


# ----------------------------------------------------------------------- jitter

def test_jitter_is_bounded_and_the_same_for_every_worker() -> None:
    s = Schedule("nightly", sync, cron="30 6 * * *", tz="Europe/Berlin", jitter_s=30,
                 args=("crm",))
    d = s.definition
    values = [jitter_ms(d, t) for t in range(0, 10_000_000, 10_007)]
    assert all(0 <= v <= 30_000 for v in values)
    assert len(set(values)) > 900  # spread, not constant
    assert max(values) > 29_000 and min(values) < 1000
    twin = Schedule("nightly", sync, cron="30 6 * * *", tz="Europe/Berlin", jitter_s=30,
                    args=("crm",))
    assert [jitter_ms(twin.definition, t) for t in range(0, 10_000_000, 10_007)] == values
    assert jitter_ms(Schedule("n", "t", every_s=1).definition, 12345) == 0
    tick, due = first_tick(d, 0, 0)
    assert 0 <= due - tick <= 30_000 and due - tick == jitter_ms(d, tick)


# -------------------------------------------------------------------- catch-up plans

def _every(ms: int, **kw: object) -> ScheduleDef:
    return Schedule("p", "t", every_s=ms / 1000, **kw).definition  # type: ignore[arg-type]


def test_plan_when_on_time_fires_exactly_the_pending_tick() -> None:
    d = _every(1000)
    p = plan(d, 5000, 5003, runs=4)
    assert p is not None
    assert p.fire == (5000,) and p.handled == 5000 and p.next_tick == 6000 and p.missed == 0
    assert plan(d, 5000, 4999, runs=4) is None  # not due


def test_plan_once_folds_missed_ticks_into_the_latest() -> None:
    p = plan(_every(1000), 5000, 9500, runs=0)
    assert p is not None
    assert p.fire == (9000,) and p.next_tick == 10_000 and p.missed == 4


def test_plan_skip_drops_late_ticks_but_runs_a_fresh_one() -> None:
    d = _every(1000, catch_up="skip", grace_s=0.1)
    p = plan(d, 5000, 9500, runs=0)
    assert p is not None and p.fire == () and p.next_tick == 10_000 and p.missed == 5
    p = plan(d, 5000, 9050, runs=0)
    assert p is not None and p.fire == (9000,) and p.missed == 4


def test_plan_all_fires_each_missed_tick_up_to_the_cap() -> None:
    p = plan(_every(1000, catch_up=CatchUp.ALL), 5000, 9500, runs=0)
    assert p is not None and p.fire == (5000, 6000, 7000, 8000, 9000) and p.missed == 0
    p = plan(_every(1000, catch_up=CatchUp.ALL, catch_up_cap=3), 5000, 9500, runs=0)
    assert p is not None and p.fire == (7000, 8000, 9000) and p.missed == 2


def test_plan_stops_at_the_run_limit() -> None:
    d = _every(1000, catch_up=CatchUp.ALL, max_runs=5)
    p = plan(d, 5000, 9500, runs=3)
    assert p is not None and p.fire == (8000, 9000) and p.next_tick == -1
    assert first_tick(d, 0, 5) == (-1, -1)


def test_plan_for_cron_catch_up() -> None:
    d = Schedule("c", "t", cron="0 * * * *", catch_up="all").definition
    h = 3_600_000
    p = plan(d, 10 * h, 13 * h + 5, runs=0)
    assert p is not None and p.fire == (10 * h, 11 * h, 12 * h, 13 * h) and p.next_tick == 14 * h


def test_tick_job_ids_are_deterministic() -> None:
    assert tick_job_id("pulse", 1700000000000) == "sched:pulse:1700000000000"


# ------------------------------------------------------------------- declarations

def test_definition_digest_is_stable_and_sensitive() -> None:
    a = Schedule("n", sync, cron="30 6 * * *", args=("crm",), kwargs={"full": True})
    b = Schedule("n", sync, cron="30 6 * * *", args=("crm",), kwargs={"full": True})
    assert a == b and a.digest == b.digest and hash(a) == hash(b)
    assert Schedule("n", sync, cron="31 6 * * *", args=("crm",)).digest != a.digest
    assert Schedule("n", sync, cron="30 6 * * *", args=("erp",)).digest != a.digest
    opts = JobOptions(attempts=3, backoff=ExponentialBackoff(base_s=2, jitter=0))
    c = Schedule("n", sync, cron="30 6 * * *", args=("crm",), options=opts)
    assert c.digest != a.digest and c.definition.max_attempts == 3
    with pytest.raises(AttributeError):
        a.queue = "x"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"cron": "* * * * *", "every_s": 1}, "exactly one"),
        ({"cron": "61 * * * *"}, "invalid cron"),
        ({"cron": "* * * *"}, "5 fields"),
        ({"every_s": 0.001}, "every_s"),
        ({"every_s": 1, "tz": "Mars/Olympus"}, "time zone"),
        ({"every_s": 1, "jitter_s": -1}, "jitter_s"),
        ({"every_s": 1, "jitter_s": 1}, "shorter than every_s"),
        ({"every_s": 1, "max_runs": 0}, "max_runs"),
        ({"every_s": 1, "catch_up": "sometimes"}, "catch_up"),
        ({"every_s": 1, "catch_up_cap": 0}, "catch_up_cap"),
        ({"every_s": 1, "start_at": datetime(2024, 1, 1)}, "timezone-aware"),
        ({"every_s": 1, "start_at": datetime(2024, 1, 2, tzinfo=UTC),
          "end_at": datetime(2024, 1, 1, tzinfo=UTC)}, "end_at"),
        ({"every_s": 1, "options": JobOptions(delay_s=3)}, "job options"),
        ({"every_s": 1, "queue": "bad name"}, "queue name"),
    ],
)
def test_bad_declarations_fail_at_once(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Schedule("ok", "t", **kwargs)  # type: ignore[arg-type]


def test_bad_names_and_arguments() -> None:
    with pytest.raises(ConfigurationError, match="schedule name"):
        Schedule("has space", "t", every_s=1)
    with pytest.raises(TypeError, match="sync"):
        Schedule("n", sync, every_s=1, args=(1, 2, 3))
    with pytest.raises(TypeError):
        Schedule("n", sync, every_s=1, cron_expr="x")  # type: ignore[call-arg]
