"""The dashboard in a real browser, over queues on three shards of a cluster."""

from __future__ import annotations

import asyncio

from aiojobs_redis import JobState, Queue, Worker
from aiojobs_redis.ops.web import create_app
from tests.conftest import wait_until
from tests.test_dashboard_browser import boom_fixed, chromium, serving
from tests.test_web import ok, populate


async def test_dashboard_on_a_cluster_shows_counts_and_retries(
        shard_queues: list[Queue]) -> None:
    q = shard_queues[1]
    ids = await populate(q)
    counts = await q.counts()
    app = create_app(shard_queues, insecure_open=True)
    async with serving(app) as url, chromium() as browser:
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(url)
        await page.wait_for_selector("body[data-loaded]")
        for other in shard_queues:  # one button per queue, whichever shard holds it
            await page.locator(f'button[data-queue="{other.name}"]').wait_for(timeout=10_000)
        await page.locator(f'button[data-queue="{q.name}"]').click()
        for state in JobState:
            await page.wait_for_function(
                "([id, n]) => (document.getElementById(id) || {}).textContent === n",
                arg=[f"count-{state}", f"{counts[state]:,}"], timeout=10_000)
        failed_id = ids["failed"][0]
        row = page.locator(f'tr[data-job-id="{failed_id}"]')
        await row.wait_for(timeout=10_000)
        worker = Worker(q, tasks=[ok, boom_fixed], handle_signals=False)
        runner = asyncio.create_task(worker.run())
        try:
            await row.locator("button.retry").click()

            async def ran() -> bool:
                info = await q.job_info(failed_id)
                return info is not None and info.state is JobState.COMPLETED

            await wait_until(ran, timeout=15)
        finally:
            worker.stop()
            await asyncio.wait_for(runner, 30)
        assert not errors, f"JavaScript errors: {errors}"
