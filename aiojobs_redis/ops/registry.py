"""Live workers: heartbeats written by each worker, read by ``aiojobs-redis workers``.

A worker's record is a key with a TTL of twice its lease, so a dead worker
disappears by itself; the per-queue ZSET indexes them by the time their record
expires, and is pruned by every live worker's heartbeat and on read.
"""

from __future__ import annotations

import msgspec

from ..connection import AnyRedis
from ..keys import QueueKeys


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A live worker as its heartbeat describes it: id, host, pid, the queues it serves,
    its running jobs and counts (see :func:`live_workers`)."""

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    active: int
    started_at: float  # unix seconds (the worker's clock)
    heartbeat_at: float  # unix seconds (the worker's clock)
    lease_ms: int
    processed: int = 0
    failed: int = 0
    #: sync handlers' threads still running after their job gave up on them (a timeout):
    #: they keep their slots until they end
    abandoned_threads: int = 0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WorkerInfo)


def expires_ms(now_s: float, lease_ms: int) -> int:
    """When a heartbeat written at ``now_s`` expires (its score in the ``workers`` ZSET)."""
    return int(now_s * 1000) + 2 * lease_ms


def encode(info: WorkerInfo) -> bytes:
    return _encoder.encode(info)


async def live_workers(client: AnyRedis, keys: QueueKeys) -> list[WorkerInfo]:
    """Workers serving this queue whose heartbeat has not expired."""
    ids: list[bytes] = await client.zrange(keys.workers, 0, -1)  # type: ignore[assignment]
    if not ids:
        return []
    names = [i.decode() for i in ids]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(keys.worker(name))
    records = await pipe.execute()
    alive: list[WorkerInfo] = []
    dead: list[str] = []
    for name, record in zip(names, records, strict=True):
        if record is None:
            dead.append(name)
            continue
        try:
            alive.append(_decoder.decode(record))
        except msgspec.DecodeError:
            dead.append(name)
    if dead:
        await client.zrem(keys.workers, *dead)
    return alive
