"""Redriving a dead-letter queue where operators reach it: the HTTP API (POST
.../redrive, with the API's guards, and ``origin`` in a job's detail), the ``aiojobs-redis
redrive`` command (a real process) and the dashboard's Redrive button in a real browser.
Jobs fail for good in a queue that has a dead-letter queue, a worker moves them there,
and redrive sends them back; bad bodies and refused requests change nothing."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import JobState, Queue, Worker, task
from aiojobs_redis.ops.web import create_app

from .conftest import wait_until
from .test_cli import arun, closed_url, one_line_error
from .test_web import api_client, redis_state


@task(name="redrive.a", attempts=1)
async def fail_a(n: int) -> None:
    raise ValueError(f"a broke on {n}")


@task(name="redrive.b", attempts=1)
async def fail_b(n: int) -> None:
    raise RuntimeError(f"b timed out on {n}")


Pair = tuple[Queue, Queue]


@pytest.fixture
async def pair(client: aioredis.Redis, queue_name: str) -> AsyncIterator[Pair]:
    """A queue with a dead-letter queue, on the test's own Redis; both emptied after."""
    origin = Queue(client, name=queue_name, dead_letter=f"{queue_name}.dead")
    dead = origin.dead_letter_queue()
    assert dead is not None
    try:
        yield origin, dead
    finally:
        for q in (origin, dead):
            await q.obliterate(force=True)
            await q.close()


async def dead_lettered(origin: Queue, dead: Queue, a: int = 3, b: int = 2) -> None:
    """``a`` jobs of redrive.a and ``b`` of redrive.b fail for good in ``origin``; a burst
    worker moves them into ``dead``."""
    await origin.enqueue_many([*(fail_a.call(i) for i in range(a)),
                               *(fail_b.call(i) for i in range(b))])
    await Worker(origin, tasks=[fail_a, fail_b], handle_signals=False).run(burst=True)
    assert await counts(origin) == (0, 0)
    assert await counts(dead) == (0, a + b)


async def counts(queue: Queue) -> tuple[int, int]:
    """(waiting, failed) of a queue."""
    c = await queue.counts()
    return c[JobState.WAITING], c[JobState.FAILED]


async def both_states(client: aioredis.Redis, origin: Queue, dead: Queue) -> Any:
    return await redis_state(client, origin), await redis_state(client, dead)


# ------------------------------------------------------------------------------ HTTP


async def test_http_redrive_by_task_then_everything(pair: Pair) -> None:
    origin, dead = pair
    await dead_lettered(origin, dead)
    redrive = f"/api/queues/{dead.name}/redrive"
    async with api_client(create_app([origin, dead], insecure_open=True)) as http:
        listed = (await http.get(f"/api/queues/{dead.name}/jobs",
                                 params={"state": "failed"})).json()["jobs"]
        by_task: dict[str, set[str]] = {}
        for job in listed:
            by_task.setdefault(job["task"], set()).add(job["id"])
        assert {k: len(v) for k, v in by_task.items()} == {"redrive.a": 3, "redrive.b": 2}
        b_ids = by_task["redrive.b"]
        one = sorted(b_ids)[0]
        detail = (await http.get(f"/api/queues/{dead.name}/jobs/{one}")).json()
        assert detail["origin"] == origin.name and detail["state"] == "failed"
        assert "b timed out" in detail["error"]
        by_query = (await http.get(f"/api/queues/{dead.name}/job", params={"id": one})).json()
        assert by_query["origin"] == origin.name

        r = await http.post(redrive, json={"task": "redrive.b"})
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "action": "redrive", "redriven": 2}
        assert await counts(origin) == (2, 0) and await counts(dead) == (0, 3)
        assert set(await origin.job_ids(JobState.WAITING)) == b_ids
        back = (await http.get(f"/api/queues/{origin.name}/jobs/{one}")).json()
        assert back["state"] == "waiting" and back["attempts"] == 0
        assert back["origin"] is None  # a new job in its own queue

        # a filter nothing matches, null fields, the error filter and a limit
        r = await http.post(redrive, json={"task": "redrive.b", "error": None})
        assert r.status_code == 200 and r.json()["redriven"] == 0, r.text
        r = await http.post(redrive, json={"error": "a broke", "limit": 1})
        assert r.status_code == 200 and r.json()["redriven"] == 1, r.text
        assert await counts(origin) == (3, 0) and await counts(dead) == (0, 2)

        # no body: every job; the counts the API gives agree
        r = await http.post(redrive, headers={"Origin": "http://testserver"})
        assert r.status_code == 200 and r.json()["redriven"] == 2, r.text
        queues = {q["name"]: q["counts"] for q in (await http.get("/api/queues")).json()["queues"]}
        assert queues[origin.name]["waiting"] == 5 and queues[origin.name]["failed"] == 0
        assert queues[dead.name]["failed"] == 0
        r = await http.post(redrive)
        assert r.status_code == 200 and r.json()["redriven"] == 0, r.text

        # only a queue the app serves
        r = await http.post("/api/queues/not-served/redrive")
        assert r.status_code == 404 and r.json()["error"]["code"] == "queue_not_found"
    assert await counts(origin) == (5, 0) and await counts(dead) == (0, 0)

    # they run again in their origin (and, failing again, go back to the dead letters)
    await Worker(origin, tasks=[fail_a, fail_b], handle_signals=False).run(burst=True)
    assert await counts(origin) == (0, 0) and await counts(dead) == (0, 5)


BAD_BODIES: list[tuple[bytes, str]] = [
    (b"not json", "not JSON"),
    (b"null", "JSON object"),
    (b"[]", "JSON object"),
    (b'"redrive.a"', "JSON object"),
    (b"5", "JSON object"),
    (b'{"tsk": "redrive.a"}', "unknown field"),
    (b'{"task": "redrive.a", "state": "failed"}', "unknown field"),
    (b'{"task": 5}', "task must be a string"),
    (b'{"task": ""}', "task must be a string"),
    (b'{"task": "' + b"t" * 201 + b'"}', "task must be a string"),
    (b'{"error": ["a"]}', "error must be a string"),
    (b'{"error": ""}', "error must be a string"),
    (b'{"limit": 0}', "limit must be an integer"),
    (b'{"limit": -1}', "limit must be an integer"),
    (b'{"limit": 1000001}', "limit must be an integer"),
    (b'{"limit": 1.5}', "limit must be an integer"),
    (b'{"limit": 2.0}', "limit must be an integer"),
    (b'{"limit": true}', "limit must be an integer"),
    (b'{"limit": "5"}', "limit must be an integer"),
    (b'{"limit": NaN}', "not JSON"),
    (b'{"limit": Infinity}', "not JSON"),
    (b"[" * 9000, "larger than"),
    (b'{"limit": 1}\xff', "not JSON"),
]


async def test_bad_bodies_read_only_and_other_origins_change_nothing(
        pair: Pair, client: aioredis.Redis) -> None:
    origin, dead = pair
    await dead_lettered(origin, dead, a=2, b=1)
    before = await both_states(client, origin, dead)
    redrive = f"/api/queues/{dead.name}/redrive"
    async with api_client(create_app([origin, dead], insecure_open=True)) as http:
        for body, words in BAD_BODIES:
            r = await http.post(redrive, content=body,
                                headers={"Content-Type": "application/json"})
            assert r.status_code == 400, (body[:40], r.text)
            error = r.json()["error"]
            assert error["code"] == "bad_body" and words in error["message"], (body[:40], error)
        r = await http.post(redrive, json={"task": "redrive.a"},
                            headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin", r.text
        r = await http.post(redrive, headers={"Origin": "null"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin", r.text
    async with api_client(create_app([origin, dead], read_only=True)) as http:
        for body in (b"", b'{"task": "redrive.a"}'):
            r = await http.post(redrive, content=body)
            assert r.status_code == 403 and r.json()["error"]["code"] == "read_only", r.text
        # reading still works, origin included
        one = (await dead.job_ids(JobState.FAILED))[0]
        detail = (await http.get(f"/api/queues/{dead.name}/jobs/{one}")).json()
        assert detail["origin"] == origin.name
    token = "redrive-token-1234"
    async with api_client(create_app([origin, dead], token=token)) as http:
        r = await http.post(redrive)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert await both_states(client, origin, dead) == before
    assert await counts(dead) == (0, 3)


async def test_openapi_documents_redrive(pair: Pair) -> None:
    async with api_client(create_app(list(pair), insecure_open=True)) as http:
        doc = (await http.get("/openapi.json")).json()
    op = doc["paths"]["/api/queues/{queue}/redrive"]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"task", "error", "limit"}
    assert schema["properties"]["limit"]["maximum"] == 1_000_000
    assert op["requestBody"]["required"] is False
    assert {"400", "403"} <= set(op["responses"])
    job = doc["paths"]["/api/queues/{queue}/jobs/{job_id}"]["get"]
    assert "origin" in job["responses"]["200"]["content"]["application/json"]["schema"][
        "properties"]


# ------------------------------------------------------------------------------- CLI


async def test_cli_redrive(pair: Pair, redis_url: str) -> None:
    origin, dead = pair
    await dead_lettered(origin, dead)
    argv = ("--url", redis_url, "--queue", dead.name)
    done = await arun("redrive", *argv, "--task", "redrive.b")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == "2 job(s) sent back to their origin queues\n"
    assert await counts(origin) == (2, 0) and await counts(dead) == (0, 3)

    done = await arun("redrive", *argv, "--error", "a broke on", "--limit", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2 job(s) sent back to their origin queues\n"
    assert await counts(origin) == (4, 0) and await counts(dead) == (0, 1)

    done = await arun("redrive", *argv, "--task", "no.such.task")
    assert done.returncode == 0 and done.stdout.startswith("0 job(s) sent back"), done.stderr

    # bad usage (exit 2: nothing connects, nothing changes) and Redis down (exit 3), at
    # once: the client tries an unreachable Redis for about 5 s before it gives up
    bad_usage = [[*argv, *bad] for bad in (
        ["--limit", "0"], ["--limit", "1000001"], ["--limit", "x"], ["--task", ""],
        ["--error", ""], ["--task", "t" * 201], ["--nope"])]
    bad_usage += [["--url", redis_url], ["--url", redis_url, "--queue", "a b"]]
    down, *refused = await asyncio.gather(
        arun("redrive", "--queue", dead.name, "--url", closed_url()),
        *(arun("redrive", *bad) for bad in bad_usage))
    assert "unreachable" in one_line_error(down, 3)
    for done in refused:
        one_line_error(done, 2)
    assert await counts(dead) == (0, 1)

    done = await arun("redrive", "--url", redis_url, "--queue", dead.name)
    assert done.returncode == 0 and done.stdout == "1 job(s) sent back to their origin queues\n"
    assert await counts(origin) == (5, 0) and await counts(dead) == (0, 0)


# --------------------------------------------------------------------------- browser


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(importlib.util.find_spec("playwright") is None
                    or not os.path.exists(CHROMIUM),
                    reason="needs Playwright for Python and Chromium (see test_dashboard_browser)")
async def test_the_dashboard_redrives_a_dead_letter_queue(pair: Pair) -> None:
    from .test_dashboard_browser import chromium, serving

    origin, dead = pair
    await dead_lettered(origin, dead, a=2, b=1)
    one = (await dead.job_ids(JobState.FAILED))[0]
    async with chromium() as browser:
        async with serving(create_app([dead, origin], insecure_open=True)) as base:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            dialogs: list[str] = []

            async def accept(dialog: Any) -> None:
                dialogs.append(dialog.message)
                await dialog.accept()

            page.on("dialog", accept)
            await page.goto(base)
            # the failed tab is the first shown: the button is there
            await page.locator(f'tr[data-job-id="{one}"] td.id').click(timeout=10_000)
            await page.wait_for_function(
                "() => document.getElementById('detail-fields').textContent"
                f".includes('origin{origin.name}')", timeout=10_000)
            button = page.locator("#redrive-btn")
            await button.wait_for(state="visible", timeout=10_000)
            await page.locator('#state-tabs button[data-state="waiting"]').click()
            await button.wait_for(state="hidden", timeout=10_000)
            await page.locator('#state-tabs button[data-state="failed"]').click()
            await button.wait_for(state="visible", timeout=10_000)
            await page.wait_for_function(
                "() => !document.getElementById('redrive-btn').disabled", timeout=10_000)
            await button.click()
            # the effect, in Redis (the status line's message is replaced by the next
            # refresh, so reading it races the dashboard's own timer)
            async def back_home() -> bool:
                return await counts(origin) == (3, 0) and await counts(dead) == (0, 0)
            await wait_until(back_home, timeout=10)
            assert len(dialogs) == 1 and dead.name in dialogs[0]
            assert not errors, f"JavaScript errors: {errors}"
        assert await counts(origin) == (3, 0) and await counts(dead) == (0, 0)

        async with serving(create_app([dead, origin], read_only=True)) as base:
            page = await browser.new_page()
            await page.goto(base)
            await page.wait_for_selector("body.read-only", timeout=10_000)
            await page.locator('#state-tabs button[data-state="failed"]').wait_for(
                timeout=10_000)
            assert await page.locator("#redrive-btn").is_hidden()
