"""The real ``aiojobs-redis dashboard`` command in a process of its own, its output in a
log file, for the tests that read what it logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from aiojobs_redis._redis_server import free_port

from .conftest import wait_until


@contextlib.asynccontextmanager
async def dashboard_command(redis_url: str, queue: str, token: str,
                            log_path: Path) -> AsyncIterator[str]:
    """Run the command with ``token`` (from the environment, as documented) until the
    block ends; yields its URL once it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AJR_DASHBOARD_TOKEN")}
    env["AJR_DASHBOARD_TOKEN"] = token
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiojobs_redis.cli.main", "dashboard", "--url", redis_url,
            "--queue", queue, "--port", str(port), stdout=log,
            stderr=asyncio.subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        async with httpx.AsyncClient() as http:
            async def up() -> bool:
                assert proc.returncode is None, "the dashboard command ended (see its log)"
                try:
                    await http.get(url + "openapi.json")
                except httpx.TransportError:
                    return False
                return True

            await wait_until(up, timeout=20, interval=0.1)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
