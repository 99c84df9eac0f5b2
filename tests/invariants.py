"""The state invariants of a queue, checked from outside: every job hash is indexed by
exactly the sorted set of the state it records, and no set holds an id without a hash.

Built for big queues (100,000 jobs in a few seconds): one SCAN over the job hashes and,
per state set, one ``SORT <set> BY nosort GET # GET <job_prefix>*->state`` that reads
every member with its job's ``state`` field in one command (a pipeline of 100,000 HGETs
spends many seconds in the client). A cluster refuses SORT's GET patterns: there, and for
hashes in no set, the ``state`` fields are read with pipelined HGETs. Ids stay bytes and
the comparisons are set operations, so the Python side stays small too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import combinations

from redis.asyncio.cluster import RedisCluster

from aiojobs_redis.connection import AnyRedis
from aiojobs_redis.keys import QueueKeys
from aiojobs_redis.states import STATE_SETS, state_key

_PIPELINE = 5000  # commands per pipeline
_SCAN_COUNT = 10_000
_PAGE = 50_000  # members per ZRANGE
_SHOWN = 10  # problems named in the message at most


async def _hget_states(client: AnyRedis, keys: list[bytes]) -> list[bytes | None]:
    """The ``state`` field of each hash, in order (None: no hash or no field)."""
    out: list[bytes | None] = []
    for start in range(0, len(keys), _PIPELINE):
        pipe = client.pipeline(transaction=False)
        for key in keys[start:start + _PIPELINE]:
            pipe.hget(key, "state")
        out += await pipe.execute()
    return out


async def _members_with_states(client: AnyRedis, set_key: str,
                               prefix: bytes) -> tuple[list[bytes], list[bytes | None]]:
    """Every member of a state set, and its job hash's ``state`` (None: none), in order."""
    if not isinstance(client, RedisCluster):
        flat: list[bytes | None] = await client.sort(  # type: ignore[assignment]
            set_key, by="nosort", get=["#", prefix.decode() + "*->state"])
        return flat[0::2], flat[1::2]  # type: ignore[return-value]
    members: list[bytes] = []
    start = 0
    while True:
        got: list[bytes] = await client.zrange(  # type: ignore[assignment]
            set_key, start, start + _PAGE - 1)
        members += got
        if len(got) < _PAGE:
            break
        start += _PAGE
    return members, await _hget_states(client, [prefix + m for m in members])


async def _zset_members(client: AnyRedis, key: str) -> AsyncIterator[bytes]:
    async for member, _ in client.zscan_iter(key, count=_SCAN_COUNT):
        yield member


async def check_invariants(client: AnyRedis, keys: QueueKeys) -> None:
    """Raise AssertionError naming the first problems if any of these does not hold:

    * every job hash ``<job_prefix><id>`` has a ``state`` field naming a known state;
    * its id is in exactly one of the state sets (wait, delayed, active, completed,
      failed), and that set is the one of its ``state`` (aiojobs_redis/states.py);
    * every id in a state set has a job hash.

    Call it while nothing changes the queue: the reads are not one atomic snapshot.
    """
    prefix = keys.job_prefix.encode()
    known = {state.value.encode() for state in STATE_SETS}
    hashes = {k[len(prefix):] async for k in client.scan_iter(match=prefix + b"*",
                                                             count=_SCAN_COUNT)}
    problems: list[str] = []
    counts = {"bad state": 0, "in the wrong set": 0, "in several sets": 0, "in no set": 0,
              "no hash": 0}

    def problem(kind: str, job_id: bytes, text: str) -> None:
        counts[kind] += 1
        if len(problems) < _SHOWN:
            problems.append(f"job {job_id.decode(errors='replace')!r}: {text}")

    in_set: dict[str, set[bytes]] = {}
    for state in STATE_SETS:
        set_key = state_key(keys, state)
        ids, states = await _members_with_states(client, set_key, prefix)
        in_set[set_key] = set(ids)
        expected = state.value.encode()
        for job_id, field in zip(ids, states, strict=True):
            if field == expected:
                continue
            if job_id not in hashes:
                problem("no hash", job_id, f"in {set_key} but has no job hash")
            elif field not in known:
                problem("bad state", job_id, f"state field {field!r} is not a state"
                        f" (in {set_key})")
            else:
                problem("in the wrong set", job_id, f"state {field.decode()!r} but in "
                        f"{set_key} (the set of {state.value!r})")

    # jobs parked by group limits are waiting too, in their group's parked set; each such
    # group is listed in `parked`, and meta.parked counts them all
    parked_total = 0
    listed = {g async for g in _zset_members(client, keys.parked)}
    group_prefix = keys.group_prefix.encode()
    async for set_key in client.scan_iter(match=group_prefix + b"*:parked", count=_SCAN_COUNT):
        group = set_key[len(group_prefix):-len(b":parked")]
        ids, states = await _members_with_states(client, set_key.decode(), prefix)
        in_set[set_key.decode()] = set(ids)
        parked_total += len(ids)
        if ids and group not in listed:
            problems.append(f"group {group!r} has parked jobs but is not in {keys.parked}")
            counts["in no set"] += 1
        for job_id, field in zip(ids, states, strict=True):
            if field != b"waiting":
                problem("in the wrong set", job_id, f"state {field!r} but parked in {set_key!r}")
    recorded = int(await client.hget(keys.meta, "parked") or 0)
    if recorded != parked_total:
        problems.append(f"meta.parked says {recorded}, the parked sets hold {parked_total}")
        counts["in no set"] += 1

    for (key_a, ids_a), (key_b, ids_b) in combinations(in_set.items(), 2):
        for job_id in ids_a & ids_b:
            problem("in several sets", job_id, f"in both {key_a} and {key_b}")

    indexed = set().union(*in_set.values())
    unindexed = sorted(hashes - indexed)
    states = await _hget_states(client, [prefix + i for i in unindexed])
    for job_id, field in zip(unindexed, states, strict=True):
        if field not in known:
            problem("bad state", job_id, f"state field {field!r} is not a state (in no set)")
        else:
            problem("in no set", job_id, f"state {field.decode()!r} but in no state set")

    if problems:
        summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        raise AssertionError(
            f"queue {keys.queue!r}: state invariants broken ({summary}; {len(hashes)} job "
            f"hashes, {len(indexed)} ids in state sets):\n  " + "\n  ".join(problems)
        )
