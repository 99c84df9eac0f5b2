"""The dashboard command's access log never shows a token, even one sent the old way
(``/?token=...``, which the app refuses): uvicorn logs the request line first."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path

import httpx

from aiojobs_redis import Queue
from aiojobs_redis._redis_server import free_port
from aiojobs_redis.cli.dashboard import redact_tokens

from .conftest import wait_until


def test_the_filter_redacts_every_token_parameter() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0,
                               '%s - "%s %s HTTP/%s" %d', ("127.0.0.1:1", "GET",
                               "/?token=s3cret&x=1;access_token=t0k#frag", "1.1", 400), None)
    assert redact_tokens(record)
    text = record.getMessage()
    assert "s3cret" not in text and "t0k" not in text
    assert "token=[redacted]&x=1" in text


async def test_a_token_in_the_url_stays_out_of_the_access_log(queue: Queue, redis_url: str,
                                                              tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    port = free_port()
    log_path = tmp_path / "dashboard.log"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AJR_DASHBOARD_TOKEN")}
    env["AJR_DASHBOARD_TOKEN"] = token
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiojobs_redis.cli.main", "dashboard", "--url", redis_url,
            "--queue", queue.name, "--port", str(port), stdout=log,
            stderr=asyncio.subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        async with httpx.AsyncClient() as http:
            async def up() -> bool:
                assert proc.returncode is None, log_path.read_text()
                try:
                    await http.get(url + "openapi.json")
                except httpx.TransportError:
                    return False
                return True

            await wait_until(up, timeout=20, interval=0.1)
            refused = await http.get(url, params={"token": token})
            assert refused.status_code == 400
            await wait_until(lambda: "token=[redacted]" in log_path.read_text(), timeout=5)
    finally:
        proc.terminate()
        await proc.wait()
    text = log_path.read_text()
    assert token not in text, text
