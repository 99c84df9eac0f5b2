"""Build or adopt a redis.asyncio client; reconnect policy; clean close."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import ConfigurationError

AnyRedis: TypeAlias = "Redis | RedisCluster"
_T = TypeVar("_T")
log = logging.getLogger("aiojobs_redis.connection")

#: reconnect with backoff from 50 ms up to 1 s (user story 5) while the connection has
#: failed for less than this; then the caller sees RedisUnavailable
OUTAGE_BUDGET_S = 5.0
#: attempts of a cluster client's command after the first (redis-py's cluster client
#: counts attempts; between them it finds the slot's new primary after a failover)
CLUSTER_RETRIES = 6
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


#: a call on a Sentinel-managed client rides out a failover: down-after-milliseconds, the
#: election and the promotion (about 3 s with down-after-milliseconds 1000, measured) must
#: fit in the retries of one call. The budget is a time, not a count: redis-py nests the
#: reconnect's retries inside the call's (a count of 12 let a call wait 166 s, measured)
SENTINEL_FAILOVER_S = 10.0
#: a Sentinel answers SENTINEL MASTERS at once; a silent one must not stall every new
#: connection (the next Sentinel of the list is asked instead)
SENTINEL_SOCKET_TIMEOUT_S = 2.0
SENTINEL_DEFAULT_PORT = 26379
SENTINEL_SCHEME = "redis+sentinel"
#: URL schemes of a Redis Cluster, and the scheme redis-py reads them as
#: set to 1 (development) to silence the warning about a Redis that persists nothing
NO_PERSISTENCE_OK = "AJR_NO_PERSISTENCE_OK"
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_retry_policy() -> Retry:
    """Retries of a cluster client: it counts them (and refreshes its slot map between)."""
    return Retry(_Jitter(base=0.05, cap=1.0), CLUSTER_RETRIES)


def retry_policy(budget_s: float = OUTAGE_BUDGET_S) -> Retry:
    """Retries of a plain client: jittered backoff from 50 ms to 1 s while the connection
    has been failing for less than ``budget_s``. A budget in time, not a count: six
    full-jitter retries could all be spent within a few hundred ms, well inside a Redis
    restart of one second."""
    return OutageRetry(_Jitter(base=0.05, cap=1.0), budget_s)


class OutageRetry(Retry):
    """Retry with backoff until the connection has been failing for ``budget_s`` seconds.

    redis-py copies the policy into each connection, and a call's retry loop runs the
    reconnect's loop inside it, both on that copy: one clock then bounds both, from the
    first failure until a success (or the end of the outermost call)."""

    def __init__(self, backoff: Any, budget_s: float) -> None:
        super().__init__(backoff, -1)
        self.budget_s = budget_s
        self._since: float | None = None
        self._depth = 0

    async def call_with_retry(self, do: Callable[[], Awaitable[_T]], fail: Callable[..., Any],
                              is_retryable: Callable[[Exception], bool] | None = None,
                              with_failure_count: bool = False) -> _T:
        async def attempt() -> _T:
            result = await do()
            self._since = None
            return result

        async def failed(error: Exception, *count: int) -> None:
            await fail(error, *count)
            now = time.monotonic()
            if self._since is None:
                self._since = now
            elif now - self._since >= self.budget_s:
                raise error

        self._depth += 1
        try:
            return await super().call_with_retry(attempt, failed, is_retryable,
                                                 with_failure_count)
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._since = None


class _Jitter(ExponentialWithJitterBackoff):
    """Full jitter whose exponent stops growing (2 ** 1100 overflows a float, and an
    :class:`OutageRetry` counts no limit of failures)."""

    def compute(self, failures: int) -> float:
        return super().compute(min(failures, 30))


def sentinel_retry_policy(budget_s: float = SENTINEL_FAILOVER_S) -> Retry:
    """Retries for a Sentinel-managed master: every 0.05 s to 1 s (jittered), while the
    connection has been failing for less than ``budget_s`` (a failover's length)."""
    return OutageRetry(_Jitter(base=0.05, cap=1.0), budget_s)


class SentinelMasterConnection(SentinelManagedConnection):
    """A connection of a Sentinel-managed pool that asks the Sentinels for the master's
    address every time it connects, reconnects included.

    redis-py reconnects a connection dropped in the middle of a call (the retry of that
    call) straight to the address it had, that is to the dead master after a failover,
    until the call's retries are spent (redis/redis-py#3874); only the next call would
    ask the Sentinels. Pass ``connection_class=SentinelMasterConnection`` to
    ``Sentinel.master_for`` to get this for a client of your own."""

    async def connect_check_health(self, check_health: bool = True,
                                   retry_socket_connect: bool = True) -> None:
        if retry_socket_connect and not self.is_connected:
            # the reconnect of a retry: through connect(), which looks the master up
            # (and comes back here with retry_socket_connect=False)
            await self.connect()  # type: ignore[no-untyped-call,unused-ignore]
            return
        await super().connect_check_health(check_health=check_health,
                                           retry_socket_connect=retry_socket_connect)


class SentinelMasterSSLConnection(SentinelMasterConnection, SentinelManagedSSLConnection):
    """:class:`SentinelMasterConnection` over TLS."""


#: the connection classes of redis-py's Sentinel pools and ours that fix them
_FOLLOWING: dict[type[Any], type[Any]] = {
    SentinelManagedConnection: SentinelMasterConnection,
    SentinelManagedSSLConnection: SentinelMasterSSLConnection,
}


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """A pool of connections to the master a Sentinel names that, full, makes a caller
    wait for a free connection (as :func:`client_from_url` does for a plain Redis).

    With ``owns_manager`` closing the pool also closes the connections to the Sentinels
    (the client made from a URL owns its :class:`Sentinel`; the pool of
    :func:`blocking_client` shares it and leaves it open)."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, *,
                 owns_manager: bool = False, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call,unused-ignore]
        self.owns_manager = owns_manager

    async def aclose(self) -> None:
        await super().aclose()
        if self.owns_manager:
            await self.sentinel_manager.aclose()


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any],
                                          dict[str, Any]]:
    """``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
    -> (Sentinel addresses, service name, master connection options, Sentinel options).

    The user and password are the master's; ``?sentinel_username=`` and
    ``?sentinel_password=`` authenticate to the Sentinels; other query options are
    the master connection's, as in a ``redis://`` URL."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ConfigurationError(f"not a {SENTINEL_SCHEME}:// URL: {url!r}")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    sentinels: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        item = item.strip()
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.partition(":")
        try:
            port = int(port_text) if port_text else SENTINEL_DEFAULT_PORT
        except ValueError:
            raise ConfigurationError(f"bad Sentinel port in {item!r}") from None
        if not host:
            raise ConfigurationError(f"a Sentinel address is empty in {url!r}")
        sentinels.append((unquote(host), port))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ConfigurationError(
            f"a {SENTINEL_SCHEME}:// URL names the service, and optionally the database:"
            f" {SENTINEL_SCHEME}://host:26379/mymaster/0 (got {url!r})"
        )
    service = path[0]
    sentinel_options: dict[str, Any] = {}
    query = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in ("sentinel_username", "sentinel_password"):
            sentinel_options[name.removeprefix("sentinel_")] = value
        else:
            query.append((name, value))
    # the master's options as redis-py reads them from a redis:// URL (types, unquoting)
    auth = f"{userinfo}@" if userinfo else ""
    db = f"/{path[1]}" if len(path) == 2 else ""
    try:
        options = dict(parse_url(f"redis://{auth}localhost{db}?{urlencode(query)}"))
    except ValueError as e:
        raise ConfigurationError(f"{e} ({url!r})") from None
    options.pop("host", None)
    if len(path) == 2 and "db" not in options:
        raise ConfigurationError(f"the database of {url!r} is not a number")
    return sentinels, service, options, sentinel_options


def _sentinel_client(url: str, options: dict[str, Any]) -> Redis:
    sentinels, service, url_options, sentinel_auth = parse_sentinel_url(url)
    options.update(url_options)  # as in redis-py: what the URL says wins
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": options.get("socket_connect_timeout"),
        "socket_timeout": SENTINEL_SOCKET_TIMEOUT_S,
        "socket_keepalive": options.get("socket_keepalive", False),
        "socket_keepalive_options": options.get("socket_keepalive_options"),
        # no retry on a Sentinel: the next one is asked, and the master connection's
        # retry policy (with its backoff) asks them all again
        "retry": Retry(NoBackoff(), 0),
        **sentinel_auth,
    }
    sentinel_kwargs.update(options.pop("sentinel_kwargs", None) or {})
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call,unused-ignore]
    client: Redis = manager.master_for(
        service, connection_pool_class=BlockingSentinelConnectionPool, owns_manager=True,
        connection_class=SentinelMasterConnection, **options,
    )
    return client


def client_from_url(url: str, **kwargs: Any) -> AnyRedis:
    """A client for ``url`` (``redis://``, ``rediss://``, ``unix://``, or
    ``redis+sentinel://host:26379[,host:26379...]/service[/db]``: the master a Sentinel
    names, followed through failovers, or ``redis+cluster://host:port`` (``rediss+cluster``
    with TLS): a Redis Cluster client that finds the other nodes from this one).

    ``cluster=True`` makes a RedisCluster client of a ``redis://`` URL too."""
    cluster = bool(kwargs.pop("cluster", False))
    scheme = urlsplit(url).scheme
    if scheme in CLUSTER_SCHEMES:
        cluster = True
        url = CLUSTER_SCHEMES[scheme] + url[len(scheme):]
    sentinel = scheme == SENTINEL_SCHEME
    options: dict[str, Any] = {
        "decode_responses": False,
        "retry": sentinel_retry_policy() if sentinel else retry_policy(),
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
    if cluster and sentinel:
        raise ConfigurationError("a Sentinel-managed Redis is not a cluster: drop cluster=True")
    if cluster:
        options.pop("retry_on_error", None)
        options.pop("health_check_interval", None)
        if "retry" not in kwargs:  # a cluster client counts its attempts (a time budget
            options["retry"] = cluster_retry_policy()  # reads as zero attempts there)
        return RedisCluster.from_url(url, **options)
    # a blocking pool: a burst of callers beyond the pool waits for a connection instead
    # of failing with "Too many connections" (redis-py >= 7 caps a plain pool at 100, which
    # 200 concurrent enqueues, or handlers of a worker at concurrency 100, exceed)
    options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
    options.setdefault("timeout", POOL_WAIT_S)
    if sentinel:
        return _sentinel_client(url, options)
    return Redis.from_pool(BlockingConnectionPool.from_url(url, **options))


class ClientPipelines:
    """One non-transactional pipeline per client, for the commands of queues that may be
    on different clients: :meth:`execute` sends them all at once (one round trip per
    client; a cluster client's pipeline goes per node)."""

    __slots__ = ("_pipes",)

    def __init__(self) -> None:
        self._pipes: dict[int, Any] = {}

    def of(self, client: AnyRedis) -> Any:
        """The pipeline of ``client`` (made at first use); ``len()`` of it before a
        command is queued is that command's index in the client's replies."""
        pipe = self._pipes.get(id(client))
        if pipe is None:
            pipe = self._pipes[id(client)] = client.pipeline(transaction=False)
        return pipe

    async def execute(self) -> dict[int, list[Any]]:
        """Send every pipeline; the replies of each, by ``id(client)``."""
        keys = list(self._pipes)
        replies = await asyncio.gather(*(self._pipes[k].execute() for k in keys))
        return dict(zip(keys, replies, strict=True))


def check_client(client: AnyRedis) -> None:
    """Refuse clients that would corrupt binary payloads, or cannot write."""
    if isinstance(client, RedisCluster):
        decode = client.get_connection_kwargs().get("decode_responses", False)
    else:
        decode = client.connection_pool.connection_kwargs.get("decode_responses", False)
    if decode:
        raise ConfigurationError(
            "the Redis client has decode_responses=True; aiojobs_redis stores MessagePack bytes"
            " and needs decode_responses=False"
        )
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, SentinelConnectionPool) and not pool.is_master:
        raise ConfigurationError(
            "the Redis client talks to a replica (Sentinel.slave_for); aiojobs_redis writes"
            " on every call and needs the master: use Sentinel.master_for"
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
    if (not int(persistence.get("aof_enabled", 0)) and not save.strip()
            and os.environ.get(NO_PERSISTENCE_OK, "") not in ("1", "true", "yes")):
        warnings.append(
            "Redis persistence is off (no AOF, no RDB snapshots): a Redis restart loses every"
            " job. Enable appendonly yes (appendfsync everysec or always) for durable jobs"
            f" (in development, {NO_PERSISTENCE_OK}=1 silences this warning)."
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
    source = client.connection_pool
    kwargs = dict(source.connection_kwargs)
    # blocking reads wait at most 5 s on the server; more than this means a dead connection
    kwargs["socket_timeout"] = BLOCKING_SOCKET_TIMEOUT_S
    if isinstance(source, SentinelConnectionPool):
        # a pool that follows the same master: same service, same Sentinels (which the
        # main client owns). The pool put a proxy of itself in its connection kwargs
        kwargs.pop("connection_pool", None)
        connection_class = _FOLLOWING.get(source.connection_class, source.connection_class)
        pool: Any = type(source)(  # SentinelConnectionPool or a subclass such as ours
            source.service_name, source.sentinel_manager, is_master=source.is_master,
            check_connection=source.check_connection, connection_class=connection_class,
            max_connections=8, **kwargs,
        )
    else:
        pool = type(source)(connection_class=source.connection_class, max_connections=8,
                            **kwargs)
    return Redis.from_pool(pool)  # closing it closes the pool


async def execute_with_time(client: AnyRedis, pipe: Any) -> tuple[list[Any], int]:
    """Run a non-transactional pipeline of reads and read Redis's clock (ms) with it: in
    the same round trip on one server; beside it on a cluster, where redis-py refuses
    TIME inside a pipeline (it has no key to route by)."""
    if isinstance(client, RedisCluster):
        replies, (sec, micros) = await asyncio.gather(pipe.execute(), client.time())
    else:
        pipe.time()
        *replies, (sec, micros) = await pipe.execute()
    return list(replies), int(sec) * 1000 + int(micros) // 1000
