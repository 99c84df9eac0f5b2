"""Fixtures: one redis-server of our own per test session (free loopback port,
temporary directory), a unique queue per test, and a check at teardown that the
test wrote no key outside its queue's hash tag."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import Queue, Retention
from aiojobs_redis._redis_sentinel import SentinelSetup
from aiojobs_redis._redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
def queue_name(request: pytest.FixtureRequest) -> str:
    base = request.node.name.split("[")[0].replace("test_", "")[:40]
    return f"{base}-{secrets.token_hex(3)}"


@pytest.fixture
async def queue(client: aioredis.Redis, queue_name: str) -> AsyncIterator[Queue]:
    """A queue of its own for this test; at teardown, no key may exist outside its tag."""
    before = {k async for k in client.scan_iter(match="*")}
    q = Queue(client, name=queue_name)
    try:
        yield q
    finally:
        await q.close()
        tag = f"ajr:{{{queue_name}}}:".encode()
        after = {k async for k in client.scan_iter(match="*")}
        foreign = sorted(k for k in after - before if not k.startswith(tag))
        mine = [k for k in after if k.startswith(tag)]
        if mine:
            await client.delete(*mine)
        assert not foreign, f"keys written outside the queue's hash tag: {foreign[:10]}"


@pytest.fixture
async def other_queue(queue: Queue, redis_url: str) -> AsyncIterator[Queue]:
    """The same queue on a client (and blocking pool) of its own, as another process has
    it; closed at teardown, so that no connection is left for the garbage collector."""
    async with Queue.from_url(redis_url, name=queue.name) as other:
        yield other


async def hang() -> None:
    """What a handler awaits to run until something stops it (its timeout, a cancel, a
    shutdown): nothing ever wakes it by itself."""
    await asyncio.Event().wait()


async def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.01) -> None:
    """Wait for a condition with a deadline (for facts that have no event to wait on)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate() if callable(predicate) else predicate
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def cluster_server() -> Iterator[RedisServer]:
    """A cluster-mode redis-server holding all 16384 slots on one node."""
    import socket
    import time

    server = RedisServer(extra=["--cluster-enabled", "yes", "--cluster-config-file",
                                "nodes.conf"]).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"CLUSTER ADDSLOTSRANGE 0 16383\r\n")
            assert s.recv(64).startswith(b"+OK")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                s.sendall(b"CLUSTER INFO\r\n")
                if b"cluster_state:ok" in s.recv(4096):
                    break
                time.sleep(0.05)
            else:
                raise TimeoutError("cluster did not reach state ok")
        yield server
    finally:
        server.cleanup()



@pytest.fixture(scope="session")
def sentinel_setup() -> Iterator[SentinelSetup]:
    """A master, its replica and one Sentinel monitoring them (quorum 1,
    down-after-milliseconds 1000), shared by the tests that do not kill anything."""
    setup = SentinelSetup().start()
    try:
        yield setup
    finally:
        setup.cleanup()


@pytest.fixture
def failover_setup() -> Iterator[SentinelSetup]:
    """A Sentinel setup of its own, for a test that kills its master."""
    setup = SentinelSetup(failover_timeout_ms=3000).start()
    try:
        yield setup
    finally:
        setup.cleanup()


@contextlib.asynccontextmanager
async def patient_queue(server: RedisServer, name: str,
                        retention: Retention | None = None) -> AsyncIterator[Queue]:
    """A queue whose client waits for long replies: one call over 100,000 jobs or a 50 MB
    value can take longer than redis-py's default socket timeout (5 s), after which the
    client would send the call again while the first still runs."""
    client = aioredis.Redis(host="127.0.0.1", port=server.port, socket_timeout=120)
    q = Queue(client, name=name, retention=retention)
    try:
        yield q
    finally:
        await q.obliterate(force=True)
        await q.close()
        await client.aclose()
