"""A queue's limits across all its workers: starts per window and jobs running at once,
for the queue and for each group of its jobs (stored in the queue's ``meta`` and
``group-limits`` hashes, enforced by ``fetch_jobs.lua``)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..connection import AnyRedis
from ..errors import ConfigurationError, wrap_redis_errors
from ..keys import QueueKeys


class QueueLimits(msgspec.Struct, frozen=True, kw_only=True):
    """A queue's limits (``None``: that limit is off); see :meth:`Queue.set_limits`."""

    max_starts: int | None = None
    per_s: float | None = None
    max_active: int | None = None
    #: the same three for each group (``JobOptions(group=...)``) on its own
    group_max_starts: int | None = None
    group_per_s: float | None = None
    group_max_active: int | None = None


class GroupLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The limits of one group (``None``: that limit is off); see
    :meth:`Queue.set_group_limits`."""

    max_starts: int | None = None
    per_s: float | None = None
    max_active: int | None = None


def _rate_fields(max_starts: int | None, per_s: float | None,
                 max_active: int | None) -> tuple[int | None, int | None, int | None]:
    """Check one set of limits; returns (max_starts, per_s in ms, max_active)."""
    if (max_starts is None) != (per_s is None):
        raise ConfigurationError("give max_starts and per_s together")
    rate_ms = None
    if max_starts is not None and per_s is not None:
        _check_limit("max_starts", max_starts, 1, 100_000)
        if isinstance(per_s, bool) or not isinstance(per_s, int | float) \
                or not 0.001 <= per_s <= 86_400:
            raise ConfigurationError(f"per_s must be from 0.001 to 86400, not {per_s!r}")
        rate_ms = max(1, round(per_s * 1000))
    if max_active is not None:
        _check_limit("max_active", max_active, 1, 1_000_000)
    return max_starts, rate_ms, max_active


_LIMIT_FIELDS = ("rate_max", "rate_ms", "max_active", "g_rate_max", "g_rate_ms", "g_max_active")


def _check_group(group: object) -> None:
    if not isinstance(group, str) or not 1 <= len(group.encode()) <= 200:
        raise ConfigurationError(f"a group must be a string of 1-200 bytes, not {group!r}")


def _check_limit(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name} must be an integer from {low} to {high},"
                                 f" not {value!r}")


class LimitMethods:
    """The limit methods of :class:`~aiojobs_redis.producer.queue.Queue`."""

    client: AnyRedis
    keys: QueueKeys
    name: str

    async def set_limits(self, *, max_starts: int | None = None, per_s: float | None = None,
                         max_active: int | None = None, group_max_starts: int | None = None,
                         group_per_s: float | None = None,
                         group_max_active: int | None = None) -> None:
        """Limit this queue across all its workers (stored in Redis; replaces earlier limits).

        ``max_starts`` per ``per_s`` seconds: at most that many jobs start in any window of
        that length (a sliding window, by Redis's clock; retries count as starts).
        ``max_active``: at most that many jobs of the queue run at once. A worker held back
        by the rate limit sleeps until the window lets the next job start (no polling); one
        held back by ``max_active`` takes the next job when one of its own finishes, and
        looks again at least every 5 s. Jobs held back stay waiting, in order.

        ``group_max_starts`` per ``group_per_s`` and ``group_max_active``: the same limits
        for each group (``JobOptions(group=...)``) on its own, e.g. 10 calls per second per
        customer account; :meth:`set_group_limits` gives one group limits of its own. A job
        whose group has no room is parked: set aside with its group's other waiting jobs,
        which keep their places and return to the line as the group gets room (other
        groups' jobs run meanwhile). Parked jobs count as waiting.
        """
        rate_max, rate_ms, active = _rate_fields(max_starts, per_s, max_active)
        g_rate_max, g_rate_ms, g_active = _rate_fields(group_max_starts, group_per_s,
                                                       group_max_active)
        values = (rate_max, rate_ms, active, g_rate_max, g_rate_ms, g_active)
        fields: dict[Any, Any] = {  # redis-py types the mapping invariantly
            name: value for name, value in zip(_LIMIT_FIELDS, values, strict=True)
            if value is not None}
        with wrap_redis_errors(f"set the limits of queue {self.name!r}"):
            pipe = self.client.pipeline(transaction=True)  # one slot: fine on Cluster too
            pipe.hdel(self.keys.meta, *_LIMIT_FIELDS)
            if fields:
                pipe.hset(self.keys.meta, mapping=fields)
            pipe.zunionstore(self.keys.parked, {self.keys.parked: 0})  # parked: look again
            pipe.zadd(self.keys.marker, {"w": 0})  # idle workers look again
            await pipe.execute()

    async def limits(self) -> QueueLimits:
        """The queue's limits as :meth:`set_limits` stored them."""
        with wrap_redis_errors(f"read the limits of queue {self.name!r}"):
            raw = await self.client.hmget(self.keys.meta, list(_LIMIT_FIELDS))
        v = [None if x is None else int(x) for x in raw]
        return QueueLimits(
            max_starts=v[0], per_s=None if v[1] is None else v[1] / 1000, max_active=v[2],
            group_max_starts=v[3], group_per_s=None if v[4] is None else v[4] / 1000,
            group_max_active=v[5])

    async def set_group_limits(self, group: str, *, max_starts: int | None = None,
                               per_s: float | None = None,
                               max_active: int | None = None) -> None:
        """Give one group limits of its own, in place of the queue's group limits
        (:meth:`set_limits`); with no limit given, the group goes back to those. A limit
        left out is off for this group."""
        _check_group(group)
        rate_max, rate_ms, active = _rate_fields(max_starts, per_s, max_active)
        text = ":".join("" if x is None else str(x) for x in (active, rate_max, rate_ms))
        with wrap_redis_errors(f"set the limits of group {group!r} of queue {self.name!r}"):
            pipe = self.client.pipeline(transaction=True)
            if text == "::":
                pipe.hdel(self.keys.group_limits, group)
            else:
                pipe.hset(self.keys.group_limits, group, text)
                pipe.hset(self.keys.meta, "g_over", 1)  # fetch_jobs reads group-limits
            pipe.zadd(self.keys.parked, {group: 0}, xx=True)  # parked: look again
            pipe.zadd(self.keys.marker, {"w": 0})
            await pipe.execute()

    async def group_limits(self, group: str) -> GroupLimits | None:
        """The limits :meth:`set_group_limits` gave this group (None: it has the
        queue's group limits)."""
        _check_group(group)
        with wrap_redis_errors(f"read the limits of group {group!r} of queue {self.name!r}"):
            raw = await self.client.hget(self.keys.group_limits, group)
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        active, rate_max, rate_ms = (int(x) if x else None for x in text.split(":"))
        return GroupLimits(max_starts=rate_max, max_active=active,
                           per_s=None if rate_ms is None else rate_ms / 1000)
