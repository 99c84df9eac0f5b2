"""The cluster tier: user-facing features on a real cluster of 3 primaries + 3 replicas
(started once per session; about 3 s). Every test here is marked ``cluster``."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from aiojobs_redis import Queue
from aiojobs_redis._redis_server import ClusterSetup as Cluster
from aiojobs_redis.connection import AnyRedis, client_from_url
from aiojobs_redis.keys import spread_queue_names


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    cluster = Cluster(primaries=3, replicas=1).start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
async def cluster_client(redis_cluster: Cluster) -> AsyncIterator[AnyRedis]:
    client = client_from_url(redis_cluster.url, cluster=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def shard_queues(cluster_client: AnyRedis,
                       redis_cluster: Cluster) -> AsyncIterator[list[Queue]]:
    """Three queues, one on each primary."""
    names = spread_queue_names(f"c{secrets.token_hex(3)}", 3)
    queues = [Queue(cluster_client, name=n) for n in names]
    owners = {redis_cluster.primary_for(q.keys.wait).port for q in queues}
    assert len(owners) == 3, "spread_queue_names should put 3 queues on 3 shards"
    try:
        yield queues
    finally:
        for q in queues:
            await q.obliterate(force=True)
            await q.close()
