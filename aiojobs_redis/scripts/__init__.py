"""The Lua scripts, one file per state transition, and their loader.

Each script is loaded once and called by SHA; after a Redis restart (NOSCRIPT)
it is loaded again and the call retried once. :data:`SPECS` names every
script's keys and arguments in header order; a test keeps the two in step.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from ..connection import AnyRedis
from ..keys import QueueKeys


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
        ("wait", "delayed", "events", "marker", "seq"),
        ("job_prefix", "events_maxlen", "jobs"),
    ),
    ScriptSpec(
        "fetch_jobs",
        ("wait", "delayed", "active", "events", "marker", "seq", "meta"),
        ("job_prefix", "events_maxlen", "count", "lease_ms", "worker_id", "token_nonce",
         "promote_limit"),
    ),
    ScriptSpec(
        "complete_jobs",
        ("active", "completed", "events"),
        ("job_prefix", "events_maxlen", "keep_count", "keep_age_ms", "outcomes"),
    ),
    ScriptSpec(
        "fail_jobs",
        ("active", "wait", "delayed", "failed", "events", "marker", "seq"),
        ("job_prefix", "events_maxlen", "keep_count", "keep_age_ms", "outcomes"),
    ),
    ScriptSpec("extend_leases", ("active",), ("job_prefix", "lease_ms"), ("id", "token")),
    ScriptSpec(
        "recover_stalled",
        ("active", "wait", "failed", "events", "marker", "seq"),
        ("job_prefix", "events_maxlen", "max_stalls", "limit"),
    ),
    ScriptSpec(
        "return_jobs",
        ("active", "wait", "events", "marker"),
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
        ("wait", "delayed", "completed", "failed", "events"),
        ("job_prefix", "events_maxlen", "id"),
    ),
    ScriptSpec(
        "retry_jobs",
        ("wait", "failed", "events", "marker", "seq"),
        ("job_prefix", "events_maxlen"),
        ("id",),
    ),
    ScriptSpec(
        "promote_job",
        ("wait", "delayed", "events", "marker", "seq"),
        ("job_prefix", "events_maxlen", "id"),
    ),
    ScriptSpec("drain_queue", ("wait", "delayed"), ("job_prefix", "limit")),
    ScriptSpec(
        "obliterate_queue",
        ("wait", "delayed", "active", "completed", "failed", "events", "marker", "seq", "meta"),
        ("job_prefix", "limit", "force"),
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
        ("slots", "width"),
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
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


class Batch:
    """Several script calls sent in one round trip (a non-transactional pipeline).

    A call that meets NOSCRIPT is re-run on its own after loading its script; each
    call is atomic by itself, so the others in the batch either ran or did not.
    """

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: list[tuple[Script, list[str], list[Any]]] = []

    def add(self, script: Script, keys: list[str], args: list[Any]) -> int:
        """Queue a call; returns its index in the results of :meth:`execute`."""
        self.calls.append((script, keys, args))
        return len(self.calls) - 1

    def __len__(self) -> int:
        return len(self.calls)

    async def execute(self, client: AnyRedis) -> list[Any]:
        if len(self.calls) == 1 or isinstance(client, RedisCluster):
            # redis-py refuses EVALSHA in cluster pipelines: one call after another there
            return [await script(client, keys, args) for script, keys, args in self.calls]
        pipe = client.pipeline(transaction=False)
        for script, keys, args in self.calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        for i, result in enumerate(results):
            if isinstance(result, NoScriptError):
                script, keys, args = self.calls[i]
                results[i] = await script(client, keys, args)
            elif isinstance(result, BaseException):
                raise result
        return results


def scripts_markdown() -> str:
    """The script table of docs/keys.md: each transition, its keys and arguments."""
    lines = ["| script | transition | KEYS | ARGV |", "|---|---|---|---|"]
    for spec in SPECS:
        source = SCRIPTS[spec.name].source
        head = source.split("--[[ ", 1)[1].split(": ", 1)[1]
        head = re.split(r"\n\s*(?:KEYS|ARGV)\[", head, maxsplit=1)[0]
        summary = " ".join(head.split()).split(". ")[0].rstrip(".").replace("|", "\\|")
        argv = ", ".join(spec.argv) + (f", then groups of ({', '.join(spec.group)})"
                                       if spec.group else "")
        lines.append(f"| [`{spec.name}`](../aiojobs_redis/scripts/{spec.name}.lua) | {summary} |"
                     f" {', '.join(spec.keys)} | {argv} |")
    return "\n".join(lines) + "\n"


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
