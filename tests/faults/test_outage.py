"""Redis unreachable for about ten seconds: workers survive and say so once; producers
get a clear error; everything resumes by itself."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from aiojobs_redis import Queue, RedisUnavailable
from aiojobs_redis._redis_server import RedisServer

from ..conftest import wait_until
from ..invariants import check_invariants
from .app import work
from .history import check_history
from .procs import FACT_S, SCENARIO_TIMEOUT_S, alive, kill, start_worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(SCENARIO_TIMEOUT_S)]


async def test_ten_second_outage(tmp_path: Path) -> None:
    """Invariant: the worker process lives through a 10 s outage, logs it a bounded
    number of times (not once per job or per retry), and finishes every job afterwards;
    a producer call during the outage raises RedisUnavailable."""
    server = RedisServer(appendonly=True, appendfsync="everysec").start(timeout_s=FACT_S)
    log = tmp_path / "worker.log"
    worker = start_worker(server.url, "outage", log=log, lease_ms=30_000, concurrency=10)
    try:
        async with Queue.from_url(server.url, name="outage") as queue:
            before = await queue.enqueue_many([work.call(0.01) for _ in range(200)])
            await wait_until(lambda: alive(worker, log=log) and _completed(queue, 200),
                             timeout=FACT_S)
            server.stop()  # clean stop: the AOF keeps everything; returns once it is gone
            outage_ends = asyncio.get_running_loop().time() + 10
            with pytest.raises(RedisUnavailable):
                await queue.enqueue(work, 0.01)
            await asyncio.sleep(outage_ends - asyncio.get_running_loop().time())
            assert worker.poll() is None, "the worker process survived the outage"
            server.start(timeout_s=FACT_S)
            after = await queue.enqueue_many([work.call(0.01) for _ in range(200)])
            await wait_until(lambda: _completed(queue, 400), timeout=FACT_S)
            history = await check_history(queue, queue.client, [j.id for j in before + after])
            kill(worker, signal.SIGTERM)
            await check_invariants(queue.client, queue.keys)
    finally:
        kill(worker, signal.SIGTERM)
        server.cleanup()
    text = log.read_text()
    outage_lines = [line for line in text.splitlines()
                    if "unreachable" in line.lower() or "failed (" in line]
    print(f"\n10 s outage: worker alive, {len(outage_lines)} outage log line(s), "
          f"{history.summary()}")
    assert len(outage_lines) <= 8, "\n".join(outage_lines[:20])
    assert "Redis is back" in text


async def _completed(queue: Queue, n: int) -> bool:
    from aiojobs_redis import JobState

    return (await queue.counts())[JobState.COMPLETED] >= n
