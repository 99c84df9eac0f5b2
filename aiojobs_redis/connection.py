"""Build or adopt a redis.asyncio client; reconnect policy; clean close."""

from __future__ import annotations

import logging
import socket
from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import ConfigurationError

AnyRedis: TypeAlias = "Redis | RedisCluster"
log = logging.getLogger("aiojobs_redis.connection")

#: reconnect with backoff from 50 ms up to 2 s (user story 5); a command gives up after
#: this many retries and the caller sees RedisUnavailable
RETRIES = 6
DEAD_CONNECTION_S = 20
BLOCKING_SOCKET_TIMEOUT_S = 20.0


def keepalive_options() -> dict[int, int]:
    """TCP options that declare a connection dead after about DEAD_CONNECTION_S seconds
    without an answer from the peer (where the platform has them)."""
    wanted = {"TCP_KEEPIDLE": 5, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3,
              "TCP_USER_TIMEOUT": DEAD_CONNECTION_S * 1000}
    return {getattr(socket, name): value for name, value in wanted.items()
            if hasattr(socket, name)}


#: connections of a client made by :func:`client_from_url` (``client_kwargs`` may change it)
DEFAULT_MAX_CONNECTIONS = 500
#: how long a call waits for a free connection of a full pool before it fails
POOL_WAIT_S = 30.0


def retry_policy() -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=2.0), RETRIES)


def client_from_url(url: str, **kwargs: Any) -> AnyRedis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``).

    ``cluster=True`` makes a RedisCluster client."""
    cluster = bool(kwargs.pop("cluster", False))
    options: dict[str, Any] = {
        "decode_responses": False,
        "retry": retry_policy(),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 15,
        # a cut-off network must not hang a call forever. Not socket_timeout: redis-py
        # wraps every read in asyncio.timeout then, which cost a third of the throughput of
        # one-by-one enqueues (measured); the kernel does it for free: keepalive probes
        # for an idle connection, TCP_USER_TIMEOUT for unacknowledged data
        "socket_keepalive": True,
        "socket_keepalive_options": keepalive_options(),
        "socket_connect_timeout": 5.0,
    }
    options.update(kwargs)
    if cluster:
        options.pop("retry_on_error", None)
        options.pop("health_check_interval", None)
        return RedisCluster.from_url(url, **options)
    # a blocking pool: a burst of callers beyond the pool waits for a connection instead
    # of failing with "Too many connections" (redis-py >= 7 caps a plain pool at 100, which
    # 200 concurrent enqueues, or handlers of a worker at concurrency 100, exceed)
    options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
    options.setdefault("timeout", POOL_WAIT_S)
    return Redis.from_pool(BlockingConnectionPool.from_url(url, **options))


def check_client(client: AnyRedis) -> None:
    """Refuse clients that would corrupt binary payloads."""
    if isinstance(client, RedisCluster):
        decode = client.get_connection_kwargs().get("decode_responses", False)
    else:
        decode = client.connection_pool.connection_kwargs.get("decode_responses", False)
    if decode:
        raise ConfigurationError(
            "the Redis client has decode_responses=True; aiojobs_redis stores MessagePack bytes"
            " and needs decode_responses=False"
        )


async def check_server(client: AnyRedis) -> list[str]:
    """Warnings about a Redis whose settings lose jobs; raises for a Redis that is too old."""
    info: dict[str, Any] = await client.info("server")
    if isinstance(client, RedisCluster):  # one reply per node: any node's will do
        info = next(iter(info.values())) if info and "redis_version" not in info else info
    version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
    if version < (7, 0):
        raise ConfigurationError(
            f"aiojobs_redis needs Redis >= 7.0 (scripts with #!lua flags); this is "
            f"{info.get('redis_version')}"
        )
    warnings: list[str] = []
    try:
        policy = await _config(client, "maxmemory-policy")
        save = await _config(client, "save")
        persistence: dict[str, Any] = await client.info("persistence")
    except RedisError:  # CONFIG may be forbidden (managed Redis, ACL): nothing to say
        return warnings
    if policy and policy != "noeviction":
        warnings.append(
            f"Redis maxmemory-policy is {policy!r}: under memory pressure Redis will evict"
            " keys, that is lose jobs and schedules. Set maxmemory-policy noeviction."
        )
    if isinstance(client, RedisCluster) and "aof_enabled" not in persistence:
        persistence = next(iter(persistence.values()), {})
    if not int(persistence.get("aof_enabled", 0)) and not save.strip():
        warnings.append(
            "Redis persistence is off (no AOF, no RDB snapshots): a Redis restart loses every"
            " job. Enable appendonly yes (appendfsync everysec or always) for durable jobs."
        )
    return warnings


async def _config(client: AnyRedis, name: str) -> str:
    reply: dict[Any, Any] = await client.config_get(name)
    if isinstance(client, RedisCluster) and name not in reply and name.encode() not in reply:
        reply = next(iter(reply.values()), {})  # one reply per node
    value = reply.get(name, reply.get(name.encode(), b""))
    return value.decode() if isinstance(value, bytes) else str(value)


def blocking_client(client: AnyRedis) -> Redis | RedisCluster:
    """A client for blocking commands (BZPOPMIN, XREAD BLOCK) that must not hold a pooled
    connection of the main client for seconds at a time: a separate pool, same settings."""
    if isinstance(client, RedisCluster):
        return client  # cluster clients already keep a connection per node and command
    kwargs = dict(client.connection_pool.connection_kwargs)
    # blocking reads wait at most 5 s on the server; more than this means a dead connection
    kwargs["socket_timeout"] = BLOCKING_SOCKET_TIMEOUT_S
    pool = client.connection_pool.__class__(
        connection_class=client.connection_pool.connection_class, max_connections=8, **kwargs
    )
    return Redis.from_pool(pool)  # closing it closes the pool
