"""The queue's event stream: an async iterator for listeners, and the shared
listener that wakes :meth:`Job.result` waiters without polling."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._tasks import cancel_and_wait
from ..connection import AnyRedis

log = logging.getLogger("aiojobs_redis.events")

#: events after which a job's result can be read
FINAL_EVENTS = frozenset({b"completed", b"failed", b"cancelled", b"removed"})
_BLOCK_MS = 5000
_RECHECK_S = 5.0


class Event(msgspec.Struct, frozen=True):
    """One entry of a queue's event stream."""

    stream_id: str
    event: str  # added, active, progress, completed, failed, retrying, stalled, returned, ...
    job_id: str
    data: dict[str, bytes]  # further fields (e.g. 'progress', 'delay_ms')


def parse_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Event:
    data = {k.decode(): v for k, v in fields.items() if k not in (b"e", b"id")}
    return Event(entry_id.decode(), fields.get(b"e", b"").decode(),
                 fields.get(b"id", b"").decode(), data)


async def last_entry_id(client: AnyRedis, key: str) -> bytes:
    last: list[tuple[bytes, Any]] = await client.xrevrange(key, count=1)  # type: ignore[assignment]
    return last[0][0] if last else b"0-0"


async def iterate(
    client: AnyRedis, key: str, since: str = "$", block_ms: int = _BLOCK_MS
) -> AsyncIterator[Event]:
    """Yield events from ``since`` (an id, ``"0"`` for the whole stream, ``"$"`` for new ones)."""
    last: bytes | str = await last_entry_id(client, key) if since == "$" else since
    while True:
        reply: Any = await client.xread({key: last}, count=500, block=block_ms)
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                last = entry_id
                yield parse_entry(entry_id, fields)


class ResultListener:
    """One XREAD loop per queue that wakes everyone waiting for a job to finish.

    Waiters register *before* the job's state is read, and the loop reads from an
    id taken before any waiter registered, so no completion falls in between.
    Reads are batched: the states of all newly registered jobs, and the records of
    all jobs whose final event arrived, are fetched in one pipeline per batch, so
    thousands of waiters cost a handful of round trips and one connection. A slow
    re-check of every waiter covers events trimmed from the stream before they were
    read and outages of the blocking connection.
    """

    def __init__(
        self,
        client: AnyRedis,
        key: str,
        read: Callable[[list[str]], Awaitable[list[Any]]],
        finished: Callable[[Any], bool],
    ) -> None:
        self._client = client
        self._key = key
        self._read = read  # job ids -> their records (None: no such job), one round trip
        self._finished = finished  # record -> is it final?
        self._waiters: dict[str, tuple[asyncio.Future[Any], int]] = {}
        self._to_check: set[str] = set()
        self._checking = False
        self._checker: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(), name=f"ajr-results:{self._key}")
        assert self._ready is not None
        await asyncio.shield(self._ready)

    async def wait(self, job_id: str, timeout: float | None) -> Any:
        """The job's final record (None when the job does not exist); TimeoutError."""
        entry = self._waiters.get(job_id)
        if entry is None:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._waiters[job_id] = (fut, 1)
            self._check(job_id)
        else:
            fut = entry[0]
            self._waiters[job_id] = (fut, entry[1] + 1)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            entry = self._waiters.get(job_id)
            if entry is not None and entry[0] is fut:
                if entry[1] <= 1:
                    del self._waiters[job_id]
                else:
                    self._waiters[job_id] = (fut, entry[1] - 1)

    def _check(self, job_id: str) -> None:
        self._to_check.add(job_id)
        if not self._checking:
            self._checking = True
            asyncio.get_running_loop().call_soon(self._spawn_check)

    def _spawn_check(self) -> None:
        self._checker = asyncio.create_task(self._check_batch())

    async def _check_batch(self) -> None:
        try:
            while self._to_check:
                ids = [i for i in self._to_check if i in self._waiters]
                self._to_check.clear()
                if not ids:
                    break
                try:
                    records = await self._read(ids)
                except Exception as e:
                    for job_id in ids:
                        self._fail(job_id, e)
                    continue
                for job_id, record in zip(ids, records, strict=True):
                    if record is None or self._finished(record):
                        self._resolve(job_id, record)
        finally:
            self._checking = False
            if self._to_check:
                self._check(next(iter(self._to_check)))

    def _resolve(self, job_id: str, record: Any) -> None:
        entry = self._waiters.pop(job_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(record)

    def _fail(self, job_id: str, error: BaseException) -> None:
        entry = self._waiters.pop(job_id, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(error)

    async def close(self) -> None:
        if self._task is not None:
            task, self._task = self._task, None
            # its XREAD BLOCK can swallow one cancellation and loop into the next read
            # (a queue's close() hung for half an hour once): cancel until it ends
            await cancel_and_wait([task])
        for job_id in list(self._waiters):
            self._fail(job_id, asyncio.CancelledError())

    async def _run(self) -> None:
        assert self._ready is not None
        last: bytes | None = None
        outage = False
        loop = asyncio.get_running_loop()
        next_check = loop.time() + _RECHECK_S
        while True:
            try:
                if last is None:
                    last = await last_entry_id(self._client, self._key)
                    if not self._ready.done():
                        self._ready.set_result(None)
                reply: Any = await self._client.xread(
                    {self._key: last}, count=1000, block=int(_RECHECK_S * 1000)
                )
                for _stream, entries in reply or ():
                    for entry_id, fields in entries:
                        last = entry_id
                        if fields.get(b"e") in FINAL_EVENTS:
                            job_id = fields[b"id"].decode()
                            if job_id in self._waiters:
                                self._check(job_id)
                if outage or loop.time() >= next_check:
                    outage = False
                    next_check = loop.time() + _RECHECK_S
                    for job_id in list(self._waiters):
                        self._check(job_id)
            except (RedisConnectionError, RedisTimeoutError, OSError) as e:
                if not outage:
                    log.warning("result listener lost Redis (%s); retrying", e)
                outage = True
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("result listener failed; restarting it")
                await asyncio.sleep(0.5)
