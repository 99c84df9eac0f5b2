"""The dashboard in a real headless Chromium (Playwright), served by uvicorn on a free
loopback port: counts match Redis, retrying a failed job makes it run, a screenshot; the
Remove button of a hostile job id removes that job only; the token of the real
``aiojobs-redis dashboard`` command never reaches its access log; a state added to the
state table shows up with no change to the static files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiojobs_redis import JobState, Queue, Worker, task
from aiojobs_redis._redis_server import free_port
from aiojobs_redis.ops.web import create_app
from aiojobs_redis.states import STATE_SETS

from .conftest import wait_until
from .dashboard_process import dashboard_command
from .test_web import failed_jobs, ok, populate

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
    async with serving(create_app(queue, insecure_open=True)) as url, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(url)
        await page.wait_for_selector("body[data-loaded]")
        for state in JobState:
            await page.wait_for_function(
                "([id, n]) => (document.getElementById(id) || {}).textContent === n",
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
                "() => (document.getElementById('count-failed') || {}).textContent === '1'",
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
    async with serving(create_app(queue, insecure_open=True)) as url, chromium() as browser:
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


async def test_remove_button_of_a_hostile_job_id_removes_that_job(queue: Queue) -> None:
    """A job named 'x/../victim': its Remove button used to send DELETE .../jobs/x/../victim,
    which the browser resolves to .../jobs/victim. Now every id is one path segment
    ('/' as %2F), and '.' and '..' (dot segments even as %2E) go in the query string."""
    hostile = ["x/../victim", "..", "../../victim", "a?b#c%2F..%2Fvictim"]
    await failed_jobs(queue, ["victim", "y/../victim", *hostile])
    async with serving(create_app(queue, insecure_open=True)) as url, chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.goto(url)
        for job_id in hostile:
            row = page.locator(f'tr[data-job-id="{job_id}"]')
            await row.locator("button.remove").click(timeout=10_000)

            async def acted(job_id: str = job_id) -> bool:
                return (await queue.job_info(job_id) is None
                        or await queue.job_info("victim") is None)

            await wait_until(acted, timeout=10)
            assert await queue.job_info("victim") is not None, f"Remove {job_id!r} removed victim"
            assert await queue.job_info(job_id) is None, job_id
            await row.wait_for(state="detached", timeout=10_000)
        # the detail of a hostile id is that job's own
        await page.locator('tr[data-job-id="y/../victim"] td.id').click()
        await page.wait_for_function(
            "() => document.getElementById('detail-title').textContent === 'boom · y/../victim'",
            timeout=10_000)
        assert not errors, f"JavaScript errors: {errors}"
    assert sorted(await queue.job_ids(JobState.FAILED)) == ["victim", "y/../victim"]


async def test_the_token_never_reaches_the_access_log(queue: Queue, redis_url: str,
                                                      tmp_path: Path) -> None:
    """The real command (``aiojobs-redis dashboard``, uvicorn's access log on) with a
    token: the page is opened as /#token=..., authenticates, changes a job; the log shows
    every request and never the token."""
    await failed_jobs(queue, ["job-a", "job-b"])
    token = secrets.token_urlsafe(24)
    log_path = tmp_path / "dashboard.log"
    async with dashboard_command(redis_url, queue.name, token, log_path) as url:
        async with httpx.AsyncClient() as http:
            assert (await http.get(url + "api/queues")).status_code == 401
        async with chromium() as browser:
            # without the token: the page loads, the API says 401 and how to get in
            anonymous = await browser.new_page()
            await anonymous.goto(url)
            await anonymous.wait_for_function(
                "() => document.getElementById('status').textContent.includes('#token=')",
                timeout=10_000)
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{url}#token={token}")
            await page.wait_for_function(
                "() => (document.getElementById('count-failed') || {}).textContent === '2'",
                timeout=10_000)
            assert token not in page.url  # dropped from the address bar
            row = page.locator('tr[data-job-id="job-a"]')
            await row.locator("button.retry").click()

            async def retried() -> bool:
                return await queue.job("job-a").state() is JobState.WAITING

            await wait_until(retried, timeout=10)
            await page.reload()  # the tab keeps the token (sessionStorage), not the URL
            await page.wait_for_function(
                "() => (document.getElementById('count-failed') || {}).textContent === '1'",
                timeout=10_000)
            assert not errors, f"JavaScript errors: {errors}"
    text = log_path.read_text()
    assert f"aiojobs-redis dashboard on {url}#token=<your token>" in text
    assert '"GET /api/queues HTTP/1.1" 200' in text  # the access log is on
    assert f'"POST /api/queues/{queue.name}/jobs/job-a/retry HTTP/1.1" 200' in text
    assert token not in text


async def test_a_new_state_shows_up_without_touching_the_static_files(
        queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard builds its counts and tabs from the API's list of states: a state
    added to aiojobs_redis.states.STATE_SETS (here 'parked', another name for the delayed
    set) gets its count and its tab, and the tab lists its jobs."""
    ids = await populate(queue)
    table: dict[Any, str] = STATE_SETS
    monkeypatch.setitem(table, "parked", "delayed")
    async with serving(create_app(queue, insecure_open=True)) as url, chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(url)
        await page.wait_for_function(
            "() => (document.getElementById('count-parked') || {}).textContent === '2'",
            timeout=10_000)
        labels = await page.locator("#state-cards .label").all_text_contents()
        assert labels == [str(s) for s in STATE_SETS]
        tabs = await page.locator("#state-tabs button").all_text_contents()
        assert [t.split(" (")[0] for t in tabs] == labels
        await page.locator('#state-tabs button[data-state="parked"]').click()
        for job_id in ids["delayed"]:
            await page.locator(f'tr[data-job-id="{job_id}"]').wait_for(timeout=10_000)
        assert not errors, f"JavaScript errors: {errors}"
