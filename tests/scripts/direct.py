"""Call the transition scripts directly, as a worker would, for the script tests."""

from __future__ import annotations

import secrets
from typing import Any

from aiojobs_redis import Queue, codec
from aiojobs_redis.scripts import SCRIPTS
from aiojobs_redis.worker.execution import FetchedJob


async def run(q: Queue, name: str, *args: Any) -> Any:
    script = SCRIPTS[name]
    return await script(q.client, script.keys_of(q.keys), [q.keys.job_prefix, *args])


async def fetch(q: Queue, count: int, lease_ms: int = 30_000) -> tuple[int, list[FetchedJob]]:
    reply = await run(q, "fetch_jobs", q.events_maxlen, count, lease_ms, "test-worker",
                      secrets.token_hex(4), 1000, q.keys.fetch_prefix)
    w = FetchedJob.WIDTH
    jobs = [FetchedJob(*reply[i:i + w]) for i in range(1, len(reply), w)]
    return int(reply[0]), jobs


async def complete(q: Queue, job: FetchedJob, result: bytes = b"\xc0", *, keep_count: int = -1,
                   keep_age_ms: int = -1, token: str | None = None) -> int:
    row = (job.id, token if token is not None else job.token, result)
    statuses = await run(q, "complete_jobs", q.events_maxlen, keep_count, keep_age_ms,
                         codec.pack([row]))
    return int(statuses[0])


async def fail(q: Queue, job: FetchedJob, delay_ms: int, *, keep_count: int = -1,
               keep_age_ms: int = -1, token: str | None = None) -> int:
    row = (job.id, token if token is not None else job.token, "ValueError: x", "tb", delay_ms)
    statuses = await run(q, "fail_jobs", q.events_maxlen, keep_count, keep_age_ms,
                         codec.pack([row]))
    return int(statuses[0])
