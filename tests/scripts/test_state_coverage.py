"""Scripts that act on jobs of any state name the sorted set of every state."""

from __future__ import annotations

import pytest

from aiojobs_redis.keys import KEY_TABLE, QueueKeys
from aiojobs_redis.scripts import SCRIPTS, SEES_EVERY_STATE
from aiojobs_redis.states import STATE_SETS, state_keys


@pytest.mark.parametrize("name", sorted(SEES_EVERY_STATE))
def test_script_names_every_state_set(name: str) -> None:
    expected = set(STATE_SETS.values()) - SEES_EVERY_STATE[name]
    missing = expected - set(SCRIPTS[name].spec.keys)
    assert not missing, f"{name}.lua does not see the state set(s) {sorted(missing)}"


def test_every_state_set_is_a_queue_key() -> None:
    keys = QueueKeys.for_queue("q")
    assert all(key.startswith("ajr:{q}:") for key in state_keys(keys))
    assert len(set(state_keys(keys))) == len(STATE_SETS)


#: sorted sets of a queue that are not the set of a job state, and why
NOT_STATE_SETS = {
    "marker": "one member that wakes an idle worker",
    "groups": "group -> the last place given to one of its jobs",
    "rate": "the starts of the rate window",
    "parked": "group -> when to look at its parked jobs again (the jobs count as waiting)",
    "group-keys": "groups with keys of their own, for obliterate",
    "group:<name>:parked": "a group's parked jobs: waiting, held back by its limits",
    "group:<name>:active": "a group's running jobs (also in active)",
    "group:<name>:rate": "a group's rate window",
    "workers": "live workers",
    "wake:<worker id>": "a worker's timed wake-up",
    "schedules": "schedule -> its next due time",
}


def test_every_sorted_set_of_a_queue_is_a_state_or_said_not_to_be() -> None:
    """A new sorted set of job ids must join the state table (and so every script that
    must see all states), or be named here with the reason it is not a state."""
    zsets = {name for name, (kind, _, _) in KEY_TABLE.items() if kind == "ZSET"}
    unplaced = zsets - set(STATE_SETS.values()) - set(NOT_STATE_SETS)
    assert not unplaced, f"place these sorted sets: {sorted(unplaced)}"
    assert not set(NOT_STATE_SETS) - zsets, "a named set that is gone"
