"""Flows (issue 16): jobs that wait for other jobs, against a real Redis and real workers.
Each stuck-parent story of BullMQ, streaq and Celery has its test here."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aiojobs_redis import (
    ConfigurationError,
    Flow,
    JobState,
    Queue,
    Retention,
    Task,
    TaskCall,
    Worker,
    chain,
    chord,
    current_job,
    task,
)
from aiojobs_redis.ops import metrics

from .invariants import check_invariants

runs: list[str] = []


@task(name="flow.add")
async def add(a: int, b: int = 0) -> int:
    runs.append(f"add:{a}+{b}")
    return a + b


@task(name="flow.boom", attempts=1)
async def boom(why: str) -> None:
    runs.append("boom")
    raise ValueError(why)


@task(name="flow.total")
async def total(values: list[Any]) -> Any:
    runs.append("total")
    return sum(v for v in values if v is not None)


@task(name="flow.report")
async def report() -> list[Any]:
    runs.append("report")
    return [(d.id, d.state, d.result, d.error) for d in await current_job().dependencies()]


TASKS: list[Task[Any, Any]] = [add, boom, total, report]


@pytest.fixture(autouse=True)
def _fresh() -> None:
    runs.clear()


async def burst(queue: Queue, concurrency: int = 10) -> Worker:
    worker = Worker(queue, tasks=TASKS, concurrency=concurrency, handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 60)
    return worker


async def test_a_chain_passes_each_result_on(queue: Queue) -> None:
    jobs = await queue.enqueue_flow(chain(add.call(1, 2), add.fed(10), add.fed(100)))
    assert [(await j.info()).state for j in jobs] == [
        JobState.WAITING, JobState.BLOCKED, JobState.BLOCKED]
    await burst(queue)
    assert [await j.result(timeout=5) for j in jobs] == [3, 13, 113]
    assert runs == ["add:1+2", "add:3+10", "add:13+100"]
    deps = await jobs[2].dependencies()
    assert [(d.id, d.state, d.result) for d in deps] == [(jobs[1].id, "completed", 13)]
    await check_invariants(queue.client, queue.keys)


async def test_a_chord_gets_every_result_once_all_are_done(queue: Queue) -> None:
    jobs = await queue.enqueue_flow(chord([add.call(i) for i in range(20)], total.fed()))
    await burst(queue, concurrency=5)
    assert await jobs[-1].result(timeout=5) == sum(range(20))
    assert runs.count("total") == 1 and runs[-1] == "total"
    totals = await metrics.read_totals(queue.client, queue.keys)
    assert totals["released"] == 1


async def test_a_dag_with_a_shared_dependency(queue: Queue) -> None:
    flow = Flow()
    shared = flow.add(add.call(1))
    left = flow.add(add.call(2), after=[shared])
    right = flow.add(add.call(3), after=[shared])
    last = flow.add(report.call(), after=[left, right, shared])
    jobs = await queue.enqueue_flow(flow)
    await burst(queue)
    assert await jobs[3].result(timeout=5) == [
        [left.job_id, "completed", 2, None], [right.job_id, "completed", 3, None],
        [shared.job_id, "completed", 1, None]]
    assert runs.count("report") == 1 and runs.index("report") == 3
    assert last.job_id == jobs[3].id


async def test_a_failed_dependency_never_leaves_its_dependents_waiting(queue: Queue) -> None:
    """BullMQ's default leaves the parent waiting for ever; ours fails it (and its own
    dependents), or goes on, or cancels it, as each edge says."""
    flow = Flow()
    bad = flow.add(boom.call("upstream down"))
    failing = flow.add(add.call(1), after=[bad])  # default: fail
    after_failing = flow.add(add.call(2), after=[failing])
    going_on = flow.add(report.call(), after=[bad], on_failure="continue")
    ignoring = flow.add(total.fed(), after=[(bad, "ignore")], feed="all")
    dropped = flow.add(add.call(3), after=[bad], on_failure="cancel")
    jobs = {s.job_id: j for s, j in zip(flow.steps, await queue.enqueue_flow(flow),
                                        strict=True)}
    await burst(queue)
    info = await jobs[failing.job_id].info()
    assert info.state is JobState.FAILED
    assert info.error is not None and "upstream down" in info.error
    assert (await jobs[after_failing.job_id].info()).state is JobState.FAILED
    assert await jobs[going_on.job_id].result(timeout=5) == [
        [bad.job_id, "failed", None, "ValueError: upstream down"]]
    assert await jobs[ignoring.job_id].result(timeout=5) == 0
    assert (await jobs[dropped.job_id].info()).state is JobState.CANCELLED
    assert sorted(runs) == ["boom", "report", "total"]
    assert (await queue.counts())[JobState.BLOCKED] == 0
    await check_invariants(queue.client, queue.keys)


async def test_a_dependency_removed_by_retention_does_not_strand_its_dependent(
        queue: Queue) -> None:
    """The outcome is copied into the waiting job's record when the dependency finishes,
    so a dependency deleted at once (keep 0 completed jobs) still counts."""
    gone = Retention(completed_count=0)
    jobs = await queue.enqueue_flow(chain(add.options(retention=gone).call(4),
                                          add.fed(5)))
    await burst(queue)
    assert await queue.job_info(jobs[0].id) is None
    assert await jobs[1].result(timeout=5) == 9


async def test_a_flow_enqueued_again_with_completed_ids_adds_only_what_is_missing(
        queue: Queue) -> None:
    def build() -> Flow:
        flow = Flow()
        a = flow.add(add.options(job_id="first").call(1))
        flow.add(add.options(job_id="second").call(2), after=[a], feed="previous")
        return flow

    first = await queue.enqueue_flow(build())
    await burst(queue)
    assert await first[1].result(timeout=5) == 3
    again = await queue.enqueue_flow(build())
    assert [j.existed for j in again] == [True, True]
    # a new job waiting for a job completed long ago learns its result at once
    later = await queue.enqueue_flow(chain_after("first", add.call(100)))
    assert (await later[0].info()).state is JobState.WAITING
    await burst(queue)
    assert await later[0].result(timeout=5) == 101
    assert runs == ["add:1+0", "add:1+2", "add:1+100"]


def chain_after(job_id: str, call: Any) -> Flow:
    flow = Flow()
    flow.add(call, after=[job_id], feed="previous")
    return flow


async def test_cancel_remove_and_drain_release_what_waits(queue: Queue) -> None:
    flow = Flow()
    a = flow.add(add.options(delay_s=60).call(1))
    b = flow.add(add.options(delay_s=60).call(2))
    c = flow.add(add.call(3), after=[a])
    d = flow.add(report.call(), after=[b], on_failure="continue")
    jobs = await queue.enqueue_flow(flow)
    assert await jobs[0].cancel() is JobState.CANCELLED
    assert (await jobs[2].info()).state is JobState.FAILED  # its dependency never ran
    await queue.remove_job(b.job_id)
    assert (await jobs[3].info()).state is JobState.WAITING
    await burst(queue)
    assert await jobs[3].result(timeout=5) == [[b.job_id, "cancelled", None, "removed"]]
    assert c.job_id and d.job_id
    # drain: blocked jobs go too, and nothing is left waiting for a drained job
    more = await queue.enqueue_flow(chain(add.options(delay_s=60).call(1), add.fed(2)))
    assert await queue.drain() == 2
    assert await queue.job_info(more[1].id) is None
    assert (await queue.counts())[JobState.BLOCKED] == 0
    await check_invariants(queue.client, queue.keys)


async def test_bad_flows_are_refused_and_change_nothing(queue: Queue) -> None:
    flow = Flow()
    with pytest.raises(ConfigurationError):
        flow.add(add.call(1), after=["no-such-step-object", 3])
    with pytest.raises(ConfigurationError):
        flow.add(add.call(1), on_failure="explode")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        flow.add(add.options(group="g").call(1))
    with pytest.raises(ConfigurationError):
        flow.add(add.call(1), after=[], feed="previous")
    other = Flow()
    step = other.add(add.call(1))
    with pytest.raises(ConfigurationError):
        flow.add(add.call(2), after=[step])  # a step of another flow
    # a dependency that is not there: refused by the script, nothing written
    flow.add(add.call(1), after=["never-added"])
    from aiojobs_redis.errors import AiojobsRedisError

    with pytest.raises((AiojobsRedisError, Exception), match="never-added"):
        await queue.enqueue_flow(flow)
    assert sum((await queue.counts()).values()) == 0


async def test_cancelling_a_waiting_job_cancels_what_only_it_waited_for(queue: Queue) -> None:
    flow = Flow()
    only_mine = flow.add(add.options(delay_s=60).call(1))
    shared = flow.add(add.options(delay_s=60).call(2))
    deeper = flow.add(add.call(3), after=[only_mine])
    parent = flow.add(report.call(), after=[deeper, shared])
    other = flow.add(report.call(), after=[shared])
    jobs = {s.job_id: j for s, j in zip(flow.steps, await queue.enqueue_flow(flow),
                                        strict=True)}
    assert (await jobs[parent.job_id].info()).dependencies_pending == 2
    assert await jobs[parent.job_id].cancel() is JobState.CANCELLED
    states = {s.job_id: (await jobs[s.job_id].info()).state for s in flow.steps}
    assert states == {only_mine.job_id: JobState.CANCELLED, deeper.job_id: JobState.CANCELLED,
                      parent.job_id: JobState.CANCELLED, shared.job_id: JobState.DELAYED,
                      other.job_id: JobState.BLOCKED}
    await check_invariants(queue.client, queue.keys)


@task(name="flow.fan_out")
async def fan_out(n: int, bad: bool = False) -> Any:
    """Adds n children and waits for them; the next run sums their results."""
    ctx = current_job()
    done = await ctx.dependencies()
    if not done:
        runs.append("parent:first")
        calls: list[TaskCall[Any]] = [add.call(i, 1) for i in range(n)]
        if bad:
            calls.append(boom.call("child broke"))
        await ctx.wait_for(calls)
    runs.append("parent:again")
    return sum(d.result for d in done)


async def test_a_running_job_adds_children_and_waits_without_holding_a_slot(
        queue: Queue) -> None:
    """One slot only: if the parent held it while waiting, its children could never run."""
    parent = await queue.enqueue(fan_out, 5)
    worker = Worker(queue, tasks=[*TASKS, fan_out], concurrency=1, handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 30)
    assert await parent.result(timeout=5) == sum(i + 1 for i in range(5))
    assert runs[0] == "parent:first" and runs[-1] == "parent:again"
    assert runs.count("parent:again") == 1 and len(runs) == 7
    info = await parent.info()
    assert info.attempts == 1, "waiting gave its attempt back"
    assert (info.dependencies, info.dependencies_pending) == (5, 0)
    assert [c.id for c in await parent.dependencies()] == [f"{parent.id}.{i}" for i in range(5)]
    await check_invariants(queue.client, queue.keys)


async def test_a_child_that_fails_fails_the_waiting_parent(queue: Queue) -> None:
    parent = await queue.enqueue(fan_out, 3, bad=True)
    worker = Worker(queue, tasks=[*TASKS, fan_out], concurrency=4, handle_signals=False)
    await asyncio.wait_for(worker.run(burst=True), 30)
    info = await parent.info()
    assert info.state is JobState.FAILED
    assert info.error is not None and info.error.startswith("DependencyFailed")
    assert "child broke" in info.error
    assert runs.count("parent:again") == 0
    await check_invariants(queue.client, queue.keys)


async def test_a_flow_across_queues_of_one_tag(client: Any, queue_name: str) -> None:
    """Queues named '<tag>:<name>' share a hash tag (a Cluster slot): a flow may span them.
    Each step runs on its own queue's worker; releases cross queues in the same script."""
    fetch_q = Queue(client, name=f"{queue_name}:fetch")
    parse_q = Queue(client, name=f"{queue_name}:parse")
    try:
        flow = Flow()
        pages = [flow.add(add.call(i)) for i in range(3)]  # on fetch_q, the target
        summed = flow.add(total.fed(), after=pages, feed="all", queue=parse_q)
        flow.add(add.fed(1000), after=[summed], feed="previous")  # back on fetch_q
        jobs = await fetch_q.enqueue_flow(flow)
        assert [j.queue.name for j in jobs] == [fetch_q.name] * 3 + [parse_q.name, fetch_q.name]
        assert (await jobs[3].info()).state is JobState.BLOCKED
        workers = [Worker(q, tasks=TASKS, handle_signals=False) for q in (fetch_q, parse_q)]
        runners = [asyncio.create_task(w.run()) for w in workers]
        try:
            assert await jobs[-1].result(timeout=10) == 3 + 1000
        finally:
            for w in workers:
                w.stop()
            await asyncio.gather(*runners)
        assert await jobs[3].result(timeout=1) == 3
        await check_invariants(client, fetch_q.keys)
        await check_invariants(client, parse_q.keys)
        # queues of different tags cannot share a flow: refused before anything is written
        other = Queue(client, name=f"{queue_name}-other")
        bad = Flow()
        first = bad.add(add.call(1))
        bad.add(add.fed(2), after=[first], feed="previous", queue=other)
        with pytest.raises(ConfigurationError, match="hash tags"):
            await fetch_q.enqueue_flow(bad)
        assert await other.counts() == dict.fromkeys(await other.counts(), 0)
    finally:
        for q in (fetch_q, parse_q):
            await q.obliterate(force=True)
            await q.close()
