"""The detail of one job as GET .../jobs/{id} answers it, beyond its record's JSON shape
(``views.info_json``): who cancelled it and its log (:func:`job_json`), its place in a
flow (:func:`flow_json`) and, in a dead-letter queue, the queue it came from
(:func:`job_origin`); the last two read Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import wrap_redis_errors
from ...producer.job import JobInfo, JobLogLine
from ...producer.queue import Queue
from .views import cut_text, dt_iso, info_json


def job_json(info: JobInfo, logs: Sequence[JobLogLine] = ()) -> dict[str, Any]:
    """One job as GET .../jobs/{id} answers it: the record, who cancelled it, and its log
    (oldest line first; each line's text is capped when written)."""
    body = info_json(info)
    body["cancelled_by"] = info.cancelled_by
    body["cancel_requested"] = info.cancel_requested
    body["logs"] = [{"at": dt_iso(line.at), "attempt": line.attempt, "text": line.text}
                    for line in logs]
    return body


FLOW_SHOWN = 50  # jobs listed each way in a job's flow section


async def flow_json(q: Queue, info: JobInfo) -> dict[str, Any] | None:
    """A job's place in its flow: the jobs it waits for (the first 50, with how each
    ended) and the jobs waiting for it (while it has not finished); None outside a flow."""
    waited_by = await q.job_dependents(info.id, limit=FLOW_SHOWN)
    if info.dependencies is None and not waited_by:
        return None
    waits_for = await q.job_dependencies(info.id) if info.dependencies else []
    return {
        "dependencies": info.dependencies or 0,
        "pending": info.dependencies_pending or 0,
        "waits_for": [{"id": d.id, "state": d.state, "error": cut_text(d.error, 300)}
                      for d in waits_for[:FLOW_SHOWN]],
        "waited_for_by": waited_by,
    }


async def job_origin(q: Queue, job_id: str) -> str | None:
    """The queue a job of a dead-letter queue came from (its record's ``origin``), or
    None for a job that was never dead-lettered."""
    with wrap_redis_errors(f"read the origin of job {job_id!r} of {q.name!r}"):
        raw = await q.client.hget(q.keys.job(job_id), "origin")
    if raw is None or isinstance(raw, str):  # a client that decodes replies gives str
        return raw
    return raw.decode("utf-8", "replace")


