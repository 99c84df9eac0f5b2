"""The dashboard command's access log never shows a token, even one sent the old way
(``/?token=...``, which the app refuses): uvicorn logs the request line first."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import httpx

from aiojobs_redis import Queue
from aiojobs_redis.cli.dashboard import redact_tokens

from .conftest import wait_until
from .dashboard_process import dashboard_command


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
    log_path = tmp_path / "dashboard.log"
    async with dashboard_command(redis_url, queue.name, token, log_path) as url, \
            httpx.AsyncClient() as http:
        refused = await http.get(url, params={"token": token})
        assert refused.status_code == 400
        await wait_until(lambda: "token=[redacted]" in log_path.read_text(), timeout=5)
    text = log_path.read_text()
    assert token not in text, text
