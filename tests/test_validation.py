"""Options and job ids are checked where they enter, with the library's own errors and a
message naming the option and its range, and a refused enqueue writes nothing: the
queue's keys (and their contents) are the same before and after.

The ranges: priority -1000..1000, attempts 1..10000 (ints, not bools or floats),
durations 0 (or 1 ms)..ten years, run_at aware and at most ten years ahead, backoff
factor 1..100, jitter 0..1, retention counts 0..10^9. Job ids at enqueue: no ``/`` or
``\\``, not ``.``/``..``, nothing invisible, no ``sched:`` prefix (schedules' ids).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from aiojobs_redis import (
    ConfigurationError,
    ExponentialBackoff,
    FixedBackoff,
    InvalidJobId,
    JobOptions,
    JobState,
    Queue,
    Retention,
    Schedule,
    TaskCall,
    task,
)
from aiojobs_redis.options import MAX_DURATION_S
from aiojobs_redis.producer.job_ids import _RUN_NOW_ID, check_job_id
from aiojobs_redis.schedules.spec import _NAME as SCHEDULE_NAME
from aiojobs_redis.schedules.ticks import tick_job_id

TEN_YEARS = 315_576_000  # s, MAX_DURATION_S


@task(name="greet")
async def greet(name: str) -> str:
    return f"hello {name}"


@task(name="beat")
async def beat(n: int = 0) -> int:
    return n


async def snapshot(queue: Queue) -> dict[bytes, bytes]:
    """Every key of the queue with its serialized value (DUMP)."""
    keys = [k async for k in queue.client.scan_iter(match=queue.keys.base + "*", count=1000)]
    return {k: await queue.client.dump(k) for k in keys}  # type: ignore[misc]


async def seeded(queue: Queue) -> dict[bytes, bytes]:
    """Put one good job on the queue (so there is something to disturb), then snapshot."""
    await queue.enqueue(greet, "seed")
    return await snapshot(queue)


async def refused(queue: Queue, attempt: Callable[[], Awaitable[Any] | Any],
                  error: type[Exception], match: str) -> None:
    """``attempt`` raises ``error`` with a message matching ``match`` and writes nothing."""
    before = await seeded(queue)
    with pytest.raises(error, match=match):
        await _call(attempt)
    assert await snapshot(queue) == before


async def _call(attempt: Callable[[], Awaitable[Any] | Any]) -> None:
    result = attempt()
    if isinstance(result, Awaitable):
        await result


# ------------------------------------------------------ bad values, every entry point

#: (options, message): each is refused as a ConfigurationError whose message names the
#: option and its range; all were accepted (or failed with a bare exception) before
BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"priority": 0.5}, r"priority must be an integer from -1000 to 1000, got 0\.5"),
    ({"priority": 2.0}, r"priority must be an integer from -1000 to 1000, got 2\.0"),
    ({"priority": True}, r"priority must be an integer from -1000 to 1000, got True"),
    ({"priority": "5"}, r"priority must be an integer from -1000 to 1000, got '5'"),
    ({"priority": 1001}, r"priority must be an integer from -1000 to 1000, got 1001"),
    ({"priority": -1001}, r"priority must be an integer from -1000 to 1000, got -1001"),
    ({"attempts": 2.5}, r"attempts must be an integer from 1 to 10000, got 2\.5"),
    ({"attempts": 0}, r"attempts must be an integer from 1 to 10000, got 0"),
    ({"attempts": 10_001}, r"attempts must be an integer from 1 to 10000, got 10001"),
    ({"attempts": 10**30}, r"attempts must be an integer from 1 to 10000, got 1000000"),
    ({"attempts": False}, r"attempts must be an integer from 1 to 10000, got False"),
    ({"timeout_s": 0}, r"timeout_s must be a finite number from 0\.001 to 315576000, got 0"),
    ({"timeout_s": float("inf")}, r"timeout_s must be a finite number from 0\.001 to"),
    ({"timeout_s": float("nan")}, r"timeout_s must be a finite number from 0\.001 to"),
    ({"timeout_s": 1e300}, r"timeout_s must be a finite number from 0\.001 to 315576000"),
    ({"timeout_s": "30"}, r"timeout_s must be a finite number .* got '30'"),
    ({"backoff": FixedBackoff}, r"backoff must be a FixedBackoff or an ExponentialBackoff"),
    ({"backoff": 5}, r"backoff must be a FixedBackoff or an ExponentialBackoff"),
    ({"retention": {"completed_count": 1}}, r"retention must be a Retention, not dict"),
]

#: options that only a job (not a task or queue default) may have
JOB_ONLY: list[tuple[dict[str, Any], str]] = [
    ({"delay_s": -1}, r"delay_s must be a finite number from 0 to 315576000, got -1"),
    ({"delay_s": float("inf")}, r"delay_s must be a finite number from 0 to 315576000, got inf"),
    ({"delay_s": float("nan")}, r"delay_s must be a finite number from 0 to 315576000, got nan"),
    ({"delay_s": 1e300}, r"delay_s must be a finite number from 0 to 315576000, got 1e\+300"),
    ({"delay_s": TEN_YEARS + 1}, r"delay_s must be a finite number from 0 to 315576000"),
    ({"delay_s": True}, r"delay_s must be a finite number from 0 to 315576000, got True"),
    ({"delay_s": "5"}, r"delay_s must be a finite number from 0 to 315576000, got '5'"),
    ({"run_at": datetime(2030, 1, 1)}, r"run_at must be a timezone-aware datetime"),
    ({"run_at": date(2030, 1, 1)}, r"run_at must be a timezone-aware datetime"),
    ({"run_at": 1_900_000_000.0}, r"run_at must be a timezone-aware datetime"),
    ({"run_at": datetime(9999, 12, 31, tzinfo=UTC)}, r"run_at must be at most ten years"),
    ({"job_id": 42}, r"job_id must be a str, not int"),
]


def _ids(cases: list[tuple[dict[str, Any], str]]) -> list[str]:
    return [f"{k}={v!r}"[:40] for kw, _ in cases for k, v in kw.items()]


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS + JOB_ONLY,
                         ids=_ids(BAD_OPTIONS + JOB_ONLY))
async def test_bad_job_options_by_name(queue: Queue, options: dict[str, Any],
                                       message: str) -> None:
    await refused(queue, lambda: queue.enqueue("greet", "x", options=JobOptions(**options)),
                  ConfigurationError, message)


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS + JOB_ONLY,
                         ids=_ids(BAD_OPTIONS + JOB_ONLY))
async def test_bad_task_options(queue: Queue, options: dict[str, Any], message: str) -> None:
    await refused(queue, lambda: queue.enqueue(greet.options(**options), "x"),
                  ConfigurationError, message)


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=_ids(BAD_OPTIONS))
async def test_bad_task_decorator_options(queue: Queue, options: dict[str, Any],
                                          message: str) -> None:
    async def handler() -> None: ...

    if "backoff" in options:  # @task takes a callable backoff too: its own message
        message = r"@task\(backoff=\.\.\.\) (must be a FixedBackoff|needs an instance)"
    await refused(queue, lambda: task(name="t", **options)(handler), ConfigurationError, message)


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=_ids(BAD_OPTIONS))
async def test_bad_queue_defaults(queue: Queue, options: dict[str, Any], message: str) -> None:
    await refused(queue, lambda: Queue(queue.client, name=queue.name,
                                       defaults=JobOptions(**options)),
                  ConfigurationError, message)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: FixedBackoff(delay_s=float("inf")),
     r"FixedBackoff\.delay_s must be a finite number from 0 to 315576000, got inf"),
    (lambda: FixedBackoff(delay_s=TEN_YEARS * 2), r"FixedBackoff\.delay_s must be .* 315576000"),
    (lambda: FixedBackoff(jitter=1.5), r"FixedBackoff\.jitter must be a finite number from 0 to 1"),
    (lambda: ExponentialBackoff(factor=float("inf")),
     r"ExponentialBackoff\.factor must be a finite number from 1 to 100, got inf"),
    (lambda: ExponentialBackoff(factor=1e6), r"ExponentialBackoff\.factor must be .* 1 to 100"),
    (lambda: ExponentialBackoff(base_s=float("nan")),
     r"ExponentialBackoff\.base_s must be a finite number from 0 to 315576000, got nan"),
    (lambda: ExponentialBackoff(max_s=1e300), r"ExponentialBackoff\.max_s must be .* 315576000"),
    (lambda: ExponentialBackoff(jitter=True), r"ExponentialBackoff\.jitter must be .* got True"),
    (lambda: Retention(completed_count=2.5),  # type: ignore[arg-type]
     r"Retention\.completed_count must be an integer from 0 to 1000000000, got 2\.5"),
    (lambda: Retention(failed_count=-1), r"Retention\.failed_count must be an integer from 0"),
    (lambda: Retention(failed_count=True), r"Retention\.failed_count must be an integer .* True"),
    (lambda: Retention(completed_count=10**10), r"Retention\.completed_count must be an integer"),
    (lambda: Retention(completed_age_s=float("inf")),
     r"Retention\.completed_age_s must be a finite number from 0\.001 to 315576000, got inf"),
    (lambda: Retention(failed_age_s=0), r"Retention\.failed_age_s must be .* from 0\.001"),
    (lambda: Retention(unbounded="yes"),  # type: ignore[arg-type]
     r"Retention\.unbounded must be True or False"),
], ids=["fixed-inf", "fixed-20y", "fixed-jitter", "exp-factor-inf", "exp-factor-1e6",
        "exp-base-nan", "exp-max-1e300", "exp-jitter-bool", "ret-count-float", "ret-count-neg",
        "ret-count-bool", "ret-count-1e10", "ret-age-inf", "ret-age-0", "ret-unbounded-str"])
async def test_bad_backoff_and_retention(queue: Queue, make: Callable[[], Any],
                                         message: str) -> None:
    async def enqueue() -> None:
        value = make()
        field = "backoff" if isinstance(value, FixedBackoff | ExponentialBackoff) else "retention"
        await queue.enqueue("greet", "x", options=JobOptions(**{field: value}))

    await refused(queue, enqueue, ConfigurationError, message)
    await refused(queue, lambda: Queue(queue.client, name=queue.name,
                                       defaults=JobOptions(backoff=make())),
                  ConfigurationError, message)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"defaults": {"priority": 1}}, r"defaults must be JobOptions, not dict"),
    ({"retention": {"completed_count": 1}}, r"retention must be a Retention, not dict"),
    ({"events_maxlen": 1e300}, r"events_maxlen must be an integer of at least 100, got 1e\+300"),
    ({"events_maxlen": 150.5}, r"events_maxlen must be an integer of at least 100, got 150\.5"),
])
async def test_bad_queue_settings(queue: Queue, kwargs: dict[str, Any], message: str) -> None:
    await refused(queue, lambda: Queue(queue.client, name=queue.name, **kwargs),
                  ConfigurationError, message)


async def test_bad_options_of_a_task_call_and_a_schedule(queue: Queue) -> None:
    await refused(queue, lambda: TaskCall.by_name("greet", "x",
                                                  options={"priority": 1}),  # type: ignore[arg-type]
                  ConfigurationError, r"options must be JobOptions, not dict")
    await refused(queue, lambda: queue.schedules.upsert(
        Schedule("s", beat, every_s=60, options=JobOptions(priority=0.5))),  # type: ignore[arg-type]
        ConfigurationError, r"priority must be an integer from -1000 to 1000")


# ----------------------------------------------------- the edges are accepted, exactly

async def test_priority_edges_order_and_read_back(queue: Queue) -> None:
    low = await queue.enqueue("greet", "low", options=JobOptions(priority=-1000))
    mid = await queue.enqueue(greet, "mid")
    high = await queue.enqueue(greet.options(priority=1000), "high")
    assert await queue.job_ids(JobState.WAITING) == [high.id, mid.id, low.id]
    assert [(await j.info()).priority for j in (high, mid, low)] == [1000, 0, -1000]
    # the scores (1000 - priority) * 2^40 + sequence stay exact: band and sequence read back
    raw: list[tuple[bytes, float]] = await queue.client.zrange(  # type: ignore[assignment]
        queue.keys.wait, 0, -1, withscores=True)
    bands = {m.decode(): (int(score) >> 40, int(score) & (2**40 - 1)) for m, score in raw}
    assert [bands[j.id][0] for j in (high, mid, low)] == [0, 1000, 2000]
    assert bands[low.id][1] < bands[mid.id][1] < bands[high.id][1]  # enqueue order
    await refused(queue, lambda: queue.enqueue(greet.options(priority=999.5), "x"),
                  ConfigurationError, r"priority must be an integer from -1000 to 1000")


async def test_attempt_edges(queue: Queue) -> None:
    one = await queue.enqueue("greet", "a", options=JobOptions(attempts=1))
    most = await queue.enqueue(greet.options(attempts=10_000), "b")
    assert (await one.info()).max_attempts == 1 and (await most.info()).max_attempts == 10_000
    await refused(queue, lambda: queue.enqueue(greet.options(attempts=10_000.0), "x"),
                  ConfigurationError, r"attempts must be an integer from 1 to 10000")


async def test_delay_and_run_at_edges(queue: Queue) -> None:
    now = await queue.now()
    zero = await queue.enqueue(greet.options(delay_s=0), "zero")
    longest = await queue.enqueue(greet.options(delay_s=TEN_YEARS), "longest")
    float_delay = await queue.enqueue(greet.options(delay_s=0.25), "quarter")
    past = await queue.enqueue(greet.options(run_at=now - timedelta(days=1)), "past")
    plus_two = timezone(timedelta(hours=2))
    later = datetime.fromtimestamp(time.time() + MAX_DURATION_S - 3600, tz=plus_two)
    far = await queue.enqueue(greet.options(run_at=later), "far")
    assert (await zero.info()).state is JobState.WAITING
    assert (await past.info()).state is JobState.WAITING
    assert (await float_delay.info()).state is JobState.DELAYED
    info = await longest.info()
    assert info.state is JobState.DELAYED and info.due_at is not None
    assert abs((info.due_at - now).total_seconds() - TEN_YEARS) < 60
    info = await far.info()
    assert info.due_at is not None and abs((info.due_at - later).total_seconds()) < 0.01
    await refused(queue, lambda: queue.enqueue(greet.options(delay_s=TEN_YEARS + 0.5), "x"),
                  ConfigurationError, r"delay_s must be a finite number from 0 to 315576000")


async def test_timeout_backoff_and_retention_edges(queue: Queue) -> None:
    edges = [
        JobOptions(timeout_s=0.001, backoff=FixedBackoff(delay_s=0, jitter=1),
                   retention=Retention(completed_count=0, failed_count=0)),
        JobOptions(timeout_s=TEN_YEARS, backoff=ExponentialBackoff(
            base_s=TEN_YEARS, factor=100, max_s=TEN_YEARS, jitter=0),
            retention=Retention(completed_count=10**9, completed_age_s=TEN_YEARS,
                                failed_count=None, failed_age_s=0.001)),
        JobOptions(backoff=ExponentialBackoff(base_s=0, factor=1, max_s=0)),
    ]
    jobs = await queue.enqueue_many([greet.call(str(i)).with_options(o)
                                     for i, o in enumerate(edges)])
    assert [(await j.info()).state for j in jobs] == [JobState.WAITING] * 3
    Queue(queue.client, name=queue.name, defaults=JobOptions(attempts=10_000, priority=-1000),
          retention=Retention(completed_count=None, completed_age_s=None, failed_count=None,
                              failed_age_s=None, unbounded=True), events_maxlen=100)
    await refused(queue, lambda: queue.enqueue(greet.options(timeout_s=TEN_YEARS + 1), "x"),
                  ConfigurationError, r"timeout_s must be a finite number from 0\.001 to")


# ---------------------------------------------------------------------------- job ids

BAD_IDS: list[tuple[str, str]] = [
    ("a/b", "may not contain '/'"),
    ("/", "may not contain '/'"),
    ("user/42", "may not contain '/'"),
    ("a/../b", "may not contain '/'"),
    ("../etc/passwd", "may not contain '/'"),
    ("a\\b", "may not contain '/' or '\\\\'"),
    ("..\\x", "may not contain '/' or '\\\\'"),
    ("..", "may not be '.' or '..'"),
    (".", "may not be '.' or '..'"),
    ("zero\u200bwidth", "invisible characters"),
    ("bidi\u202eevil", "invisible characters"),
    ("bom\ufeff", "invisible characters"),
    ("c1\x9bcontrol", "invisible characters"),
    ("lone\ud800surrogate", "invisible characters"),
    ("sched:nightly:1700000000000", "reserved for schedules"),
    ("sched:", "reserved for schedules"),
    ("sched:x", "reserved for schedules"),
    ("sched:p:now:ABCDEF012345", "reserved for schedules"),  # not what run_now makes
    ("sched:p:now:0123456789abc", "reserved for schedules"),
    ("sched:-lead:now:0123456789ab", "reserved for schedules"),  # not a schedule name
]


@pytest.mark.parametrize(("job_id", "message"), BAD_IDS, ids=[repr(i) for i, _ in BAD_IDS])
async def test_bad_job_ids_are_refused_and_write_nothing(queue: Queue, job_id: str,
                                                         message: str) -> None:
    head = "^job ids starting with 'sched:' " if "reserved" in message else "^a job id "
    await refused(queue, lambda: queue.enqueue("greet", "x", options=JobOptions(job_id=job_id)),
                  InvalidJobId, head + ".*" + message)
    await refused(queue, lambda: queue.enqueue(greet.options(job_id=job_id), "x"),
                  InvalidJobId, message)
    # a batch with one bad id adds none of its jobs, even past the first chunk of 500
    calls = [greet.call(str(i)) for i in range(600)]
    calls.append(TaskCall.by_name("greet", "bad", options=JobOptions(job_id=job_id)))
    await refused(queue, lambda: queue.enqueue_many(calls), InvalidJobId, message)
    with pytest.raises(InvalidJobId):
        check_job_id(job_id, enqueue=True)


async def test_good_job_ids_and_reading_any_stored_id(queue: Queue) -> None:
    good = ["user:42:digest", "a.b", "...", ".hidden", "a..b", "x" * 200, "café-☕",
            "50%off#1?q=2", "SCHED:x:1", "schedule:1", "sched", "a:b:c:", "@home",
            "sched:p:now:0123456789ab"]  # the shape of Schedules.run_now's ids
    jobs = await queue.enqueue_many([greet.call(i).with_options(JobOptions(job_id=i))
                                     for i in good])
    assert [j.id for j in jobs] == good and not any(j.existed for j in jobs)
    for job_id in good:
        assert (await queue.job(job_id).info()).args == [job_id]
    # ids enqueue refuses are still addressable (made by schedules, or stored before)
    for stored in ["a/b:c", "sched:reports/daily:1700000000000", ".."]:
        assert queue.job(stored).id == stored
    await refused(queue, lambda: queue.enqueue_many([greet.call("ok"), greet.options(
        job_id="user/42/digest").call("bad")]), InvalidJobId, r"may not contain '/'")


async def test_a_producer_cannot_preempt_a_schedule_tick(queue: Queue) -> None:
    await queue.schedules.upsert(Schedule("p", beat, every_s=3600, args=(7,)))
    now = int((await queue.now()).timestamp() * 1000)
    tick = now - now % 3_600_000  # the latest tick (hourly, so the next is not due soon)
    await queue.client.hset(queue.keys.sched_prefix + "p", mapping={"tick": tick, "due": tick})
    await queue.client.zadd(queue.keys.schedules, {"p": tick})
    for target in (tick, tick + 3_600_000):  # the due tick and the next one
        job_id = tick_job_id("p", target)
        await refused(queue, lambda job_id=job_id: queue.enqueue(  # type: ignore[misc]
            "beat", 666, options=JobOptions(job_id=job_id)),
            InvalidJobId, r"^job ids starting with 'sched:' are reserved for schedules")
        await refused(queue, lambda job_id=job_id: queue.enqueue(  # type: ignore[misc]
            beat.options(job_id=job_id), 666), InvalidJobId, "reserved for schedules")
    fired, _ = await queue.schedules.advance()
    assert fired == 1
    info = await queue.job(tick_job_id("p", tick)).info()  # the tick's own job, by its id
    assert info.task == "beat" and info.args == [7]
    [s] = await queue.schedules.list()
    assert s.runs == 1 and s.last_job_id == tick_job_id("p", tick)
    # the schedules' own sched: ids still work: run_now's, for any valid schedule name
    # (the producer's copy of the schedule-name rule agrees with the schedules' own)
    assert _RUN_NOW_ID.pattern == f"sched:{SCHEDULE_NAME.pattern[1:-1]}:now:[0-9a-f]{{12}}"
    for name in ("p", "Reports/daily.v2:eu@x_y-z", "9" + "n" * 99):
        await queue.schedules.upsert(Schedule(name, beat, every_s=3600))
        run_now = await queue.schedules.run_now(name)
        assert run_now.id.startswith(f"sched:{name}:now:") and not run_now.existed
        assert check_job_id(run_now.id, enqueue=True) == run_now.id


def test_retry_delay_of_a_late_attempt_does_not_overflow() -> None:
    """factor ** (attempt - 1) overflowed a float from attempt 1025 (factor 2) and crashed
    the worker's failure path; a callable's inf or nan was taken as it came."""
    from aiojobs_redis import ExponentialBackoff
    from aiojobs_redis.backoff import MAX_RETRY_DELAY_S, retry_delay_s

    steep = ExponentialBackoff(base_s=1, factor=100, max_s=60, jitter=0)
    assert retry_delay_s(steep, 10_000) == 60
    assert retry_delay_s(ExponentialBackoff(jitter=0), 5_000) > 0
    assert retry_delay_s(lambda _: float("inf"), 3) == MAX_RETRY_DELAY_S
    assert retry_delay_s(lambda _: float("nan"), 3) == 0.0
