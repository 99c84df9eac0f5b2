"""aiojobs_redis: an asyncio distributed task framework on Redis.

Every job state transition is one atomic Lua script; leases are fenced by
tokens; finished jobs, events and metrics are bounded by default.
"""

import logging

from .backoff import BackoffFunction, retry_delay_s
from .control import Retry, Unrecoverable
from .errors import (
    AiojobsRedisError,
    ConfigurationError,
    EncodeError,
    EnqueueError,
    InvalidJobId,
    InvalidQueueName,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    JobStateError,
    LeaseLost,
    NotReplicated,
    RedisError,
    RedisOutOfMemory,
    RedisUnavailable,
    ResultTimeout,
    ScheduleNotFound,
    TaskNotFound,
)
from .keys import queue_slot, spread_queue_names
from .ops.alerts import (
    Alert,
    AlertMonitor,
    BacklogRule,
    FailedJobsRule,
    NoWorkerRule,
    OldestJobRule,
    Webhook,
)
from .ops.registry import WorkerInfo, live_workers
from .options import Backoff, ExponentialBackoff, FixedBackoff, JobOptions, Retention
from .producer.events import Event
from .producer.flows import Flow, Step, chain, chord, group
from .producer.headers import add_header_source, remove_header_source
from .producer.job import Job, JobInfo, JobLogLine
from .producer.limits import GroupLimits, QueueLimits
from .producer.queue import Queue
from .producer.task import Task, TaskCall, task
from .schedules.spec import CatchUp, Schedule
from .schedules.store import ScheduleInfo, Schedules, Upserted
from .schedules.ticks import next_fire, prev_fire
from .states import JobState
from .worker.context import JobContext, WorkerContext, current_job
from .worker.execution import Middleware
from .worker.tracing import TracingMiddleware, instrument_tracing, uninstrument_tracing
from .worker.worker import Worker, WorkerState

__version__ = "0.1.0"

__all__ = (
    "AiojobsRedisError",
    "Alert",
    "AlertMonitor",
    "BacklogRule",
    "Backoff",
    "BackoffFunction",
    "CatchUp",
    "ConfigurationError",
    "EncodeError",
    "EnqueueError",
    "Event",
    "ExponentialBackoff",
    "FailedJobsRule",
    "FixedBackoff",
    "Flow",
    "GroupLimits",
    "InvalidJobId",
    "InvalidQueueName",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobInfo",
    "JobLogLine",
    "JobNotFound",
    "JobOptions",
    "JobState",
    "JobStateError",
    "LeaseLost",
    "Middleware",
    "NoWorkerRule",
    "NotReplicated",
    "OldestJobRule",
    "Queue",
    "QueueLimits",
    "RedisError",
    "RedisOutOfMemory",
    "RedisUnavailable",
    "ResultTimeout",
    "Retention",
    "Retry",
    "Schedule",
    "ScheduleInfo",
    "ScheduleNotFound",
    "Schedules",
    "Step",
    "Task",
    "TaskCall",
    "TaskNotFound",
    "TracingMiddleware",
    "Unrecoverable",
    "Upserted",
    "Webhook",
    "Worker",
    "WorkerContext",
    "WorkerInfo",
    "WorkerState",
    "__version__",
    "add_header_source",
    "chain",
    "chord",
    "current_job",
    "group",
    "instrument_tracing",
    "live_workers",
    "next_fire",
    "prev_fire",
    "queue_slot",
    "remove_header_source",
    "retry_delay_s",
    "spread_queue_names",
    "task",
    "uninstrument_tracing",
)

logging.getLogger(__name__).addHandler(logging.NullHandler())
