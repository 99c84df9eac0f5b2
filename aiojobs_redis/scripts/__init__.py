"""The Lua scripts, one file per state transition, and their loader.

Each script is called by SHA; after a Redis restart or SCRIPT FLUSH (NOSCRIPT),
every script of the library is loaded again at once and the call retried once.
Loading all of them, not just the one that failed, keeps the order of a batch: a
batch then meets either no script or all of its scripts, never a loaded one after a
missing one that would run before it. :data:`SPECS` names every
script's keys and arguments in header order; a test keeps the two in step.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..connection import AnyRedis
from ..keys import QueueKeys

if TYPE_CHECKING:
    from .direct import DirectLine


@dataclass(frozen=True, slots=True)
class ScriptSpec:
    """Names of a script's keys and arguments, in the order of its header."""

    name: str
    keys: tuple[str, ...]
    argv: tuple[str, ...]
    group: tuple[str, ...] = ()  # repeated argument group after ``argv``; () when none


SPECS: Final[tuple[ScriptSpec, ...]] = (
    ScriptSpec(
        "add_jobs",
        ("wait", "delayed", "events", "marker", "seq", "meta", "groups", "metrics_total"),
        ("job_prefix", "events_maxlen", "jobs", "dedup_prefix", "group_prefix", "memo",
         "call_id"),
    ),
    ScriptSpec(
        "fetch_jobs",
        ("wait", "delayed", "active", "events", "marker", "seq", "meta", "failed", "rate",
         "groups", "parked", "group_limits", "group_keys", "metrics_total", "blocked",
         "cancelled"),
        ("job_prefix", "events_maxlen", "count", "lease_ms", "worker_id", "token_nonce",
         "promote_limit", "memo_prefix", "keep_count", "keep_age_ms", "group_prefix"),
    ),
    ScriptSpec(
        "add_flow",
        ("wait", "delayed", "blocked", "failed", "cancelled", "events", "marker", "seq",
         "metrics_total"),
        ("job_prefix", "events_maxlen", "jobs"),
    ),
    ScriptSpec(
        "complete_jobs",
        ("active", "completed", "events", "wait", "delayed", "blocked", "failed", "cancelled",
         "marker", "seq", "metrics_total"),
        ("job_prefix", "events_maxlen", "keep_count", "keep_age_ms", "outcomes"),
    ),
    ScriptSpec(
        "fail_jobs",
        ("active", "wait", "delayed", "failed", "events", "marker", "seq", "cancelled",
         "metrics_total", "blocked"),
        ("job_prefix", "events_maxlen", "keep_count", "keep_age_ms", "outcomes"),
    ),
    ScriptSpec("extend_leases", ("active",), ("job_prefix", "lease_ms"), ("id", "token")),
    ScriptSpec(
        "recover_stalled",
        ("active", "wait", "failed", "events", "marker", "meta", "cancelled", "metrics_total",
         "delayed", "blocked", "seq"),
        ("job_prefix", "events_maxlen", "max_stalls", "limit", "keep_count", "keep_age_ms",
         "gap_ms"),
    ),
    ScriptSpec(
        "return_jobs",
        ("active", "wait", "events", "marker", "cancelled", "metrics_total", "delayed",
         "blocked", "failed", "seq"),
        ("job_prefix", "events_maxlen"),
        ("id", "token"),
    ),
    ScriptSpec(
        "update_progress",
        ("events",),
        ("job_prefix", "events_maxlen", "id", "token", "progress"),
    ),
    ScriptSpec(
        "remove_job",
        ("wait", "delayed", "completed", "failed", "cancelled", "events", "meta", "blocked",
         "marker", "seq", "metrics_total"),
        ("job_prefix", "events_maxlen", "op_key", "id", "group_prefix"),
    ),
    ScriptSpec(
        "add_dead_jobs",
        ("failed", "events", "metrics_total"),
        ("job_prefix", "events_maxlen", "keep_count", "keep_age_ms", "jobs"),
    ),
    ScriptSpec("append_log", ("events",),
               ("job_prefix", "id", "token", "line", "cap", "events_maxlen")),
    ScriptSpec(
        "change_job",
        ("wait", "delayed", "events", "marker", "seq", "meta"),
        ("job_prefix", "events_maxlen", "op_key", "id", "priority", "delay_ms", "group_prefix"),
    ),
    ScriptSpec(
        "cancel_job",
        ("wait", "delayed", "cancelled", "events", "meta", "metrics_total", "blocked", "failed",
         "marker", "seq"),
        ("job_prefix", "events_maxlen", "op_key", "id", "by", "keep_count", "keep_age_ms",
         "channel", "group_prefix"),
    ),
    ScriptSpec(
        "retry_jobs",
        ("wait", "failed", "events", "marker", "seq"),
        ("job_prefix", "events_maxlen", "op_key"),
        ("id",),
    ),
    ScriptSpec(
        "promote_job",
        ("wait", "delayed", "events", "marker", "seq"),
        ("job_prefix", "events_maxlen", "op_key", "id"),
    ),
    ScriptSpec("drain_queue", ("wait", "delayed", "meta", "parked", "blocked", "failed",
                               "cancelled", "events", "marker", "seq", "metrics_total"),
               ("job_prefix", "limit", "group_prefix", "events_maxlen")),
    ScriptSpec(
        "obliterate_queue",
        ("wait", "delayed", "active", "completed", "failed", "cancelled", "events", "marker",
         "seq", "meta", "rate", "groups", "parked", "group_limits", "group_keys", "blocked"),
        ("job_prefix", "limit", "force", "group_prefix"),
    ),
    ScriptSpec(
        "fire_schedule",
        ("wait", "events", "marker", "seq", "schedules"),
        ("job_prefix", "events_maxlen", "sched_prefix", "name", "digest", "tick", "handled",
         "next_tick", "next_due", "task", "payload", "options", "priority", "max_attempts"),
        ("tick",),
    ),
    ScriptSpec(
        "upsert_schedule",
        ("schedules",),
        ("sched_prefix", "name", "spec", "digest", "expected_digest", "expected_tick", "tick",
         "due"),
    ),
    ScriptSpec("remove_schedule", ("schedules",), ("sched_prefix", "name")),
    ScriptSpec("list_due_schedules", ("schedules",), ("sched_prefix", "limit")),
    ScriptSpec(
        "record_metrics",
        ("metrics", "metrics_total"),
        ("slots", "width", "batch_id"),
        ("index", "field", "increment"),
    ),
    ScriptSpec(
        "read_jobs",
        ("state_set",),
        ("job_prefix", "offset", "limit", "newest_first", "cap"),
        ("field",),
    ),
)


#: scripts that must see the sorted set of every job state (aiojobs_redis/states.py),
#: with the sets each leaves out on purpose; a test checks their KEYS against the table
SEES_EVERY_STATE: Final[dict[str, frozenset[str]]] = {
    "remove_job": frozenset({"active"}),  # an active job is refused, read from its hash
    # drain removes what has not started (and settles the flows that waited for it):
    # running and completed jobs stay; a new state must be placed on one side or the other
    "drain_queue": frozenset({"active", "completed"}),
    "obliterate_queue": frozenset(),
}


class Script:
    """One Lua script: its source, its SHA, and calls by SHA with a NOSCRIPT fallback."""

    __slots__ = ("name", "sha", "source", "spec")

    def __init__(self, spec: ScriptSpec, source: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def keys_of(self, queue_keys: QueueKeys) -> list[str]:
        """This script's KEYS for a queue, in header order."""
        return [getattr(queue_keys, name) for name in self.spec.keys]

    async def __call__(self, client: AnyRedis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await load_all(client)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


async def load_all(client: AnyRedis) -> None:
    """Load every script of the library (after NOSCRIPT: Redis restarted or flushed them)."""
    if isinstance(client, RedisCluster):
        for script in SCRIPTS.values():  # SCRIPT LOAD goes to every primary
            await client.script_load(script.source)
        return
    pipe = client.pipeline(transaction=False)
    for script in SCRIPTS.values():
        pipe.script_load(script.source)
    await pipe.execute()


class Batch:
    """Several script calls sent in one round trip (a non-transactional pipeline).

    Calls that meet NOSCRIPT are re-run in order after every script is loaded again;
    each call is atomic by itself, so the others in the batch either ran or did not.
    ``reordered`` tells that a call ran before an earlier call of the batch (possible
    only when another client loaded some scripts but not all): a caller that draws
    conclusions from the order, such as "the fetch after a retry found nothing", must
    look again.

    With ``replicas`` > 0, a ``WAIT replicas timeout`` follows the calls on each node
    they went to, in the same round trip; ``acked`` is then the fewest replicas that
    confirmed the writes of any node (the caller decides what too few means).
    """

    __slots__ = ("acked", "calls", "reordered", "replica_timeout_ms", "replicas")

    def __init__(self, *, replicas: int = 0, replica_timeout_ms: int = 1000) -> None:
        self.calls: list[tuple[Script, list[str], list[Any]]] = []
        self.reordered = False
        self.replicas = replicas
        self.replica_timeout_ms = replica_timeout_ms
        self.acked: int | None = None

    def add(self, script: Script, keys: list[str], args: list[Any]) -> int:
        """Queue a call; returns its index in the results of :meth:`execute`."""
        self.calls.append((script, keys, args))
        return len(self.calls) - 1

    def __len__(self) -> int:
        return len(self.calls)

    async def execute(self, client: AnyRedis, line: DirectLine | None = None) -> list[Any]:
        """Send the calls; ``line``: a :class:`~aiojobs_redis.scripts.direct.DirectLine`
        of ``client`` to send them on when it is free (no replicas to wait for)."""
        if line is not None and not self.replicas:
            sent = await line.execute(self.calls)
            if sent is not None:
                return await self._settle(client, sent)
        if len(self.calls) == 1 and not self.replicas:
            script, keys, args = self.calls[0]
            return [await script(client, keys, args)]
        if isinstance(client, RedisCluster):
            return await self._execute_on_nodes(client)
        pipe = client.pipeline(transaction=False)
        for script, keys, args in self.calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        if self.replicas:
            pipe.execute_command("WAIT", self.replicas, self.replica_timeout_ms)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        if self.replicas:
            self.acked = _acked(results.pop())
        return await self._settle(client, results)

    async def _execute_on_nodes(self, client: RedisCluster) -> list[Any]:
        """On a cluster: one pipeline per node that owns the calls' slots, all nodes at
        once (redis-py's cluster pipeline refuses EVALSHA). A call redirected by MOVED or
        ASK (a slot migrating, a failover) was not run: it is sent again through the
        cluster client, which follows the redirection and refreshes its slot map."""
        await client.initialize()
        by_node: dict[str, tuple[ClusterNode, list[PipelineCommand]]] = {}
        for i, (script, keys, args) in enumerate(self.calls):
            node = client.get_node_from_key(keys[0])
            if node is None:  # no primary known for the slot: let the client find it
                raise SlotNotCoveredError(f"no node serves the slot of {keys[0]!r}")
            command = PipelineCommand(i, "EVALSHA", script.sha, len(keys), *keys, *args)
            by_node.setdefault(node.name, (node, []))[1].append(command)
        if self.replicas:
            for _, commands in by_node.values():
                commands.append(PipelineCommand(-1, "WAIT", self.replicas,
                                                self.replica_timeout_ms))
        try:
            await asyncio.gather(*(node.execute_pipeline(commands)
                                   for node, commands in by_node.values()))
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await _refresh_slots(client)  # a failover: find the new primaries next time
            raise
        results: list[Any] = [None] * len(self.calls)
        waits: list[Any] = []
        for _, commands in by_node.values():
            for command in commands:
                if command.position < 0:
                    waits.append(command.result)
                else:
                    results[command.position] = command.result
        redirected = [i for i, r in enumerate(results)
                      if isinstance(r, MovedError | AskError | TryAgainError | ClusterDownError)]
        if redirected:
            # the slot moved (a failover, a reshard): our map is stale, and a WAIT that went
            # along was answered by a node that no longer owns the slot (maybe a replica)
            await _refresh_slots(client)
            for i in redirected:
                script, keys, args = self.calls[i]
                results[i] = await script(client, keys, args)
            if self.replicas:
                await self._wait_again(client)
        elif waits:
            self.acked = min(_acked(w) for w in waits)
        return await self._settle(client, results)

    async def _wait_again(self, client: AnyRedis) -> None:
        """WAIT on the nodes of this batch's calls after some were sent on their own."""
        if isinstance(client, RedisCluster):
            nodes = {node.name: node for _, keys, _ in self.calls
                     if (node := client.get_node_from_key(keys[0])) is not None}
            acks = [_acked(await client.execute_command(
                "WAIT", self.replicas, self.replica_timeout_ms, target_nodes=node))
                for node in nodes.values()]
        else:
            acks = [_acked(await client.wait(self.replicas, self.replica_timeout_ms))]
        self.acked = min(acks, default=0)

    async def _settle(self, client: AnyRedis, results: list[Any]) -> list[Any]:
        """Raise the first error; re-run, in order, the calls that met NOSCRIPT."""
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, NoScriptError):
                raise result
        if missing:
            self.reordered = any(i > missing[0] for i in range(len(results))
                                 if i not in missing)
            await load_all(client)
            for i in missing:
                script, keys, args = self.calls[i]
                results[i] = await client.evalsha(script.sha, len(keys), *keys, *args)
            if self.replicas:
                await self._wait_again(client)
        return results


class Batches:
    """Script calls of several queues, which may be on different clients: one
    :class:`Batch` per client, all sent at once (one round trip per client, per node on
    a cluster). What a worker does periodically for each of its queues goes this way, so
    that its round trips do not grow with the number of queues."""

    __slots__ = ("_by_client",)

    def __init__(self) -> None:
        self._by_client: dict[int, tuple[AnyRedis, Batch]] = {}

    def add(self, client: AnyRedis, script: Script, keys: list[str],
            args: list[Any]) -> tuple[int, int]:
        """Queue a call; returns its handle into the results of :meth:`execute`."""
        _, batch = self._by_client.setdefault(id(client), (client, Batch()))
        return id(client), batch.add(script, keys, args)

    async def execute(self) -> dict[tuple[int, int], Any]:
        """Send every batch; the replies by handle (the first error raises)."""
        pairs = list(self._by_client.items())
        results = await asyncio.gather(*(batch.execute(client) for _, (client, batch) in pairs))
        return {(key, i): reply for (key, _), replies in zip(pairs, results, strict=True)
                for i, reply in enumerate(replies)}


def _acked(reply: Any) -> int:
    if isinstance(reply, BaseException):
        raise reply
    return int(reply)


async def _refresh_slots(client: RedisCluster) -> None:
    """Ask the cluster for its slot map again (best effort: during a failover no node may
    answer yet; the next batch tries again)."""
    try:
        await client.nodes_manager.initialize()
    except Exception:
        return


_INCLUDE = re.compile(r"^--!include (\w+)$", re.M)
def _load_all() -> dict[str, Script]:
    """Read every script; a line ``--!include NAME`` is replaced by ``lib/NAME.lua``."""
    folder = resources.files(__package__)

    def expand(match: re.Match[str]) -> str:
        return folder.joinpath("lib", f"{match.group(1)}.lua").read_text("utf-8").rstrip("\n")

    return {
        spec.name: Script(spec, _INCLUDE.sub(
            expand, folder.joinpath(f"{spec.name}.lua").read_text("utf-8")))
        for spec in SPECS
    }


SCRIPTS: Final[dict[str, Script]] = _load_all()
