"""A flow as operators see it: the HTTP API's job detail and the dashboard show what a job
waits for (and how each ended) and what waits for it."""

from __future__ import annotations

import importlib.util
import os
import shutil
from urllib.parse import quote

import pytest

from aiojobs_redis import Flow, JobOptions, JobState, Queue, TaskCall
from aiojobs_redis.ops.web import create_app

from .test_web import api_client

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


async def small_flow(queue: Queue) -> dict[str, str]:
    """first (delayed) <- middle <- last, and last also waits for a job that failed."""
    flow = Flow()
    first = flow.add(TaskCall.by_name("t", options=_delayed()))
    middle = flow.add(TaskCall.by_name("t"), after=[first])
    bad = flow.add(TaskCall.by_name("t", options=_delayed()))
    last = flow.add(TaskCall.by_name("t"), after=[middle, (bad, "continue")])
    await queue.enqueue_flow(flow)
    await queue.cancel_job(bad.job_id, by="ops")  # 'continue': last still waits for middle
    return {"first": first.job_id, "middle": middle.job_id, "bad": bad.job_id,
            "last": last.job_id}


def _delayed() -> JobOptions:
    return JobOptions(delay_s=3600)


def url(queue: Queue, job_id: str) -> str:
    return f"/api/queues/{quote(queue.name)}/jobs/{quote(job_id)}"


async def test_the_job_detail_shows_its_flow(queue: Queue) -> None:
    ids = await small_flow(queue)
    async with api_client(create_app(queue, insecure_open=True)) as http:
        last = (await http.get(url(queue, ids["last"]))).json()
        middle = (await http.get(url(queue, ids["middle"]))).json()
        plain = (await http.get(url(queue, ids["first"]))).json()
        assert (await http.get(f"/api/queues/{quote(queue.name)}/jobs?state=blocked"
                               )).json()["total"] == 2
    assert last["state"] == "blocked"
    assert last["flow"] == {
        "dependencies": 2, "pending": 1, "waited_for_by": [],
        "waits_for": [{"id": ids["middle"], "state": "pending", "error": None},
                      {"id": ids["bad"], "state": "cancelled", "error": "cancelled by ops"}]}
    assert middle["flow"]["waited_for_by"] == [ids["last"]]
    assert plain["flow"] == {"dependencies": 0, "pending": 0, "waits_for": [],
                             "waited_for_by": [ids["middle"]]}
    assert (await queue.counts())[JobState.BLOCKED] == 2


@pytest.mark.skipif(importlib.util.find_spec("playwright") is None
                    or not os.path.exists(CHROMIUM),
                    reason="needs Playwright for Python and Chromium (see test_dashboard_browser)")
async def test_the_dashboard_shows_a_blocked_job_and_what_it_waits_for(queue: Queue) -> None:
    from .test_dashboard_browser import chromium, serving

    ids = await small_flow(queue)
    async with serving(create_app(queue, insecure_open=True)) as base, chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(base)
        await page.locator('#state-tabs button[data-state="blocked"]').click(timeout=10_000)
        await page.locator(f'tr[data-job-id="{ids["last"]}"] td.id').click(timeout=10_000)
        await page.locator("#detail-flow tr.flow-dep").nth(1).wait_for(timeout=10_000)
        rows = [await page.locator("#detail-flow tr.flow-dep").nth(i).locator("td")
                .all_text_contents() for i in range(2)]
        assert rows == [["waits for", ids["middle"], "pending", ""],
                        ["waits for", ids["bad"], "cancelled", "cancelled by ops"]]
        summary = await page.locator("#detail-flow-summary").text_content()
        assert summary == "waits for 2 job(s), 1 not finished; 0 job(s) wait for it"
        assert not errors, f"JavaScript errors: {errors}"
