"""Dead-letter queues: where jobs that failed for good go, and the way back (redrive).

A queue made with ``Queue(..., dead_letter="emails.dead")`` has each job that fails for
good moved, by the worker that failed it, into that other queue's ``failed`` set with its
whole record (attempts, error, traceback, log lines) and its origin. Two queues are two
hash tags (two Cluster slots), so the move is two steps, each atomic and safe to repeat:
the copy into the dead-letter queue (an id already there is left alone), then the removal
from the origin. A crash between them leaves the job in both places, never in neither.

``await dead.redrive()`` sends jobs back to their origin queues as new attempts, all of
them or those of one task or whose error contains a text, in chunks of 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import codec
from ..errors import wrap_redis_errors
from ..options import JobOptions
from ..scripts import SCRIPTS
from ..states import JobState

if TYPE_CHECKING:
    from .queue import Queue

#: fields of a job's record that belong to its last attempt, not to its history
_NOT_COPIED = frozenset({b"token", b"worker", b"state", b"cancelled_by"})
_NO_OPTIONS = codec.encode_options(JobOptions())
_CHUNK = 200  # jobs per script call: a record is at most ~220 fields (100 log lines)


def _keep_args(queue: Queue) -> tuple[int, int]:
    count, age = queue.retention.failed_count, queue.retention.failed_age_s
    return (-1 if count is None else count, -1 if age is None else int(age * 1000))


async def move_to_dead_letter(origin: Queue, dead: Queue, job_ids: Sequence[str]) -> int:
    """Move these jobs, failed for good in ``origin``, into ``dead``; returns how many
    arrived there (jobs no longer failed in ``origin`` are left alone)."""
    moved = 0
    add = SCRIPTS["add_dead_jobs"]
    keep_count, keep_age = _keep_args(dead)
    for start in range(0, len(job_ids), _CHUNK):
        chunk = list(job_ids[start:start + _CHUNK])
        with wrap_redis_errors(f"read failed jobs of queue {origin.name!r}"):
            pipe = origin.client.pipeline(transaction=False)  # one slot: one node
            for job_id in chunk:
                pipe.hgetall(origin.keys.job(job_id))
            records: list[dict[bytes, bytes]] = await pipe.execute()
        rows: list[list[Any]] = []
        for job_id, record in zip(chunk, records, strict=True):
            if record.get(b"state") != b"failed":
                continue  # retried, removed or trimmed meanwhile
            flat: list[bytes] = []
            for field, value in record.items():
                if field not in _NOT_COPIED:
                    flat += (field, value)
            rows.append([job_id, origin.name, flat])
        if not rows:
            continue
        with wrap_redis_errors(f"dead-letter jobs into queue {dead.name!r}"):
            await add(dead.client, add.keys_of(dead.keys),
                      [dead.keys.job_prefix, dead.events_maxlen, keep_count, keep_age,
                       codec.pack(rows)])
        # only once the copy is in the dead-letter queue: the origin lets go
        remove = SCRIPTS["remove_job"]
        with wrap_redis_errors(f"remove dead-lettered jobs from queue {origin.name!r}"):
            batch = origin.batch()
            for row in rows:
                batch.add(remove, remove.keys_of(origin.keys),
                          [origin.keys.job_prefix, origin.events_maxlen, "", row[0],
                           origin.keys.group_prefix])
            await batch.execute(origin.client)
        moved += len(rows)
    return moved


async def redrive(dead: Queue, *, task: str | None = None, error: str | None = None,
                  limit: int | None = None) -> int:
    """Send the jobs of the dead-letter queue ``dead`` back to their origin queues, as new
    waiting jobs with the same ids (fresh attempts), oldest first: all of them, or those of
    ``task``, or those whose error contains ``error``; at most ``limit``. Returns how many
    went back. A job whose id still exists in its origin (failed there) is retried there."""
    from .queue import Queue

    sent = 0
    offset = 0
    fields = ["origin", "task", "payload", "opts", "priority", "max_attempts", "error"]
    while limit is None or sent < limit:
        page = await dead.job_ids(JobState.FAILED, offset=offset, limit=500)
        if not page:
            break
        with wrap_redis_errors(f"read dead jobs of queue {dead.name!r}"):
            pipe = dead.client.pipeline(transaction=False)
            for job_id in page:
                pipe.hmget(dead.keys.job(job_id), fields)
            records: list[list[bytes | None]] = await pipe.execute()
        by_origin: dict[str, list[tuple[str, list[Any]]]] = {}
        skipped = taken = 0
        for job_id, (origin, task_name, payload, opts, priority, attempts, err) in zip(
                page, records, strict=True):
            text = (err or b"").decode("utf-8", "replace")
            name = (task_name or b"").decode("utf-8", "replace")
            wanted = (origin is not None and payload is not None
                      and (task is None or name == task)
                      and (error is None or error in text)
                      and (limit is None or sent + taken < limit))
            if not wanted or origin is None:
                skipped += 1
                continue
            taken += 1
            row = [job_id, name, payload, opts or _NO_OPTIONS, int(priority or 0),
                   int(attempts or 1), -1, -1]
            by_origin.setdefault(origin.decode(), []).append((job_id, row))
        for origin_name, items in by_origin.items():
            home = Queue(dead.client, name=origin_name)
            add = SCRIPTS["add_jobs"]
            with wrap_redis_errors(f"redrive jobs into queue {origin_name!r}"):
                statuses = await add(home.client, add.keys_of(home.keys),
                                     [home.keys.job_prefix, home.events_maxlen,
                                      codec.pack([row for _, row in items]),
                                      home.keys.dedup_prefix, home.keys.group_prefix])
            existing = [job_id for (job_id, _), status in zip(items, statuses, strict=True)
                        if status == 0]
            if existing:  # still failed in its origin (a move cut short): retry it there
                await home.retry_jobs(existing)
            remove = SCRIPTS["remove_job"]
            with wrap_redis_errors(f"remove redriven jobs from queue {dead.name!r}"):
                batch = dead.batch()
                for job_id, _ in items:
                    batch.add(remove, remove.keys_of(dead.keys),
                              [dead.keys.job_prefix, dead.events_maxlen, "", job_id,
                               dead.keys.group_prefix])
                await batch.execute(dead.client)
            sent += len(items)
        offset += skipped
        if len(page) < 500:
            break
    return sent
