"""What a lane does with the outcomes its scripts recorded: log each by its status, and
move jobs failed for good to their dead-letter queue."""

from __future__ import annotations

import functools
import logging
from typing import Any

from redis.exceptions import RedisError

from ..errors import AiojobsRedisError
from ..producer.dead_letter import move_to_dead_letter
from ..producer.queue import Queue
from ..producer.task import TaskRegistry
from .execution import Outcome

log = logging.getLogger("aiojobs_redis.worker")


class DeadLetters:
    """Where a queue's jobs failed for good go, and the move there."""

    def __init__(self, queue: Queue, registry: TaskRegistry) -> None:
        self.queue = queue
        self.registry = registry
        self._queues: dict[str, Queue] = {}  # tasks' own dead-letter queues

    def target_of(self, task_name: str) -> str | None:
        """Where a job of this task goes once failed for good: its task's dead_letter,
        else the queue's (None: it stays failed here)."""
        if task_name in self.registry:
            own: str | None = self.registry.get(task_name).dead_letter
            if own is not None:
                return own
        return self.queue.dead_letter

    async def move(self, target: str, job_ids: list[str]) -> None:
        """Move jobs just failed for good to a dead-letter queue. A failure here leaves
        them failed in this queue (logged), never lost."""
        q = self.queue
        dead = q.dead_letter_queue() if target == q.dead_letter else None
        if dead is None:
            dead = self._queues.get(target)
            if dead is None:
                dead = self._queues[target] = Queue(q.client, name=target)
        try:
            moved = await move_to_dead_letter(q, dead, job_ids)
        except (AiojobsRedisError, RedisError, OSError) as e:
            log.error("queue %s: %d job(s) failed for good stay failed here; moving them to"
                      " dead-letter queue %s failed: %s", q.name, len(job_ids), dead.name, e)
            return
        if moved:
            log.warning("queue %s: %d job(s) failed for good moved to dead-letter queue %s",
                        q.name, moved, dead.name)


def log_outcome(queue: str, worker_id: str, o: Outcome, status: int,
                log_tracebacks: bool) -> bool:
    """Log one outcome by the status its script gave; False when it was dropped (the
    caller logs those once per round trip)."""
    job = o.job
    fields = functools.partial(_fields, queue, worker_id, o)
    if status == 1 and o.ok:
        if log.isEnabledFor(logging.INFO):
            log.info("← %s %s:%s completed in %.1f ms", queue, job.task, job.id,
                     o.run_ms, extra=fields("completed"))
    elif status == 1:
        tb = f"\n{o.traceback.rstrip()}" if o.traceback and log_tracebacks else ""
        log.warning("✗ %s %s:%s failed for good after attempt %d (%.1f ms): %s%s",
                    queue, job.task, job.id, job.attempt, o.run_ms, o.error, tb,
                    extra=fields("failed"))
    elif status == 2:
        if log.isEnabledFor(logging.INFO):
            log.info("↻ %s %s:%s attempt %d failed (%.1f ms), retrying in %d ms: %s",
                     queue, job.task, job.id, job.attempt, o.run_ms,
                     o.retry_delay_ms, o.error, extra=fields("retrying"))
    elif status == 4:
        if log.isEnabledFor(logging.INFO):
            log.info("⧗ %s %s:%s waits for %d job(s) (attempt %d, %.1f ms)",
                     queue, job.task, job.id, len(o.children), job.attempt,
                     o.run_ms, extra=fields("waiting"))
    elif status == 3:
        if log.isEnabledFor(logging.INFO):
            log.info("⊘ %s %s:%s cancelled (attempt %d, %.1f ms)", queue,
                     job.task, job.id, job.attempt, o.run_ms, extra=fields("cancelled"))
    elif status == 0:
        log.debug("%s %s:%s: outcome already recorded (a call sent again after a lost"
                  " reply)", queue, job.task, job.id)
    elif status in (-1, -2):
        return False
    return True


def _fields(queue: str, worker_id: str, o: Outcome, outcome: str) -> dict[str, Any]:
    """The structured fields of an outcome's log record (a JSON formatter shows them)."""
    job = o.job
    return {"job_id": job.id, "task": job.task, "queue": queue,
            "attempt": job.attempt, "duration_ms": round(o.run_ms, 3),
            "worker_id": worker_id, "outcome": outcome}
