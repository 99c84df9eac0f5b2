"""Live workers are visible; dead ones disappear; a health command for probes."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aiojobs_redis import Queue, live_workers
from aiojobs_redis._redis_server import RedisServer

from ..conftest import wait_until
from ..invariants import check_invariants
from .procs import FACT_S, ROOT, SCENARIO_TIMEOUT_S, alive, kill, start_worker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(SCENARIO_TIMEOUT_S)]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aiojobs_redis", "--log-level", "ERROR", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=FACT_S, check=False)


async def test_live_workers_and_health_probe(redis_server: RedisServer, queue: Queue,
                                             tmp_path: Path) -> None:
    """Invariant: a live worker is listed with its id, host, pid, queues, active jobs and
    heartbeat; `health` exits 0 while one serves the queue; a SIGKILLed worker disappears
    after its lease and `health` then exits 1."""
    url = redis_server.url
    assert cli("health", "--url", url, "--queue", queue.name).returncode == 1
    log = tmp_path / "w.log"
    proc = start_worker(url, queue.name, log=log, lease_ms=1500)
    try:
        await wait_until(lambda: alive(proc, log=log) and live_workers(queue.client, queue.keys),
                         timeout=FACT_S)
        [info] = await live_workers(queue.client, queue.keys)
        assert info.pid == proc.pid and info.queues == [queue.name] and info.active == 0
        assert info.heartbeat_at > 0 and info.host
        listed = cli("workers", "--url", url, "--queue", queue.name)
        assert listed.returncode == 0 and str(proc.pid) in listed.stdout
        healthy = cli("health", "--url", url, "--queue", queue.name)
        assert healthy.returncode == 0 and healthy.stdout.startswith("OK: 1 live worker")
        kill(proc, signal.SIGKILL)
        await wait_until(lambda: _none_alive(queue), timeout=FACT_S)
        unhealthy = cli("health", "--url", url, "--queue", queue.name)
    finally:
        kill(proc)
    print(f"\nworker pid {proc.pid} listed while alive; after SIGKILL: {unhealthy.stdout.strip()}")
    assert unhealthy.returncode == 1 and "UNHEALTHY" in unhealthy.stdout
    await check_invariants(queue.client, queue.keys)  # the worker is gone


async def _none_alive(queue: Queue) -> bool:
    return not await live_workers(queue.client, queue.keys)
