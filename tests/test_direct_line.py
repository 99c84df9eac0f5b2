"""The producer's lean call path (aiojobs_redis/scripts/direct.py): one connection of the
client's pool, hiredis packing and parsing, the client's retry policy on a lost connection,
and nothing read twice when a call is cut short."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import JobState, Queue, RedisError, RedisOutOfMemory, task
from aiojobs_redis.connection import AnyRedis, client_from_url
from aiojobs_redis.scripts.direct import BUSY, DirectLine
from tests.conftest import wait_until


@task(name="direct.noop")
async def noop(i: int) -> int:
    return i


@pytest.fixture(params=["hiredis", "redis-py", "resp2"])
async def lean(request: pytest.FixtureRequest, redis_url: str,
               queue_name: str) -> AsyncIterator[Queue]:
    """A queue on a client as ``Queue.from_url`` makes it (RESP3 with redis-py 8; or RESP2),
    its line packing and parsing with hiredis or with the connection's own methods."""
    protocol = {"protocol": 2} if request.param == "resp2" else {}
    async with Queue(client_from_url(redis_url, **protocol), name=queue_name) as q:
        assert q._line is not None
        if request.param == "redis-py":
            q._line.use_hiredis = False
        try:
            yield q
        finally:
            await q.obliterate(force=True)
            await q.client.aclose()


async def _blocked(admin: AnyRedis) -> bool:
    """A client's command is held by Redis (a pause, or a blocking pop)."""
    return int((await admin.info("clients"))["blocked_clients"]) >= 1


async def _line_clients(client: aioredis.Redis, name: str) -> list[dict[str, str]]:
    return [c for c in await client.client_list() if c.get("name") == name]


async def test_enqueues_take_the_line(lean: Queue) -> None:
    jobs = [await lean.enqueue(noop, i) for i in range(50)]
    assert lean._line is not None and lean._line._conn is not None
    assert [(await j.info()).args for j in jobs[:3]] == [[0], [1], [2]]
    assert (await lean.counts())[JobState.WAITING] == 50
    mine = await lean.enqueue(noop.options(job_id="mine"), 0)
    again = await lean.enqueue(noop.options(job_id="mine"), 1)
    assert not mine.existed and again.existed and (await again.info()).args == [0]


async def test_a_killed_connection_is_made_again(lean: Queue) -> None:
    await lean.enqueue(noop, 0)
    assert lean._line is not None and lean._line._conn is not None
    await lean._line._conn.send_command("CLIENT", "SETNAME", "lean-line")
    assert await lean._line._conn.read_response() == b"OK"
    async with aioredis.Redis.from_url(_url(lean)) as admin:
        assert len(await _line_clients(admin, "lean-line")) == 1
        assert await admin.client_kill_filter(_type="normal", skipme=True) >= 1
        job = await lean.enqueue(noop, 1)  # the dead socket is found, the call sent again
        assert (await job.info()).state == JobState.WAITING
        assert not await _line_clients(admin, "lean-line")  # a new connection, unnamed
    assert (await lean.counts())[JobState.WAITING] == 2


async def test_a_call_cut_short_leaves_no_reply_behind(lean: Queue) -> None:
    """A cancelled call's reply must never be read as the next call's reply. Redis holds
    the first call (CLIENT PAUSE), which is cancelled while it waits; whatever became of
    it, the next call's reply must describe the next call."""
    async with aioredis.Redis.from_url(_url(lean)) as admin:
        await admin.client_pause(300, all=False)
        cut = asyncio.create_task(lean.enqueue(noop.options(job_id="a"), 0))
        await wait_until(lambda: lean._line is not None and lean._line._busy)
        await wait_until(lambda: _blocked(admin))  # written, and held by the pause
        cut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cut
    again = await lean.enqueue(noop.options(job_id="a"), 1)
    # applied before: found (args [0]); dropped with its connection: added now (args [1])
    assert (await again.info()).args == ([0] if again.existed else [1])
    third = await lean.enqueue(noop.options(job_id="b"), 2)
    assert not third.existed and (await third.info()).args == [2]


async def test_scripts_flushed_are_loaded_again(lean: Queue) -> None:
    await lean.enqueue(noop, 0)
    await lean.client.script_flush()
    await lean.enqueue(noop, 1)
    assert (await lean.counts())[JobState.WAITING] == 2


async def test_error_replies_become_library_errors(lean: Queue) -> None:
    await lean.client.set(lean.keys.seq, "not a number")
    with pytest.raises(RedisError, match="not an integer"):
        await lean.enqueue(noop, 0)
    await lean.client.delete(lean.keys.seq)
    await lean.enqueue(noop, 1)  # the line is still in step
    await lean.client.config_set("maxmemory", "1")
    try:
        with pytest.raises(RedisOutOfMemory):
            await lean.enqueue(noop, 2)
    finally:
        await lean.client.config_set("maxmemory", "0")
    assert (await lean.counts())[JobState.WAITING] == 1


async def test_close_gives_the_connection_back(redis_url: str, queue_name: str) -> None:
    client = client_from_url(redis_url, max_connections=2)
    try:
        for _ in range(3):  # three queues one after another on a pool of two
            async with Queue(client, name=queue_name) as q:
                await q.enqueue(noop, 0)
        assert (await Queue(client, name=queue_name).counts())[JobState.WAITING] == 3
    finally:
        await client.delete(*[k async for k in client.scan_iter(match=f"ajr:{{{queue_name}}}:*")])
        await client.aclose()


def test_only_plain_clients_take_the_line(redis_url: str) -> None:
    assert DirectLine.suits(client_from_url(redis_url))
    assert not DirectLine.suits(aioredis.Redis.from_url(redis_url, single_connection_client=True))
    assert DirectLine.suits(aioredis.Redis.from_url(redis_url, protocol=2))
    assert DirectLine.suits(aioredis.Redis.from_url(redis_url, protocol=3))
    assert Queue(client_from_url(redis_url), name="x", replicas=1)._line is None


def _url(queue: Queue) -> str:
    assert isinstance(queue.client, aioredis.Redis)
    kwargs = queue.client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}"


async def test_a_blocking_wait_cut_short_leaves_the_line_in_step(redis_url: str) -> None:
    """The idle wait (BZPOPMIN) goes on a line too: a wait cancelled while Redis holds it
    must not hand the next command the member it pops later."""
    client = client_from_url(redis_url)
    line = DirectLine(client)
    key = "ajr:{direct-block}:marker"
    try:
        waiting = asyncio.create_task(line.command("BZPOPMIN", key, 5))
        await wait_until(lambda: line._busy)
        assert await line.command("PING") is BUSY  # one command at a time: the client's turn
        await wait_until(lambda: _blocked(client))  # written, and held by Redis
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await client.zadd(key, {"first": 1})
        popped = await line.command("BZPOPMIN", key, 1)
        assert popped[:2] == [key.encode(), b"first"]  # the score: 1.0 (RESP3) or b"1"
        await client.zadd(key, {"second": 2})
        assert await line.command("ZRANGE", key, 0, -1) == [b"second"]
    finally:
        await line.close()
        await client.delete(key)
        await client.aclose()
