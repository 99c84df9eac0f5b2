"""Every script that takes a list, at the sizes that broke them: 0, 1, 7,999, 8,000 and
100,000 elements in ONE call.

Lua's ``unpack()`` of about 8,000 values fails ("too many results to unpack"), and a
script that fails after its first write leaves those writes applied. Each case checks
what the call returned and what it changed, then the state invariants of the whole
queue (tests/invariants.py): a script that wrote, then failed, leaves jobs whose state
field and state set disagree, or ids in two sets.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from aiojobs_redis import JobOptions, Queue, Retention, TaskCall, codec
from aiojobs_redis._redis_server import RedisServer
from aiojobs_redis.ops.metrics import LAYOUT, MINUTE_SLOTS, WIDTH
from aiojobs_redis.producer.flows import MAX_EDGES
from aiojobs_redis.scripts import SCRIPTS, Batch
from aiojobs_redis.worker.execution import FetchedJob
from aiojobs_redis.worker.maintenance import recover_stalled

from ..conftest import patient_queue
from ..invariants import check_invariants
from . import direct

SMALL = (0, 1, 7_999, 8_000)
BIG = 100_000
_SETUP_CHUNK = 1000  # setup goes through the scripts in calls of this size


# ------------------------------------------------------------------ set-up helpers

async def _enqueue(q: Queue, n: int, options: JobOptions | None = None) -> list[str]:
    jobs = await q.enqueue_many(TaskCall.by_name("t", options=options) for _ in range(n))
    return [j.id for j in jobs]


async def _active(q: Queue, n: int, *, lease_ms: int = 60_000,
                  options: JobOptions | None = None) -> list[FetchedJob]:
    """n new jobs taken by a worker."""
    await _enqueue(q, n, options)
    return await _fetch(q, n, lease_ms)


async def _fetch(q: Queue, n: int, lease_ms: int = 60_000) -> list[FetchedJob]:
    """Take n waiting jobs (fetch_jobs calls of 1,000 in one round trip)."""
    script = SCRIPTS["fetch_jobs"]
    batch = Batch()
    for start in range(0, n, _SETUP_CHUNK):
        batch.add(script, script.keys_of(q.keys), [
            q.keys.job_prefix, q.events_maxlen, min(_SETUP_CHUNK, n - start), lease_ms, "w",
            secrets.token_hex(4), 0, q.keys.fetch_prefix])
    replies = await batch.execute(q.client) if n else []
    width = FetchedJob.WIDTH
    jobs = [FetchedJob(*reply[i:i + width]) for reply in replies
            for i in range(1, len(reply), width)]
    assert len(jobs) == n
    return jobs


async def _failed(q: Queue, n: int) -> list[str]:
    """n jobs failed for good (fail_jobs calls of 1,000 in one round trip)."""
    jobs = await _active(q, n)
    script = SCRIPTS["fail_jobs"]
    batch = Batch()
    for start in range(0, n, _SETUP_CHUNK):
        rows = [(j.id, j.token, "E", "tb", -1) for j in jobs[start:start + _SETUP_CHUNK]]
        batch.add(script, script.keys_of(q.keys),
                  [q.keys.job_prefix, q.events_maxlen, -1, -1, codec.pack(rows)])
    if n:
        await batch.execute(q.client)
    return [j.id for j in jobs]


async def _counts(q: Queue) -> dict[str, int]:
    return {str(state): n for state, n in (await q.counts()).items() if n}


def _only(**expected: int) -> dict[str, int]:
    return {state: n for state, n in expected.items() if n}


# ------------------------------------------------------------- one check per script

async def check_add_jobs(q: Queue, n: int) -> None:
    rows: list[list[Any]] = []
    for _ in range(n):
        q._job_argv(TaskCall.by_name("t"), rows, None)
    statuses = await direct.run(q, "add_jobs", q.events_maxlen, codec.pack(rows))
    assert statuses == [1] * n
    assert await _counts(q) == _only(waiting=n)


async def check_add_flow(q: Queue, n: int) -> None:
    """n jobs and one that waits for all of them, in one call (a row of n edges, and n
    rows of one edge each)."""
    rows: list[list[Any]] = []
    for i in range(n):
        q._job_argv(TaskCall.by_name("t", options=JobOptions(job_id=f"c{i}")), rows, None)
        rows[-1] += [[], [["callback", "f"]]]
    q._job_argv(TaskCall.by_name("t", options=JobOptions(job_id="callback")), rows, None)
    rows[-1] += [[[f"c{i}", "f"] for i in range(n)], []]
    statuses = await direct.run(q, "add_flow", q.events_maxlen, codec.pack(rows))
    assert statuses == [1] * (n + 1)
    assert await _counts(q) == (_only(waiting=n, blocked=1) if n else _only(waiting=1))


async def check_add_dead_jobs(q: Queue, n: int, log_lines: int = 100) -> None:
    """n dead jobs arrive in one call, each record a full one (100 log lines: ~220 fields,
    one bounded HSET each); with retention, the trim stays bounded too."""
    record: list[Any] = ["task", "t", "attempts", "3", "error", "ValueError: x"]
    for i in range(1, log_lines + 1):
        record += (f"log:{i}", "line")
    rows = [[f"d{i}", "origin", record] for i in range(n)]
    statuses = await direct.run(q, "add_dead_jobs", q.events_maxlen, -1, -1, codec.pack(rows))
    assert statuses == [1] * n
    assert await _counts(q) == _only(failed=n)


async def check_fetch_jobs(q: Queue, n: int) -> None:
    """n due delayed jobs promoted, then n taken, in one call (two lists of n)."""
    await _enqueue(q, n, JobOptions(delay_s=0.001))
    await asyncio.sleep(0.01)
    reply = await direct.run(q, "fetch_jobs", q.events_maxlen, n, 60_000, "w",
                             secrets.token_hex(4), n, q.keys.fetch_prefix)
    assert (len(reply) - 1) // FetchedJob.WIDTH == n and int(reply[0]) == -1
    assert await _counts(q) == _only(active=n)


async def check_complete_jobs(q: Queue, n: int) -> None:
    jobs = await _active(q, n)
    rows = [(j.id, j.token, b"\x2a") for j in jobs]
    statuses = await direct.run(q, "complete_jobs", q.events_maxlen, -1, -1, codec.pack(rows))
    assert statuses == [1] * n
    assert await _counts(q) == _only(completed=n)


async def check_fail_jobs(q: Queue, n: int) -> None:
    """Every other job is retried (to waiting), the rest fail for good."""
    jobs = await _active(q, n, options=JobOptions(attempts=2))
    rows = [(j.id, j.token, "E", "tb", 0 if i % 2 == 0 else -1) for i, j in enumerate(jobs)]
    statuses = await direct.run(q, "fail_jobs", q.events_maxlen, -1, -1, codec.pack(rows))
    assert statuses == [2 if i % 2 == 0 else 1 for i in range(n)]
    assert await _counts(q) == _only(waiting=(n + 1) // 2, failed=n // 2)


async def check_extend_leases(q: Queue, n: int) -> None:
    """All leases renewed but the last one's, whose token is wrong: that one is lost."""
    jobs = await _active(q, n, lease_ms=10_000)
    args: list[Any] = []
    for i, j in enumerate(jobs):
        args += (j.id, j.token if i < n - 1 else "wrong")
    lost, _ = await direct.run(q, "extend_leases", 600_000, *args)
    assert [x.decode() for x in lost] == [j.id for j in jobs[n - 1:]]
    soon = (await q.now()).timestamp() * 1000 + 60_000
    renewed = await q.client.zcount(q.keys.active, soon, "+inf")
    assert renewed == max(n - 1, 0), "every lease but the lost one is renewed"
    assert await _counts(q) == _only(active=n)


async def check_retry_jobs(q: Queue, n: int) -> None:
    ids = await _failed(q, n)
    statuses = await direct.run(q, "retry_jobs", q.events_maxlen, "", *ids)
    assert statuses == [1] * n
    assert await _counts(q) == _only(waiting=n)
    if n:
        assert await q.client.hget(q.keys.job(ids[-1]), "attempts") == b"0"


async def check_return_jobs(q: Queue, n: int) -> None:
    jobs = await _active(q, n)
    args: list[Any] = []
    for j in jobs:
        args += (j.id, j.token)
    statuses = await direct.run(q, "return_jobs", q.events_maxlen, *args)
    assert statuses == [1] * n
    assert await _counts(q) == _only(waiting=n)


async def check_recover_stalled(q: Queue, n: int) -> None:
    """n stalled jobs failed for good in one call, the failed set trimmed to 100."""
    await _active(q, n, lease_ms=1)
    await asyncio.sleep(0.01)
    reply = await direct.run(q, "recover_stalled", q.events_maxlen, 0, n, 100, -1)
    assert reply == [0, n, 0]
    assert await _counts(q) == _only(failed=min(n, 100))


async def check_drain_queue(q: Queue, n: int) -> None:
    await _enqueue(q, n)
    assert await direct.run(q, "drain_queue", max(n, 1)) == n
    assert await _counts(q) == {}


async def check_obliterate_queue(q: Queue, n: int) -> None:
    await _active(q, n // 2)
    await _enqueue(q, n - n // 2)
    assert await direct.run(q, "obliterate_queue", max(n, 1), "1") == n
    assert await _counts(q) == {}
    assert await direct.run(q, "obliterate_queue", max(n, 1), "1") == 0


async def check_read_jobs(q: Queue, n: int) -> None:
    """A page of two jobs with n fields each."""
    ids = await _enqueue(q, 2)
    fields = (["state", "task"] * n)[:n]
    script = SCRIPTS["read_jobs"]
    reply = await script(q.client, [q.keys.wait], [q.keys.job_prefix, 0, 10, 0, 100, *fields])
    values = [b"waiting" if f == "state" else b"t" for f in fields]
    assert reply == [2, ids[0].encode(), *values, ids[1].encode(), *values]


async def check_record_metrics(q: Queue, n: int) -> None:
    script = SCRIPTS["record_metrics"]
    args: list[Any] = [MINUTE_SLOTS, WIDTH, ""]
    for i in range(n):
        args += (i % WIDTH + 1, LAYOUT[i % WIDTH], 1)
    await script(q.client, script.keys_of(q.keys), args)
    totals = await q.client.hgetall(q.keys.metrics_total)
    assert sum(int(v) for v in totals.values()) == n
    slots = await q.client.hvals(q.keys.metrics)
    assert sum(sum(int(c) for c in s.split()[1:]) for s in slots) == n


async def check_fire_schedule(q: Queue, n: int) -> None:
    """One due schedule fires n ticks (n jobs) in one call."""
    k = q.keys
    upsert, fire = SCRIPTS["upsert_schedule"], SCRIPTS["fire_schedule"]
    assert await upsert(q.client, upsert.keys_of(k),
                        [k.sched_prefix, "s", b"x", "d", "", "", 1000, 1000]) == 1
    payload, options = codec.encode_args("t", (), {}), codec.encode_options(JobOptions())
    status = await fire(q.client, fire.keys_of(k), [
        k.job_prefix, q.events_maxlen, k.sched_prefix, "s", "d", 1000, 1000 + n, -1, -1, "t",
        payload, options, 0, 1, *range(1000, 1000 + n)])
    assert status == 1
    assert await _counts(q) == _only(waiting=n)
    assert await q.client.hget(k.sched_prefix + "s", "runs") == str(n).encode()


async def check_list_due_schedules(q: Queue, n: int) -> None:
    """n due index entries whose schedule hash is gone are all dropped in one call."""
    for start in range(0, n, 10_000):
        await q.client.zadd(q.keys.schedules,
                            {f"gone{i}": 0 for i in range(start, min(start + 10_000, n))})
    script = SCRIPTS["list_due_schedules"]
    reply = await script(q.client, script.keys_of(q.keys), [q.keys.sched_prefix, max(n, 1)])
    assert len(reply) == 2 and int(reply[1]) == -1
    assert await q.client.zcard(q.keys.schedules) == 0


CHECKS: dict[str, Callable[[Queue, int], Awaitable[None]]] = {
    "add_dead_jobs": check_add_dead_jobs,
    "add_flow": check_add_flow,
    "add_jobs": check_add_jobs,
    "complete_jobs": check_complete_jobs,
    "drain_queue": check_drain_queue,
    "extend_leases": check_extend_leases,
    "fail_jobs": check_fail_jobs,
    "fetch_jobs": check_fetch_jobs,
    "fire_schedule": check_fire_schedule,
    "list_due_schedules": check_list_due_schedules,
    "obliterate_queue": check_obliterate_queue,
    "read_jobs": check_read_jobs,
    "record_metrics": check_record_metrics,
    "recover_stalled": check_recover_stalled,
    "retry_jobs": check_retry_jobs,
    "return_jobs": check_return_jobs,
}


async def check_add_flow_big(q: Queue, n: int) -> None:
    """add_flow at n > MAX_EDGES: a job may wait for at most MAX_EDGES jobs, so n jobs and
    one that waits for all of them (check_add_flow's call) are refused whole, with a clear
    error, before anything is written; the same n jobs in one call, each MAX_EDGES of them
    waited for by a callback of their own (the bound exactly), are taken."""
    assert n > MAX_EDGES
    callbacks = -(-n // MAX_EDGES)
    jobs: list[list[Any]] = []
    for i in range(n):
        q._job_argv(TaskCall.by_name("t", options=JobOptions(job_id=f"c{i}")), jobs, None)
        jobs[-1] += [[], [[f"callback{i // MAX_EDGES}", "f"]]]

    def callback(job_id: str, deps: range) -> list[Any]:
        row: list[list[Any]] = []
        q._job_argv(TaskCall.by_name("t", options=JobOptions(job_id=job_id)), row, None)
        return [*row[0], [[f"c{i}", "f"] for i in deps], []]

    events = await q.client.xlen(q.keys.events)
    with pytest.raises(ResponseError, match=f"add_flow: job {n + 1} is not"):
        await direct.run(q, "add_flow", q.events_maxlen,
                         codec.pack([*jobs, callback("callback", range(n))]))
    assert await _counts(q) == {}
    assert await q.client.xlen(q.keys.events) == events, "no event either"
    assert [k async for k in q.client.scan_iter(match=q.keys.base + "*")] == [], \
        "nothing written"

    rows = [*jobs, *(callback(f"callback{c}", range(c * MAX_EDGES, min(n, (c + 1) * MAX_EDGES)))
                     for c in range(callbacks))]
    statuses = await direct.run(q, "add_flow", q.events_maxlen, codec.pack(rows))
    assert statuses == [1] * (n + callbacks)
    assert await _counts(q) == _only(waiting=n, blocked=callbacks)


#: the scripts that handle one job or schedule per call: no list to size
SINGLE = {"promote_job", "remove_job", "update_progress", "upsert_schedule", "remove_schedule",
          "cancel_job", "change_job", "append_log"}


def test_every_script_with_a_list_is_checked() -> None:
    """A new script is either in SINGLE or gets a size check here."""
    assert set(SCRIPTS) - SINGLE == set(CHECKS)


# -------------------------------------------------------------------------- tests

#: every size on a standalone server; on a cluster-mode one (where Batch and key checks
#: differ, not the scripts' handling of sizes) the edges and the size that broke them
SERVERS_AND_SIZES = [
    *(("standalone", n) for n in SMALL),
    *(pytest.param("cluster", n, marks=pytest.mark.cluster) for n in (0, 1, 8_000)),
]


@pytest.mark.parametrize(("squeue", "n"), SERVERS_AND_SIZES, indirect=["squeue"])
@pytest.mark.parametrize("name", sorted(CHECKS))
async def test_list_sizes(squeue: Queue, name: str, n: int) -> None:
    try:
        await CHECKS[name](squeue, n)
    finally:  # also when the call failed: did it write before failing?
        await check_invariants(squeue.client, squeue.keys)


@pytest.fixture
async def big_queue(redis_server: RedisServer, queue_name: str) -> AsyncIterator[Queue]:
    """A queue whose client waits for long script calls (one over 100,000 jobs)."""
    async with patient_queue(redis_server, queue_name) as q:
        yield q


@pytest.mark.timeout(300)  # measured 18 s at load 3 on 2 cores, 50-66 s at load 10-12
async def test_lists_of_100k_on_the_scripts_that_had_the_bug(big_queue: Queue) -> None:
    """extend_leases, complete_jobs, fail_jobs, return_jobs and retry_jobs, each given a
    list of 100,000 elements in ONE call, on the same 100,000 active jobs (one set-up: at
    this size it costs more than the calls). The jobs are cut in thirds A, B, C: each call
    lists all of them and writes to at least 16,000 (where the old scripts wrote, then
    failed), the others answering with a refusal status."""
    q, n = big_queue, BIG
    a, b = n // 3 + 1, 2 * n // 3 + 1
    jobs = await _active(q, n, options=JobOptions(attempts=2))
    ids = [j.id for j in jobs]

    def pairs(token: Callable[[int, FetchedJob], str]) -> list[str]:
        out: list[str] = []
        for i, j in enumerate(jobs):
            out += (j.id, token(i, j))
        return out

    # extend_leases: every lease renewed but the last one's, whose token is wrong
    lost, _ = await direct.run(q, "extend_leases", 600_000,
                               *pairs(lambda i, j: j.token if i < n - 1 else "wrong"))
    assert [x.decode() for x in lost] == ids[-1:]
    soon = (await q.now()).timestamp() * 1000 + 60_000
    assert await q.client.zcount(q.keys.active, soon, "+inf") == n - 1
    await check_invariants(q.client, q.keys)

    # complete_jobs: A completes; B and C are listed with a stale token
    rows = [(j.id, j.token if i < a else "stale", b"\x2a") for i, j in enumerate(jobs)]
    statuses = await direct.run(q, "complete_jobs", q.events_maxlen, -1, -1, codec.pack(rows))
    assert statuses == [1] * a + [-2] * (n - a)
    assert await _counts(q) == _only(completed=a, active=n - a)
    await check_invariants(q.client, q.keys)

    # fail_jobs: A is done already; B fails, every other one retried; C has a stale token
    failures = [(j.id, j.token if i < b else "stale", "E", "tb", 0 if i % 2 == 0 else -1)
                for i, j in enumerate(jobs)]
    statuses = await direct.run(q, "fail_jobs", q.events_maxlen, -1, -1, codec.pack(failures))
    retried = [i for i in range(a, b) if i % 2 == 0]
    assert statuses == [0] * a + [2 if i % 2 == 0 else 1 for i in range(a, b)] + [-2] * (n - b)
    assert await _counts(q) == _only(completed=a, waiting=len(retried),
                                     failed=b - a - len(retried), active=n - b)
    await check_invariants(q.client, q.keys)

    # return_jobs: only C is still active (and handed back)
    statuses = await direct.run(q, "return_jobs", q.events_maxlen, *pairs(lambda i, j: j.token))
    assert statuses == [-2] * b + [1] * (n - b)
    assert await _counts(q) == _only(completed=a, waiting=len(retried) + n - b,
                                     failed=b - a - len(retried))
    await check_invariants(q.client, q.keys)

    # retry_jobs: all 100,000 ids; only B's failed ones move
    statuses = await direct.run(q, "retry_jobs", q.events_maxlen, "", *ids)
    assert statuses == [1 if a <= i < b and i % 2 else -3 for i in range(n)]
    assert await _counts(q) == _only(completed=a, waiting=n - a)
    await check_invariants(q.client, q.keys)


#: the scripts test_lists_of_100k_on_the_scripts_that_had_the_bug gives 100,000 elements
HAD_THE_BUG = {"complete_jobs", "extend_leases", "fail_jobs", "retry_jobs", "return_jobs"}

#: every other script's check at 100,000 elements in one call: its check of CHECKS, but
#: where the script bounds its input on purpose (add_flow: MAX_EDGES edges per job) the
#: refusal too. add_dead_jobs' records are short here: full ones (test_list_sizes) would
#: make a call of 125 MB and 15 s, which the length of the list does not need.
BIG_CHECKS: dict[str, Callable[[Queue, int], Awaitable[None]]] = {
    **{name: check for name, check in CHECKS.items() if name not in HAD_THE_BUG},
    "add_dead_jobs": functools.partial(check_add_dead_jobs, log_lines=1),
    "add_flow": check_add_flow_big,
}


def test_every_script_with_a_list_is_checked_at_100k() -> None:
    assert set(CHECKS) >= HAD_THE_BUG
    assert set(BIG_CHECKS) == set(CHECKS) - HAD_THE_BUG


@pytest.mark.scale  # about 30 s in all on 2 cores: `-m "not scale"` leaves them out
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", sorted(BIG_CHECKS))
async def test_lists_of_100k(big_queue: Queue, name: str) -> None:
    """Each other script given a list of 100,000 elements in ONE call."""
    try:
        await BIG_CHECKS[name](big_queue, BIG)
    finally:  # also when the call failed: did it write before failing?
        await check_invariants(big_queue.client, big_queue.keys)


async def test_check_invariants_finds_each_kind_of_breakage(squeue: Queue) -> None:
    """The checker itself: silent on a sound queue, names every kind of breakage."""
    k = squeue.keys
    ids = await _enqueue(squeue, 6)
    await check_invariants(squeue.client, k)
    await squeue.client.zadd(k.active, {ids[0]: 1})  # in two sets
    await squeue.client.hset(k.job(ids[1]), "state", "active")  # in the wrong set
    await squeue.client.zrem(k.wait, ids[2])  # in no set
    await squeue.client.hset(k.job(ids[3]), "state", "bogus")  # bad state
    await squeue.client.zadd(k.failed, {"ghost": 1})  # no hash
    with pytest.raises(AssertionError) as caught:
        await check_invariants(squeue.client, k)
    # the job in two sets is in the wrong one of them as well
    assert ("1 bad state, 2 in the wrong set, 1 in several sets, 1 in no set, 1 no hash"
            in str(caught.value))
    for job_id in (ids[0], ids[1], ids[2], ids[3], "ghost"):
        assert repr(job_id) in str(caught.value)


@pytest.mark.parametrize("squeue", ["standalone"], indirect=True)
@pytest.mark.parametrize("name", ["add_jobs", "complete_jobs", "fail_jobs"])
async def test_a_bad_row_last_writes_nothing(squeue: Queue, name: str) -> None:
    """Validate first, then write: 8,000 good rows and a bad one change nothing."""
    n = 8_000
    if name == "add_jobs":
        rows: list[Any] = []
        for _ in range(n):
            squeue._job_argv(TaskCall.by_name("t"), rows, None)
        rows.append(["id", "t", b"", b"", "not a number", 1, -1, -1])
        args: list[Any] = [codec.pack(rows)]
        before = _only()
    else:
        jobs = await _active(squeue, n)
        rows = [(j.id, j.token, b"\xc0") if name == "complete_jobs" else
                (j.id, j.token, "E", "tb", -1) for j in jobs]
        rows.append((jobs[0].id, jobs[0].token))
        args = [-1, -1, codec.pack(rows)]
        before = _only(active=n)
    events = await squeue.client.xlen(squeue.keys.events)
    with pytest.raises(ResponseError, match=name):
        await direct.run(squeue, name, squeue.events_maxlen, *args)
    assert await _counts(squeue) == before
    assert await squeue.client.xlen(squeue.keys.events) == events, "no event either"
    await check_invariants(squeue.client, squeue.keys)


async def test_recover_stalled_applies_failed_retention(client: Redis, queue_name: str) -> None:
    """Jobs failed for too many stalls are trimmed like fail_jobs' (issue item 3): the
    worker's check passes the queue's failed retention; a keep count of 0 deletes at once."""
    q = Queue(client, name=queue_name, retention=Retention(failed_count=3))
    try:
        await _active(q, 10, lease_ms=1)
        await asyncio.sleep(0.01)
        assert await recover_stalled(q, max_stalls=0) == (0, 10)
        assert await _counts(q) == _only(failed=3)
        await check_invariants(q.client, q.keys)
        await _active(q, 5, lease_ms=1)
        await asyncio.sleep(0.01)
        assert await direct.run(q, "recover_stalled", q.events_maxlen, 0, 100, 0, -1) == [0, 5, 0]
        assert await _counts(q) == _only(failed=3), "keep_count 0: deleted, not added"
        await check_invariants(q.client, q.keys)
    finally:
        await q.obliterate(force=True)
        await q.close()
