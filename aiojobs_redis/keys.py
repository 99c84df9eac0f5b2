"""The only place where Redis key names are built.

Every key of a queue starts with ``ajr:{<queue>}:`` (``ajr:{<tag>}/<name>:`` for a
queue named ``<tag>:<name>``) so that all of them hash to one Redis Cluster slot and every
script of a queue touches a single slot.
The table in ``docs/keys.md`` is checked against :data:`KEY_TABLE` by a test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from .errors import InvalidQueueName

PREFIX: Final = "ajr"
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")

#: name -> (Redis type, who writes it, what bounds its size)
KEY_TABLE: Final[dict[str, tuple[str, str, str]]] = {
    "job:<id>": ("HASH", "all job scripts",
                 "one per job; finished ones trimmed by retention count and age"),
    "wait": ("ZSET", "add_jobs, fetch_jobs, retry_jobs, promote_job, recover_stalled, return_jobs",
             "jobs waiting to run (the backlog)"),
    "delayed": ("ZSET", "add_jobs, fail_jobs, fetch_jobs, promote_job",
                "jobs scheduled for later or waiting for a retry"),
    "blocked": ("ZSET", "add_flow, and the scripts that finish a job (they release its"
                " dependents)", "jobs waiting for other jobs (flows)"),
    "dependents:<id>": ("HASH", "add_flow", "one per unfinished job that others wait for:"
                        " dependent id -> failure policy; deleted when the job finishes"),
    "early:<id>": ("HASH", "the scripts that finish a job",
                   "outcomes of jobs that finished before the job waiting for them was"
                   " added (a flow enqueued in chunks): consumed by add_flow, expires"
                   " after a day"),
    "active": ("ZSET", "fetch_jobs, complete_jobs, fail_jobs, extend_leases, recover_stalled",
               "at most the sum of the workers' concurrency"),
    "completed": ("ZSET", "complete_jobs", "retention count and age"),
    "failed": ("ZSET", "fail_jobs, recover_stalled, fetch_jobs (expired), add_dead_jobs (in a"
               " dead-letter queue)", "retention count and age"),
    "cancelled": ("ZSET", "cancel_job, fail_jobs, recover_stalled, return_jobs",
                  "retention count and age (the failed-job limits)"),
    "events": ("STREAM", "all job scripts", "approximate MAXLEN (default 10,000)"),
    "marker": ("ZSET", "add_jobs, fetch_jobs, resume", "one member: wakes one idle worker"),
    "seq": ("STRING", "add_jobs and every script that makes a job wait", "one integer"),
    "meta": ("HASH", "pause, resume, set_limits, fetch_jobs (v: fair groups), recover_stalled"
             " (the serving clock: seen, serving_since)", "a few fields"),
    "groups": ("ZSET", "add_jobs, fetch_jobs",
               "one member per group with jobs placed ahead of the last job taken (fair"
               " groups); the others are dropped by fetch_jobs"),
    "rate": ("ZSET", "fetch_jobs (with a rate limit: Queue.set_limits)",
             "the starts of the last period: at most the limit's max_starts"),
    "parked": ("ZSET", "fetch_jobs (group limits), drain_queue",
               "one member per group with jobs parked by a group limit"),
    "group-limits": ("HASH", "Queue.set_group_limits",
                     "one field per group given limits of its own"),
    "group-keys": ("ZSET", "fetch_jobs (group limits)",
                   "one member per group that started a job under a group limit within"
                   " a day (pruned by fetch_jobs)"),
    "group:<name>:parked": ("ZSET", "fetch_jobs, add_jobs, cancel_job, change_job, remove_job",
                            "one per group with jobs parked by its limit: those jobs"),
    "group:<name>:active": ("ZSET", "fetch_jobs (group max_active)",
                            "one per limited group: its running jobs (finished ones dropped"
                            " when read); expires a day after its last start"),
    "group:<name>:rate": ("ZSET", "fetch_jobs (group rate limit)",
                          "one per limited group: its starts of the last period; expires"
                          " with the period"),
    "workers": ("ZSET", "worker heartbeats (worker id -> when its record expires)",
                "live workers; dead ones pruned by live workers one lease after expiry"),
    "wake:<worker id>": ("ZSET", "an idle worker's own timer (a delayed job due, a limit"
                         " reopening)", "one member while a timed wake-up is on its way;"
                         " popped at once, expires after 5 s"),
    "worker:<id>": ("STRING", "worker heartbeats", "one per live worker, expires after the lease"),
    "schedules": ("ZSET", "upsert_schedule, fire_schedule, remove_schedule, list_due_schedules",
                  "one member per schedule: name -> due time of its next tick (+inf: ended)"),
    "sched:<name>": ("HASH", "upsert_schedule, fire_schedule, remove_schedule",
                     "one per schedule: definition and tick state, a few fields"),
    "alive": ("STRING", "workers (sentinel set at start)",
              "one token; its absence means the queue's keys were wiped"),
    "metrics": ("HASH", "record_metrics (workers, batched with outcomes; stalled recovery)",
                "a ring of 1440 one-minute slots (24 h): at most 1440 fields of ~44 integers"),
    "metrics:total": ("HASH", "record_metrics; the job-control scripts (cancelled,"
                      " deduplicated, dead_lettered, limited, parked, released)",
                      "cumulative counters: at most 50 fields"),
    "metrics:batch:<id>": ("STRING", "record_metrics",
                           "one per metrics batch of the last 5 s (a replayed call is"
                           " not counted twice); expires after 5 s"),
    "op:<random>": ("STRING", "retry_jobs, promote_job, remove_job",
                    "the reply of one call, so that the call sent again answers it;"
                    " expires after 60 s"),
    "call:<producer>:<n>": ("STRING", "add_jobs",
                            "the reply to a producer's n-th call of its last round trip (a"
                            " call sent again answers it); one per producer and call of a"
                            " round trip, expires after 60 s"),
    "dedup:<key>": ("STRING", "add_jobs",
                    "one per open dedup window (JobOptions.dedup_key): the job id; expires"
                    " with the window (dedup_ttl_s)"),
    "fetch:<nonce>": ("STRING", "fetch_jobs",
                      "the ids one fetch handed out (a replayed fetch hands out the same);"
                      " one per fetch of the last min(lease, 10 s)"),
}


def keys_markdown() -> str:
    """The key table of docs/keys.md (a test keeps the page in step with this)."""
    lines = ["| key (after `ajr:{<queue>}:`, or `ajr:{<tag>}/<name>:` for a queue named"
             " `<tag>:<name>`) | type | written by | bounded by |",
             "|---|---|---|---|"]
    for name, (kind, writer, bound) in KEY_TABLE.items():
        lines.append(f"| `{name}` | {kind} | {writer} | {bound} |")
    return "\n".join(lines) + "\n"


def validate_queue_name(name: str) -> str:
    """Return ``name`` if it can be used as a queue name, else raise.

    A name is 1-100 characters of letters, digits, '_', '.', '-', starting with a letter or
    digit; or ``<tag>:<name>``, two such parts: queues of one tag share a Redis Cluster
    hash slot (the tag), so a flow may span them."""
    parts = name.split(":") if isinstance(name, str) else [name]
    if not 1 <= len(parts) <= 2 or not all(isinstance(p, str) and _QUEUE_NAME.match(p)
                                           for p in parts):
        raise InvalidQueueName(
            f"invalid queue name {name!r}: 1-100 characters of letters, digits, '_', '.', '-',"
            " starting with a letter or digit; or '<tag>:<name>', two such parts"
        )
    return name


def queue_tag(name: str) -> str:
    """The hash tag of queue ``name``: its tag when it has one, else the name itself."""
    return validate_queue_name(name).split(":", 1)[0]


def queue_slot(name: str) -> int:
    """The Redis Cluster hash slot that holds every key of queue ``name``."""
    return int(key_slot(queue_tag(name).encode()))


def spread_queue_names(prefix: str, count: int) -> list[str]:
    """``count`` queue names ``<prefix>-<i>`` (plus a short suffix where needed) whose
    slots are spread evenly over the 16384 slots of a Redis Cluster, so that queues
    meant to share the load land on different shards: name ``i`` falls in the i-th of
    ``count`` equal slot ranges. Deterministic: every process computes the same names."""
    if not 1 <= count <= 1024:
        raise InvalidQueueName("spread_queue_names: count must be 1..1024")
    width = REDIS_CLUSTER_HASH_SLOTS / count
    names = []
    for i in range(count):
        low, high = int(i * width), int((i + 1) * width)
        for attempt in range(100_000):
            name = f"{prefix}-{i}" if attempt == 0 else f"{prefix}-{i}.{attempt}"
            if low <= queue_slot(name) < high:
                names.append(name)
                break
        else:  # pragma: no cover - 100,000 tries always hit a range of 16 slots or more
            raise InvalidQueueName(f"no name for slot range {low}..{high}")
    return names


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Key names of one queue. Build with :meth:`for_queue`."""

    queue: str
    base: str
    job_prefix: str
    wait: str
    delayed: str
    active: str
    completed: str
    failed: str
    cancelled: str
    cancel_channel: str
    events: str
    marker: str
    seq: str
    meta: str
    workers: str
    worker_prefix: str
    schedules: str
    sched_prefix: str
    alive: str
    metrics: str
    metrics_total: str
    fetch_prefix: str
    op_prefix: str
    call_prefix: str
    dedup_prefix: str
    rate: str
    groups: str
    blocked: str
    dependents_prefix: str
    early_prefix: str
    parked: str
    group_limits: str
    group_keys: str
    group_prefix: str

    @classmethod
    def for_queue(cls, queue: str) -> QueueKeys:
        tag = queue_tag(queue)
        # a tagged queue's keys: ajr:{<tag>}/<name>:..., apart from the untagged queue named
        # like the tag (ajr:{<tag>}:...) and from its other queues (the ':' after the name)
        base = (f"{PREFIX}:{{{tag}}}:" if tag == queue
                else f"{PREFIX}:{{{tag}}}/{queue.split(':', 1)[1]}:")
        return cls(
            queue=queue,
            base=base,
            job_prefix=base + "job:",
            wait=base + "wait",
            delayed=base + "delayed",
            active=base + "active",
            completed=base + "completed",
            failed=base + "failed",
            cancelled=base + "cancelled",
            cancel_channel=base + "cancel",
            events=base + "events",
            marker=base + "marker",
            seq=base + "seq",
            meta=base + "meta",
            workers=base + "workers",
            worker_prefix=base + "worker:",
            schedules=base + "schedules",
            sched_prefix=base + "sched:",
            alive=base + "alive",
            metrics=base + "metrics",
            metrics_total=base + "metrics:total",
            fetch_prefix=base + "fetch:",
            op_prefix=base + "op:",
            call_prefix=base + "call:",
            dedup_prefix=base + "dedup:",
            rate=base + "rate",
            groups=base + "groups",
            blocked=base + "blocked",
            dependents_prefix=base + "dependents:",
            early_prefix=base + "early:",
            parked=base + "parked",
            group_limits=base + "group-limits",
            group_keys=base + "group-keys",
            group_prefix=base + "group:",
        )

    def job(self, job_id: str) -> str:
        return self.job_prefix + job_id

    def worker(self, worker_id: str) -> str:
        return self.worker_prefix + worker_id
