"""One check for every fault scenario: each job the producer saw acknowledged ends
completed or failed-with-reason, and every duplicate run is explained.

Runs are counted from the run log that tests/faults/app.py keeps: one entry per
attempt's lease token, so a log write that Redis replays after a lost reply is not a
second run; only a distinct token (a new attempt handed out by Redis) is."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiojobs_redis import JobState, Queue
from aiojobs_redis.connection import AnyRedis

from .app import job_of_run, runs_key


@dataclass
class History:
    acknowledged: set[str]
    completed: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    runs: Counter[str] = field(default_factory=Counter)  # distinct lease tokens per job
    explained: set[str] = field(default_factory=set)  # stalled at least once

    @property
    def duplicates(self) -> set[str]:
        return {job_id for job_id, n in self.runs.items() if n > 1}

    def summary(self) -> str:
        return (f"{len(self.acknowledged)} acknowledged, {len(self.completed)} completed, "
                f"{len(self.failed)} failed, {len(self.lost)} lost, "
                f"{len(self.duplicates)} ran more than once")


async def read_runs(client: AnyRedis, queue_name: str) -> Counter[str]:
    """How many distinct attempts (lease tokens) of each job reached its handler."""
    fields = await client.hkeys(runs_key(queue_name))
    return Counter(job_of_run(f) for f in fields)


async def count_runs(client: AnyRedis, queue_name: str) -> int:
    """Handler runs logged so far (all jobs)."""
    n: int = await client.hlen(runs_key(queue_name))
    return n


async def check_history(queue: Queue, client: AnyRedis,
                        acknowledged: Iterable[str]) -> History:
    """Every acknowledged job is completed, or failed with a reason; a completed job's
    handler ran; a job ran more than once only if its record shows a stall recovery (it
    was active in a worker that died, was cut off, or lost its lease), which is what
    at-least-once delivery allows."""
    history = History(set(acknowledged))
    ids = sorted(history.acknowledged)
    infos = await queue._job_infos(ids)
    explained = set()
    stalls: dict[str, int] = {}
    for job_id, info in zip(ids, infos, strict=True):
        if info is not None:
            stalls[job_id] = info.stalls
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
    history.runs = await read_runs(client, queue.name)
    assert not history.lost, f"lost or unfinished jobs: {sorted(history.lost)[:10]}"
    never_ran = sorted(history.completed - set(history.runs))
    assert not never_ran, f"completed without a run of their handler: {never_ran[:10]}"
    history.explained = explained
    unexplained = sorted(history.duplicates - explained)
    assert not unexplained, "ran more than once without a reason: " + ", ".join(
        f"{j} ({history.runs[j]} runs, stalls {stalls.get(j)})" for j in unexplained[:10])
    return history


async def check_released_once(queue: Queue, parents: Iterable[str]) -> Counter[str]:
    """Every job of a flow that waited for others was released exactly once: one
    'released' event each in the queue's stream (kept whole at these sizes)."""
    released: Counter[str] = Counter()
    last = "-"
    while True:
        entries: Any = await queue.client.xrange(queue.keys.events, min=last, count=10_000)
        if last != "-":
            entries = entries[1:]  # the entry the page started at
        if not entries:
            break
        for _entry_id, fields in entries:
            if fields.get(b"e") == b"released":
                released[fields[b"id"].decode()] += 1
        last = entries[-1][0].decode()
    wrong = {p: released[p] for p in parents if released[p] != 1}
    assert not wrong, f"released not exactly once: {dict(list(wrong.items())[:10])}"
    return released

