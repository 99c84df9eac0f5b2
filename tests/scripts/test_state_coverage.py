"""Scripts that act on jobs of any state name the sorted set of every state."""

from __future__ import annotations

import pytest

from aiojobs_redis.keys import QueueKeys
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
