"""The dashboard in a real headless Chromium (Playwright), served by uvicorn on a free
loopback port: counts match Redis, retrying a failed job makes it run, a screenshot."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiojobs_redis import JobState, Queue, Worker, task
from aiojobs_redis._redis_server import free_port
from aiojobs_redis.ops.web import create_app

from .conftest import wait_until
from .test_web import ok, populate

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright for Python is not installed (pip install playwright)"
)
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="no Chromium at /usr/bin/chromium (apt-get install -y chromium)",
)
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@task(name="boom")
async def boom_fixed(x: int) -> int:
    """The failing task, fixed: what a retry after a deploy runs."""
    return x


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off")
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    runner = asyncio.create_task(server.serve())
    try:
        await wait_until(lambda: server.started or runner.done(), timeout=10)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await asyncio.wait_for(runner, 10)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_dashboard_shows_counts_and_retries_a_failed_job(queue: Queue,
                                                              tmp_path: Path) -> None:
    ids = await populate(queue)
    counts = await queue.counts()
    async with serving(create_app(queue)) as url, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(url)
        await page.wait_for_selector("body[data-loaded]")
        for state in JobState:
            await page.wait_for_function(
                "([id, n]) => document.getElementById(id).textContent === n",
                arg=[f"count-{state}", f"{counts[state]:,}"], timeout=10_000,
            )
        failed_id = ids["failed"][0]
        row = page.locator(f'tr[data-job-id="{failed_id}"]')
        await row.wait_for(timeout=10_000)
        # the failed job's traceback is one click away, shown as text
        await row.locator("td.id").click()
        await page.wait_for_function(
            "() => document.getElementById('detail-traceback').textContent"
            ".includes('ValueError: boom')", timeout=10_000)

        worker = Worker(queue, tasks=[ok, boom_fixed], handle_signals=False)
        runner = asyncio.create_task(worker.run())
        try:
            await row.locator("button.retry").click()

            async def ran() -> bool:
                info = await queue.job_info(failed_id)
                return info is not None and info.state is JobState.COMPLETED

            await wait_until(ran, timeout=15)
            await page.wait_for_function(
                "() => document.getElementById('count-failed').textContent === '1'",
                timeout=10_000)
            await page.locator(f'tr[data-worker-id="{worker.id}"]').wait_for(timeout=15_000)
            await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            worker.stop()
            await asyncio.wait_for(runner, 30)
        assert not errors, f"JavaScript errors: {errors}"
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


async def test_payload_text_is_never_rendered_as_html(queue: Queue, tmp_path: Path) -> None:
    evil = '<img src=x onerror="document.title=\'pwned\'"><b id="injected">x</b>'
    job = await queue.enqueue("boom", evil)
    await queue.enqueue(ok, 1)
    from .scripts import direct

    _, fetched = await direct.fetch(queue, 1, lease_ms=600_000)
    await direct.fail(queue, fetched[0], -1)
    await queue.client.hset(queue.keys.job(job.id), "error", evil)
    async with serving(create_app(queue)) as url, chromium() as browser:
        page = await browser.new_page()
        await page.goto(url)
        row = page.locator(f'tr[data-job-id="{job.id}"]')
        await row.wait_for(timeout=10_000)
        await row.locator("td.id").click()
        await page.wait_for_function(
            "() => document.getElementById('detail-args').textContent.includes('onerror')",
            timeout=10_000)
        assert await page.locator("#injected").count() == 0
        assert await page.title() == "aiojobs_redis"
        assert evil in (await row.locator("td.err").text_content() or "")
