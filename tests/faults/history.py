"""One check for every fault scenario: each job the producer saw acknowledged ends
completed or failed-with-reason, and every duplicate run is explained."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiojobs_redis import JobState, Queue
from aiojobs_redis.connection import AnyRedis

from .app import runs_key


@dataclass
class History:
    acknowledged: set[str]
    completed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    runs: Counter[str] = field(default_factory=Counter)
    explained: set[str] = field(default_factory=set)  # stalled at least once

    @property
    def duplicates(self) -> set[str]:
        return {job_id for job_id, n in self.runs.items() if n > 1}

    def summary(self) -> str:
        return (f"{len(self.acknowledged)} acknowledged, {len(self.completed)} completed, "
                f"{len(self.failed)} failed, {len(self.lost)} lost, "
                f"{len(self.duplicates)} ran more than once")


async def check_history(queue: Queue, client: AnyRedis,
                        acknowledged: Iterable[str]) -> History:
    """Every acknowledged job is completed, or failed with a reason; a job ran more than
    once only if its record shows a stall recovery (it was active in a worker that died,
    was cut off, or lost its lease), which is what at-least-once delivery allows."""
    history = History(set(acknowledged))
    ids = sorted(history.acknowledged)
    infos = await queue._job_infos(ids)
    explained = set()
    for job_id, info in zip(ids, infos, strict=True):
        if info is not None and info.stalls > 0:
            explained.add(job_id)
        if info is None:
            history.lost.add(job_id)
        elif info.state is JobState.COMPLETED:
            history.completed.add(job_id)
        elif info.state is JobState.FAILED and info.error:
            history.failed[job_id] = info.error
        else:
            history.lost.add(job_id)
    raw: list[bytes] = await client.lrange(runs_key(queue.name), 0, -1)  # type: ignore[assignment]
    history.runs = Counter(r.decode() for r in raw)
    assert not history.lost, f"lost or unfinished jobs: {sorted(history.lost)[:10]}"
    history.explained = explained
    unexplained = history.duplicates - explained
    assert not unexplained, f"ran more than once without a reason: {sorted(unexplained)[:10]}"
    return history
