"""Script tests run twice: on a standalone server and on a cluster-mode server
(one node holding every slot; with #!lua scripts, Redis refuses undeclared keys
and cross-slot access there)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from aiojobs_redis import Queue
from aiojobs_redis._redis_server import RedisServer


@pytest.fixture(params=["standalone", pytest.param("cluster", marks=pytest.mark.cluster)])
async def squeue(
    request: pytest.FixtureRequest, redis_server: RedisServer, queue_name: str
) -> AsyncIterator[Queue]:
    if request.param == "cluster":
        server: RedisServer = request.getfixturevalue("cluster_server")
        client: Redis | RedisCluster = RedisCluster(host="127.0.0.1", port=server.port)
    else:
        client = Redis(host="127.0.0.1", port=redis_server.port)
    q = Queue(client, name=queue_name)
    try:
        yield q
    finally:
        await q.obliterate(force=True)
        await q.close()
        await client.aclose()
