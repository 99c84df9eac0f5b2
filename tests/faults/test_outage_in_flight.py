"""Redis goes away for longer than the lease while jobs are in flight (defect 14): the
jobs that finish during the outage hold completions that can only be sent once Redis is
back, and their leases, renewed by nobody since the handlers ended, have run out by
then. The periodic stalled-job check of either worker must not put those jobs back to
waiting before their completions land: no finished job may run again when its worker
was alive throughout."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from aiojobs_redis import JobState, Queue, live_workers
from aiojobs_redis._redis_server import RedisServer
from aiojobs_redis.connection import OUTAGE_BUDGET_S

from ..conftest import wait_until
from ..invariants import check_invariants
from .app import work
from .history import check_history, count_runs
from .procs import FACT_S, SCENARIO_TIMEOUT_S, alive, kill, start_worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(SCENARIO_TIMEOUT_S)]

JOBS = 300
LEASE_MS = 2000
CONCURRENCY = 20  # per worker: 40 jobs in flight at once
#: how long recover_stalled.lua's serving clock must have run before it recovers anything:
#: half a lease (the workers' gap_ms at this lease)
ARMED_MS = LEASE_MS // 2


@pytest.mark.parametrize("outage_s", [
    # within the client's retry budget: every call waits inside redis-py's own retries
    # (jittered, up to 1 s apart) and goes through once Redis is back
    pytest.param(3.0, id="3s-within-client-retries"),
    # beyond it: the lanes' round trips fail and wait in the worker's reconnect backoff,
    # where the completions waited in defect 14
    pytest.param(OUTAGE_BUDGET_S + 2.0, id="7s-past-client-retries"),
])
async def test_outage_longer_than_the_lease_runs_no_finished_job_twice(
        tmp_path: Path, outage_s: float) -> None:
    """Invariant: after an outage longer than the lease, with both worker processes alive
    throughout, every acknowledged job is completed, none is recovered as stalled, and
    none runs twice.

    The outage is a SIGKILL of redis-server and a restart on the same port and AOF
    (appendfsync always: nothing acknowledged is lost), as in a crash or a restart. That
    is the closest to a real outage for the clients: their connections break, calls fail
    with connection refused, and every client goes through its reconnect backoff, which is
    where the pending completions waited in defect 14. A SIGSTOP/SIGCONT keeps the
    connections open and the calls queued in the socket buffers: no call fails, nothing
    backs off, and that case (Redis paused) is what tests/test_redis_pause.py covers."""
    server = RedisServer(appendonly=True, appendfsync="always").start(timeout_s=FACT_S)
    log = tmp_path / "workers.log"
    workers = []
    try:
        async with Queue.from_url(server.url, name="inflight") as queue:
            # 0.5 s to 1.0 s each: every job in flight at the outage finishes during it
            jobs = await queue.enqueue_many(
                [work.call(0.5 + 0.1 * (i % 6)) for i in range(JOBS)])
            acknowledged = [j.id for j in jobs]
            workers = [start_worker(server.url, "inflight", log=log, lease_ms=LEASE_MS,
                                    concurrency=CONCURRENCY) for _ in range(2)]
            # the outage must find both workers running jobs, and their stalled-job check
            # armed: it would recover a stalled job now
            await wait_until(lambda: alive(*workers, log=log) and _at_work(queue),
                             timeout=FACT_S)
            in_flight = (await queue.counts())[JobState.ACTIVE]
            ran_before = await count_runs(queue.client, queue.name)
            loop = asyncio.get_running_loop()
            down_at = loop.time()
            server.kill()
            await asyncio.sleep(outage_s)  # the length of the outage, not a wait for a fact
            assert alive(*workers, log=log)
            server.start(timeout_s=FACT_S)  # returns once Redis answers PING
            away_s = loop.time() - down_at
            # jobs still active at the restart: their completions are pending (their
            # handlers, 1 s at most, ended during the outage)
            pending = (await queue.counts())[JobState.ACTIVE]
            await wait_until(lambda: alive(*workers, log=log) and _all_done(queue),
                             timeout=FACT_S)
            history = await check_history(queue, queue.client, acknowledged)
            assert alive(*workers, log=log), "both workers were alive throughout"
            for w in workers:
                kill(w, signal.SIGTERM)
            await check_invariants(queue.client, queue.keys)
    finally:
        for w in workers:
            kill(w, signal.SIGTERM)
        server.cleanup()
    text = log.read_text(errors="replace")
    backed_off = "retrying with backoff" in text
    ran_twice = sorted(history.duplicates)
    stalled = sorted(history.explained)
    print(f"\noutage of {away_s:.1f} s (lease {LEASE_MS / 1000:.1f} s) with jobs in flight: "
          f"{JOBS} jobs, {in_flight} in flight at the outage ({ran_before} handler runs "
          f"before it), {pending} completion(s) pending at the restart, lanes "
          f"{'did' if backed_off else 'did not'} back off, {len(ran_twice)} ran twice, "
          f"{len(stalled)} stall recoveries; {history.summary()}")
    evidence = "\n".join(line for line in text.splitlines()
                         if "stalled job" in line or "is dropped" in line
                         or "lease lost" in line or "served no call" in line
                         or "is back" in line)
    assert in_flight >= CONCURRENCY, "the outage came while jobs were in flight"
    if outage_s > OUTAGE_BUDGET_S:
        assert backed_off, ("the outage outlasted the client's retries: the lanes' round "
                            "trips failed and waited in the worker's reconnect backoff")
    assert len(history.completed) == JOBS, history.summary()
    assert not ran_twice, (f"{len(ran_twice)} job(s) ran twice although their worker was "
                           f"alive throughout: {ran_twice[:10]}\n{evidence}")
    assert not stalled, (f"{len(stalled)} job(s) of live workers recovered as stalled: "
                         f"{stalled[:10]}\n{evidence}")


async def _at_work(queue: Queue) -> bool:
    """Both workers serve the queue, most of their slots are busy, two rounds of jobs
    have completed (a second at least: the workers' first stalled-job checks have run),
    and the stalled-job check is armed: the serving clock of recover_stalled.lua (meta
    fields seen, serving_since) has run half a lease. An engine without that clock is
    always armed."""
    counts = await queue.counts()
    seen, since = await queue.client.hmget(queue.keys.meta, ["seen", "serving_since"])
    armed = seen is None or since is None or int(seen) - int(since) >= ARMED_MS
    return (len(await live_workers(queue.client, queue.keys)) == 2
            and counts[JobState.ACTIVE] >= 3 * CONCURRENCY // 2
            and counts[JobState.COMPLETED] >= 4 * CONCURRENCY and armed)


async def _all_done(queue: Queue) -> bool:
    counts = await queue.counts()
    return counts[JobState.COMPLETED] + counts[JobState.FAILED] >= JOBS and (
        counts[JobState.WAITING] + counts[JobState.ACTIVE] + counts[JobState.DELAYED] == 0)
