"""A job's log and changing a waiting job's priority or delay, where operators reach them:
the HTTP API (the log in GET .../jobs/{id}; POST .../jobs/{id}/change and
.../job/change?id=, with the API's guards), the ``aiojobs-redis jobs show`` and ``jobs
change`` commands (a real process) and the dashboard in a real browser. Bad bodies,
unknown jobs and running or finished ones are refused and change nothing."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import FixedBackoff, Job, JobState, Queue, Worker, current_job, task
from aiojobs_redis.ops.web import create_app

from .conftest import wait_until
from .scripts import direct
from .test_cancel_surfaces import jobs_state
from .test_cli import arun, one_line_error
from .test_web import api_client
from .test_worker import running

ISO_MS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")
ISO_MS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
#: what the task "edit.chatty" logs: one line in its first attempt (which fails), two in
#: its second; the text is shown as text everywhere, never as HTML
LOGGED = [(1, "first <b>try</b>"), (2, "second try"), (2, "done: 3 lines\nand a second row")]


@task(name="edit.chatty", attempts=2, backoff=FixedBackoff(delay_s=0))
async def chatty() -> str:
    ctx = current_job()
    for attempt, text in LOGGED:
        if attempt == ctx.attempt:
            await ctx.log(text)
    if ctx.attempt == 1:
        raise ValueError("the first attempt fails")
    return "ok"


@task(name="edit.noop")
async def noop(x: Any) -> Any:
    return x


async def logged_job(queue: Queue) -> Job[Any]:
    """A completed job with the three lines of LOGGED, run by a worker."""
    job = await queue.enqueue(chatty)
    async with running(Worker(queue, tasks=[chatty], handle_signals=False,
                              shutdown_timeout_s=1)):
        assert await job.result(timeout=10) == "ok"
    return job


def url(queue: Queue, job_id: str, action: str = "") -> str:
    return f"/api/queues/{queue.name}/jobs/{quote(job_id, safe='')}" + (
        f"/{action}" if action else "")


# ------------------------------------------------------------------------------ HTTP


async def test_the_job_detail_shows_its_log_in_order(queue: Queue) -> None:
    job = await logged_job(queue)
    quiet = await queue.enqueue(noop, 1)
    async with api_client(create_app(queue, read_only=True)) as http:
        by_path = (await http.get(url(queue, job.id))).json()
        by_query = (await http.get(f"/api/queues/{queue.name}/job",
                                   params={"id": job.id})).json()
        assert (await http.get(url(queue, quiet.id))).json()["logs"] == []
    assert by_path == by_query
    assert by_path["state"] == "completed" and by_path["attempts"] == 2
    logs = by_path["logs"]
    assert [(line["attempt"], line["text"]) for line in logs] == LOGGED
    assert all(set(line) == {"at", "attempt", "text"} for line in logs)
    assert all(ISO_MS_UTC.fullmatch(line["at"]) for line in logs), logs
    assert [line["at"] for line in logs] == sorted(line["at"] for line in logs)
    written = await job.logs()
    assert [line["at"] for line in logs] == [
        w.at.isoformat(timespec="milliseconds") for w in written]


async def test_http_changes_the_priority_and_delay_of_waiting_jobs(queue: Queue) -> None:
    a, b, c = await queue.enqueue_many([noop.call("a"), noop.call("b"), noop.call("c")])
    async with api_client(create_app(queue, insecure_open=True)) as http:
        r = await http.post(url(queue, c.id, "change"), json={"priority": 10})
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "id": c.id, "action": "change", "state": "waiting"}
        assert await queue.job_ids(JobState.WAITING) == [c.id, a.id, b.id]

        before = datetime.now(UTC)
        r = await http.post(url(queue, a.id, "change"), json={"delay_s": 3600})
        assert r.status_code == 200 and r.json()["state"] == "delayed", r.text
        info = await a.info()
        assert info.state is JobState.DELAYED and info.due_at is not None
        assert abs(info.due_at - (before + timedelta(hours=1))) < timedelta(seconds=60)
        detail = (await http.get(url(queue, a.id))).json()
        assert detail["state"] == "delayed" and detail["due_at"] is not None

        # the query form, both at once: delayed -> waiting, with a new priority
        r = await http.post(f"/api/queues/{queue.name}/job/change", params={"id": a.id},
                            json={"priority": -5, "delay_s": 0})
        assert r.status_code == 200 and r.json()["state"] == "waiting", r.text
        info = await a.info()
        assert info.state is JobState.WAITING and info.priority == -5
        # a same-origin request (the dashboard's) may change; null stands for "not given"
        r = await http.post(url(queue, b.id, "change"), json={"priority": 3, "delay_s": None},
                            headers={"Origin": "http://testserver"})
        assert r.status_code == 200 and r.json()["state"] == "waiting", r.text
    assert await queue.job_ids(JobState.WAITING) == [c.id, b.id, a.id]
    assert (await b.info()).priority == 3


BAD_BODIES: list[tuple[bytes, str]] = [
    (b"", "JSON object"),
    (b"not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'"priority"', "JSON object"),
    (b"null", "JSON object"),
    (b"{}", "nothing to change"),
    (b'{"priority": null}', "nothing to change"),
    (b'{"prio": 1}', "unknown field"),
    (b'{"priority": 1, "delay": 5}', "unknown field"),
    (b'{"priority": "5"}', "priority must be an integer"),
    (b'{"priority": 1.5}', "priority must be an integer"),
    (b'{"priority": true}', "priority must be an integer"),
    (b'{"delay_s": "soon"}', "delay_s must be a number"),
    (b'{"delay_s": false}', "delay_s must be a number"),
    (b'{"delay_s": NaN}', "not JSON"),
    (b'{"delay_s": Infinity}', "not JSON"),
    (b'{"priority": 5000}', "-1000 to 1000"),
    (b'{"priority": -1001, "delay_s": 1}', "-1000 to 1000"),
    (b'{"delay_s": -1}', "delay_s"),
    (b'{"delay_s": 1e999}', "delay_s"),
    (b"[" * 5000, "larger than"),
    (b"[" * 900, "not JSON"),
    (b'{"priority": 1}\xff', "not JSON"),
]


async def test_bad_bodies_unknown_and_refused_jobs_change_nothing(
        queue: Queue, client: aioredis.Redis) -> None:
    done = await queue.enqueue(noop, "done")
    await Worker(queue, tasks=[noop], handle_signals=False).run(burst=True)
    busy = await queue.enqueue(noop, "busy")
    _, fetched = await direct.fetch(queue, 1, lease_ms=600_000)
    assert [j.id for j in fetched] == [busy.id]
    waiting = await queue.enqueue(noop, "waiting")
    before = await jobs_state(client, queue)
    query = f"/api/queues/{queue.name}/job/change"
    async with api_client(create_app(queue, insecure_open=True)) as http:
        for body, words in BAD_BODIES:
            for r in (await http.post(url(queue, waiting.id, "change"), content=body),
                      await http.post(query, params={"id": waiting.id}, content=body)):
                assert r.status_code == 400, (body[:40], r.text)
                error = r.json()["error"]
                assert error["code"] == "bad_body" and words in error["message"], (body, error)
        for r in (await http.post(url(queue, "no-such-job", "change"), json={"priority": 1}),
                  await http.post(query, params={"id": "no-such-job"}, json={"priority": 1})):
            assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
        for job, state in ((done, "completed"), (busy, "active")):
            r = await http.post(url(queue, job.id, "change"), json={"delay_s": 5})
            assert r.status_code == 409, r.text
            error = r.json()["error"]
            assert error["code"] == "wrong_state" and f"it is {state}" in error["message"]
        # an encoded slash is part of the id, never the separator of the action
        r = await http.post(f"/api/queues/{queue.name}/jobs/{waiting.id}%2Fchange",
                            json={"priority": 1})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert (await http.post(query, json={"priority": 1})).status_code == 400  # no ?id=
    async with api_client(create_app(queue, read_only=True)) as http:
        for r in (await http.post(url(queue, waiting.id, "change"), json={"priority": 1}),
                  await http.post(query, params={"id": waiting.id}, json={"priority": 1})):
            assert r.status_code == 403 and r.json()["error"]["code"] == "read_only", r.text
    async with api_client(create_app(queue, insecure_open=True)) as http:
        r = await http.post(url(queue, waiting.id, "change"), json={"priority": 1},
                            headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
    assert await jobs_state(client, queue) == before
    info = await waiting.info()
    assert info.state is JobState.WAITING and info.priority == 0


# ------------------------------------------------------------------------------- CLI


async def test_cli_shows_the_log_and_changes_a_waiting_job(queue: Queue,
                                                           redis_url: str) -> None:
    job = await logged_job(queue)
    argv = ("--url", redis_url, "--queue", queue.name)
    shown = await arun("jobs", "show", job.id, *argv)
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    lines = shown.stdout.splitlines()
    at = lines.index("logs:")
    # after the other fields (the traceback of the failed first attempt is the last one)
    assert lines.index("traceback:") < at and any(x.startswith("result ") for x in lines[:at])
    tail = lines[at + 1:]
    assert len(tail) == 4, tail  # the third line's text has two rows
    for (attempt, text), line in zip(LOGGED, [tail[0], tail[1], tail[2]], strict=True):
        stamp, rest = line.strip().split(" ", 1)
        assert ISO_MS_Z.fullmatch(stamp), line
        assert rest == f"[attempt {attempt}] {text.splitlines()[0]}", line
    assert tail[3].strip() == "and a second row" and tail[3].startswith(" " * 20)
    record = json.loads((await arun("jobs", "show", job.id, "--json", *argv)).stdout)
    assert [(x["attempt"], x["text"]) for x in record["logs"]] == LOGGED
    assert all(ISO_MS_Z.fullmatch(x["at"]) for x in record["logs"])

    waiting = await queue.enqueue(noop, 1)
    done = await arun("jobs", "change", waiting.id, *argv, "--priority", "7")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == f"{queue.name} {waiting.id}: changed (priority 7): waiting\n"
    done = await arun("jobs", "change", waiting.id, *argv, "--delay", "3600",
                      "--priority", "-2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"{queue.name} {waiting.id}: changed (priority -2, delay 3600 s):"
                           " delayed\n")
    info = await waiting.info()
    assert info.state is JobState.DELAYED and info.priority == -2
    shown = await arun("jobs", "show", waiting.id, *argv)
    assert "logs:" not in shown.stdout  # no log: no section
    rows = dict(line.split(None, 1) for line in shown.stdout.splitlines())
    assert rows["state"] == "delayed" and rows["priority"] == "-2"

    line = one_line_error(await arun("jobs", "change", job.id, *argv, "--delay", "0"), 1)
    assert f"job {job.id!r} is completed" in line and "waiting or delayed" in line
    line = one_line_error(await arun("jobs", "change", "nope", *argv, "--priority", "1"), 1)
    assert f"no job 'nope' in queue {queue.name!r}" in line
    for bad in ([], ["--priority", "5000"], ["--priority", "1.5"], ["--delay", "-1"],
                ["--delay", "nan"]):
        one_line_error(await arun("jobs", "change", waiting.id, *argv, *bad), 2)
    one_line_error(await arun("jobs", "change", "a b", *argv, "--priority", "1"), 2)
    assert (await waiting.info()).priority == -2  # nothing changed


# --------------------------------------------------------------------------- browser


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(importlib.util.find_spec("playwright") is None
                    or not os.path.exists(CHROMIUM),
                    reason="needs Playwright for Python and Chromium (see test_dashboard_browser)")
async def test_the_dashboard_shows_the_log_and_changes_a_job(queue: Queue) -> None:
    from .test_dashboard_browser import chromium, serving

    job = await logged_job(queue)
    waiting = await queue.enqueue(noop, 1)
    async with serving(create_app(queue, insecure_open=True)) as base, chromium() as browser:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(base)
        await page.locator('#state-tabs button[data-state="completed"]').click(timeout=10_000)
        await page.locator(f'tr[data-job-id="{job.id}"] td.id').click(timeout=10_000)
        await page.locator("#detail-logs tr.log-line").nth(2).wait_for(timeout=10_000)
        texts = await page.locator("#detail-logs td.log-text").all_text_contents()
        assert texts == [text for _, text in LOGGED]
        attempts = await page.locator("#detail-logs td.log-attempt").all_text_contents()
        assert attempts == ["#1", "#2", "#2"]
        assert await page.locator("#detail-logs b").count() == 0  # text, not HTML
        assert await page.locator("#detail-change").is_hidden()  # a finished job

        await page.locator('#state-tabs button[data-state="waiting"]').click()
        await page.locator(f'tr[data-job-id="{waiting.id}"] td.id').click(timeout=10_000)
        await page.locator("#detail-change").wait_for(state="visible", timeout=10_000)
        await page.locator("#change-priority").fill("12")
        await page.locator("#change-delay").fill("3600")
        await page.locator("#change-submit").click()

        async def delayed() -> bool:
            return await waiting.state() is JobState.DELAYED

        await wait_until(delayed, timeout=10)
        await page.wait_for_function(
            "() => document.getElementById('status').textContent.includes('now delayed')",
            timeout=10_000)
        assert not errors, f"JavaScript errors: {errors}"
    info = await waiting.info()
    assert info.state is JobState.DELAYED and info.priority == 12
