"""Flow edges at the script level: a chord whose children are re-delivered (a stall, a
re-run, an outcome sent twice) releases its callback exactly once (Celery's chord
counter over-counts then; ours records each edge once)."""

from __future__ import annotations

from aiojobs_redis import JobState, Queue, TaskCall, chord
from aiojobs_redis.ops import metrics
from aiojobs_redis.worker.maintenance import recover_stalled

from ..conftest import wait_until
from ..invariants import check_invariants
from . import direct


async def test_redelivered_children_release_the_callback_once(queue: Queue) -> None:
    children = [TaskCall.by_name("child", i) for i in range(3)]
    jobs = await queue.enqueue_flow(chord(children, TaskCall.by_name("callback"),
                                          feed=False))
    callback = jobs[-1]
    _, taken = await direct.fetch(queue, 3, lease_ms=50)
    assert len(taken) == 3
    # every lease runs out: the children are recovered and delivered again
    requeued = 0

    async def all_recovered() -> bool:
        nonlocal requeued
        requeued += (await recover_stalled(queue, max_stalls=5))[0]
        return requeued == 3

    await wait_until(all_recovered, timeout=10)
    _, again = await direct.fetch(queue, 3)
    assert {j.id for j in again} == {j.id for j in taken}
    tokens = {j.id: j.token for j in taken}
    for job in again:
        assert await direct.complete(queue, job) == 1
        # the first delivery's late outcome is refused (its lease was lost)
        assert await direct.complete(queue, job, token=tokens[job.id]) == -2
        # the same outcome sent again (a lost reply) is a duplicate, not a second edge
        assert await direct.complete(queue, job) == 0
    assert (await callback.info()).state is JobState.WAITING
    totals = await metrics.read_totals(queue.client, queue.keys)
    assert totals["released"] == 1
    assert [d.state for d in await callback.dependencies()] == ["completed"] * 3
    _, [cb] = await direct.fetch(queue, 10)
    assert cb.id == callback.id
    await check_invariants(queue.client, queue.keys)
