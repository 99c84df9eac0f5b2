"""The job states: one table that counts, listings, metrics, the HTTP API, OpenAPI
and the dashboard derive from.

Each state is a string the Lua scripts write into the job hash's ``state`` field and
the name of the sorted set (an attribute of :class:`~aiojobs_redis.keys.QueueKeys`)
that indexes the jobs in that state. Adding a state: see "Adding a state or a
transition" in docs/keys.md.
"""

from __future__ import annotations

import enum
from typing import Final

from .keys import QueueKeys


class JobState(enum.StrEnum):
    """A job's state; the values are the strings the Lua scripts write."""

    WAITING = "waiting"
    DELAYED = "delayed"
    #: waiting for other jobs (a flow): it waits when the last of them has finished
    BLOCKED = "blocked"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: state -> the QueueKeys attribute of its sorted set, in display order
STATE_SETS: Final[dict[JobState, str]] = {
    JobState.WAITING: "wait",
    JobState.DELAYED: "delayed",
    JobState.BLOCKED: "blocked",
    JobState.ACTIVE: "active",
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}

#: states a job does not leave by itself
FINISHED: Final = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


def state_key(keys: QueueKeys, state: JobState) -> str:
    """The sorted set holding the jobs of ``state`` in a queue."""
    key: str = getattr(keys, STATE_SETS[state])
    return key


def state_keys(keys: QueueKeys) -> list[str]:
    """The sorted sets of every state, in the order of :data:`STATE_SETS`."""
    return [state_key(keys, state) for state in STATE_SETS]
