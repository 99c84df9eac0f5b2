"""The HTTP API against real jobs in every state (in process, httpx + ASGITransport):
listing and pagination in Redis, job details with capped payloads, the actions, bad
input answered with a 4xx JSON error that changes nothing, hostile job ids that act on
themselves only, auth, read-only and the safety rules that apply by default."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route

from aiojobs_redis import ConfigurationError, JobState, Queue, Worker, task
from aiojobs_redis.cli.dashboard import add_parser, check_binding
from aiojobs_redis.ops.web import create_app
from aiojobs_redis.ops.web.openapi import openapi_document
from aiojobs_redis.ops.web.views import VALUE_CAP
from aiojobs_redis.states import STATE_SETS, state_keys

from .conftest import wait_until
from .scripts import direct


@task(name="ok")
async def ok(x: Any) -> Any:
    return x


@task(name="boom", attempts=1)
async def boom(x: int) -> int:
    raise ValueError(f"boom {x}")


async def populate(queue: Queue) -> dict[str, list[str]]:
    """Jobs in every state: 3 completed, 2 failed, 1 active, 4 waiting, 2 delayed."""
    done = await queue.enqueue_many([ok.call(i) for i in range(3)] + [boom.call(i)
                                                                      for i in range(2)])
    await Worker(queue, tasks=[ok, boom], handle_signals=False).run(burst=True)
    active = await queue.enqueue(ok, "running")
    _, fetched = await direct.fetch(queue, 1, lease_ms=600_000)
    assert [j.id for j in fetched] == [active.id]
    waiting = await queue.enqueue_many([ok.call(i) for i in range(4)])
    delayed = await queue.enqueue_many([ok.options(delay_s=3600).call(i) for i in range(2)])
    return {
        "completed": [j.id for j in done[:3]], "failed": [j.id for j in done[3:]],
        "active": [active.id], "waiting": [j.id for j in waiting],
        "delayed": [j.id for j in delayed],
    }


async def store_as(queue: Queue, job_id: str, new_id: str) -> None:
    """Move a stored job to ``new_id``, whatever ids enqueue accepts today: an id that an
    older version, or another client writing to Redis, may have stored. Its record and its
    entry in its state's set are all that name it."""
    client: Any = queue.client
    for key in state_keys(queue.keys):
        score = await client.zscore(key, job_id)
        if score is not None:
            async with client.pipeline(transaction=True) as pipe:
                pipe.zrem(key, job_id).zadd(key, {new_id: score})
                pipe.rename(queue.keys.job(job_id), queue.keys.job(new_id))
                await pipe.execute()
            return
    raise AssertionError(f"job {job_id!r} is in no state")


async def failed_jobs(queue: Queue, ids: list[str]) -> None:
    """Failed jobs (task 'boom') with exactly these ids."""
    jobs = await queue.enqueue_many([boom.call(i) for i in range(len(ids))])
    await Worker(queue, tasks=[boom], handle_signals=False).run(burst=True)
    for job, new_id in zip(jobs, ids, strict=True):
        await store_as(queue, job.id, new_id)
    assert (await queue.counts())[JobState.FAILED] >= len(ids)


@asynccontextmanager
async def api_client(app: Any, base: str = "http://testserver") -> AsyncIterator[
        httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as c:
        yield c


async def redis_state(client: aioredis.Redis, queue: Queue) -> dict[bytes, Any]:
    """Every key of the queue and its content: to prove nothing changed. (Contents, not
    DUMP: DUMP's bytes can differ for equal contents.)"""
    keys = [k async for k in client.scan_iter(match=f"ajr:{{{queue.name}}}:*")]
    state: dict[bytes, Any] = {}
    for k in sorted(keys):
        kind = await client.type(k)
        if kind == b"hash":
            state[k] = await client.hgetall(k)
        elif kind == b"zset":
            state[k] = await client.zrange(k, 0, -1, withscores=True)
        elif kind == b"stream":
            state[k] = await client.xrange(k)
        else:
            state[k] = await client.dump(k)
    return state


# --------------------------------------------------------------------- reading


async def test_queues_and_counts_match_redis(queue: Queue) -> None:
    await populate(queue)
    async with api_client(create_app([queue], insecure_open=True)) as http:
        body = (await http.get("/api/queues")).json()
    [q] = body["queues"]
    counts = await queue.counts()
    assert q["name"] == queue.name
    assert q["counts"] == {str(s): n for s, n in counts.items()}
    assert q["counts"] == {"waiting": 4, "delayed": 0 + 2, "blocked": 0, "active": 1,
                           "completed": 3, "failed": 2, "cancelled": 0}
    assert q["paused"] is False and q["workers"] == 0
    assert q["oldest_waiting_age_s"] is not None and q["oldest_waiting_age_s"] >= 0
    assert q["totals"]["completed"] == 3 and q["totals"]["failed"] == 2


async def test_jobs_of_every_state_paginated(queue: Queue) -> None:
    ids = await populate(queue)
    async with api_client(create_app(queue, insecure_open=True)) as http:
        for state, expected in ids.items():
            body = (await http.get(f"/api/queues/{queue.name}/jobs",
                                   params={"state": state, "limit": 200})).json()
            assert body["total"] == len(expected)
            assert sorted(j["id"] for j in body["jobs"]) == sorted(expected)
            assert all(j["state"] == state for j in body["jobs"])
        # run order for waiting; pages of 3 cover it without overlap
        pages = []
        for offset in (0, 3, 6):
            body = (await http.get(f"/api/queues/{queue.name}/jobs",
                                   params={"state": "waiting", "offset": offset,
                                           "limit": 3})).json()
            pages.append([j["id"] for j in body["jobs"]])
        assert pages == [ids["waiting"][:3], ids["waiting"][3:], []]
        failed = (await http.get(f"/api/queues/{queue.name}/jobs",
                                 params={"state": "failed"})).json()
        assert failed["order"] == "newest"
        assert all(j["error"].startswith("ValueError: boom") for j in failed["jobs"])
        assert all(j["finished_at"] for j in failed["jobs"])
        # a job's times read the same in a list and in its own page
        for listed in failed["jobs"]:
            one = (await http.get(f"/api/queues/{queue.name}/jobs/{listed['id']}")).json()
            for name in ("created_at", "started_at", "finished_at", "due_at"):
                assert one[name] == listed[name], name


async def test_one_job_with_error_traceback_and_capped_arguments(queue: Queue) -> None:
    ids = await populate(queue)
    big = await queue.enqueue(ok, "x" * 50_000)
    async with api_client(create_app(queue, insecure_open=True)) as http:
        failed = (await http.get(f"/api/queues/{queue.name}/jobs/{ids['failed'][0]}")).json()
        assert failed["state"] == "failed" and failed["task"] == "boom"
        assert failed["error"].startswith("ValueError: boom")
        assert "Traceback" in failed["traceback"] and "raise ValueError" in failed["traceback"]
        assert failed["attempts"] == 1 and failed["max_attempts"] == 1
        assert failed["created_at"] and failed["finished_at"]
        assert failed["args"] == {"value": [int(failed["args"]["json"][1:-1])],
                                  "json": failed["args"]["json"], "size": 3,
                                  "truncated": False}
        done = (await http.get(f"/api/queues/{queue.name}/jobs/{ids['completed'][1]}")).json()
        assert done["result"]["value"] == 1
        large = (await http.get(f"/api/queues/{queue.name}/jobs/{big.id}")).json()
        assert large["args"]["truncated"] is True
        assert len(large["args"]["json"]) == VALUE_CAP and large["args"]["size"] > 50_000
        assert "value" not in large["args"]


async def test_actions_change_jobs(queue: Queue) -> None:
    ids = await populate(queue)
    base = f"/api/queues/{queue.name}"
    async with api_client(create_app(queue, insecure_open=True)) as http:
        r = await http.post(f"{base}/jobs/{ids['failed'][0]}/retry")
        assert r.status_code == 200 and r.json()["ok"]
        assert (await queue.job(ids["failed"][0]).state()) is JobState.WAITING
        r = await http.post(f"{base}/jobs/{ids['delayed'][0]}/promote")
        assert r.status_code == 200
        assert (await queue.job(ids["delayed"][0]).state()) is JobState.WAITING
        r = await http.delete(f"{base}/jobs/{ids['completed'][0]}")
        assert r.status_code == 200
        assert await queue.job_info(ids["completed"][0]) is None
        r = await http.post(f"{base}/retry-failed")
        assert r.json() == {"ok": True, "retried": 1}
        assert (await queue.counts())[JobState.FAILED] == 0
        assert (await http.post(f"{base}/pause")).json()["paused"] is True
        assert await queue.is_paused()
        assert (await http.get(base)).json()["paused"] is True
        assert (await http.post(f"{base}/resume")).json()["paused"] is False
        assert not await queue.is_paused()


async def test_job_ids_with_slashes_and_colons(queue: Queue) -> None:
    job = await queue.enqueue("boom", 1)
    await store_as(queue, job.id, "a/b:c/retry")
    async with api_client(create_app(queue, insecure_open=True)) as http:
        # '/' sent as such still separates the parts of an id
        r = await http.get(f"/api/queues/{queue.name}/jobs/a/b:c/retry")
        assert r.status_code == 200 and r.json()["id"] == "a/b:c/retry"
        r = await http.post(f"/api/queues/{queue.name}/jobs/a/b:c/retry/promote")
        assert r.status_code == 409  # waiting, not delayed
        r = await http.delete(f"/api/queues/{queue.name}/jobs/a%2Fb:c%2Fretry")
        assert r.status_code == 200 and r.json()["id"] == "a/b:c/retry"
    assert await queue.job_info("a/b:c/retry") is None


HOSTILE_IDS = ["a/../victim", "../victim", "victim/..", "./victim", "victim/retry",
               "victim/", "/victim", "a?b#c", "50%off", "a%2F..%2Fvictim", "%2E%2E",
               "x/../../other/jobs/victim", "..", ".", "...", "a//b"]


def one_segment(job_id: str) -> str:
    """A job id as one path segment, dots encoded too (so that the HTTP client, which
    resolves '.' and '..' segments, sends '.' and '..' as they are)."""
    return quote(job_id, safe="").replace(".", "%2E")


async def test_hostile_job_ids_act_on_themselves_only(queue: Queue) -> None:
    """Every action on a job whose id holds '/', '..', '?', '#' or '%' reaches that job,
    in the path (one segment, '/' as %2F) and in the query string; 'victim' is never
    touched; and an encoded slash is part of the id, never the separator of an action."""
    await failed_jobs(queue, ["victim", *HOSTILE_IDS])
    base = f"/api/queues/{queue.name}"

    def in_path(job_id: str, action: str = "") -> str:
        return f"{base}/jobs/{one_segment(job_id)}" + (f"/{action}" if action else "")

    def in_query(job_id: str, action: str = "") -> str:
        return f"{base}/job" + (f"/{action}" if action else "") + "?id=" + quote(job_id, safe="")

    async def victim_untouched() -> None:
        info = await queue.job_info("victim")
        assert info is not None and info.state is JobState.FAILED

    async with api_client(create_app(queue, insecure_open=True)) as http:
        # an encoded slash is a character of the id: POST .../jobs/victim%2Fretry names the
        # job 'victim/retry' and no action (it used to retry 'victim')
        r = await http.post(f"{base}/jobs/victim%2Fretry")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
        await victim_untouched()
        for n, job_id in enumerate(HOSTILE_IDS):
            for url in (in_path(job_id), in_query(job_id)):
                r = await http.get(url)
                assert r.status_code == 200 and r.json()["id"] == job_id, (url, r.text)
            form = in_query if n % 2 else in_path
            r = await http.post(form(job_id, "retry"))
            assert r.status_code == 200 and r.json()["id"] == job_id, (job_id, r.text)
            assert (await queue.job(job_id).state()) is JobState.WAITING, job_id
            r = await http.post(form(job_id, "promote"))
            assert r.status_code == 409, (job_id, r.text)  # waiting, not delayed
            r = await http.delete(form(job_id))
            assert r.status_code == 200 and r.json()["id"] == job_id, (job_id, r.text)
            assert await queue.job_info(job_id) is None, job_id
            await victim_untouched()
        # the query form carries every id, '.' and '..' included
        r = await http.get(f"{base}/job", params={"id": "victim"})
        assert r.status_code == 200 and r.json()["id"] == "victim"
    assert await queue.job_ids(JobState.FAILED) == ["victim"]


async def test_an_id_never_addresses_another_queue(queue: Queue, client: aioredis.Redis) -> None:
    other = Queue(client, name=queue.name + "-other")
    try:
        await failed_jobs(other, ["victim"])
        hostile = f"../../{other.name}/jobs/victim"
        await failed_jobs(queue, [hostile])
        async with api_client(create_app([queue, other], insecure_open=True)) as http:
            raw = f"/api/queues/{queue.name}/jobs/" + quote(hostile, safe="")
            r = await http.delete(raw)
            assert r.status_code == 200 and r.json()["id"] == hostile, r.text
            # a queue name with an encoded slash names no queue: it is not read as a
            # queue, then an id ('other' + 'jobs/victim')
            r = await http.delete(f"/api/queues/{other.name}%2Fjobs%2Fvictim")
            assert r.status_code in (404, 405)
            r = await http.delete(f"/api/queues/{queue.name}%2Fjobs%2Fx/jobs/victim")
            assert r.status_code == 404 and r.json()["error"]["code"] == "queue_not_found"
        assert await queue.job_info(hostile) is None
        info = await other.job_info("victim")
        assert info is not None and info.state is JobState.FAILED
    finally:
        await client.delete(*[k async for k in client.scan_iter(match=f"ajr:{{{other.name}}}:*")])
        await other.close()


async def test_workers_and_metrics(queue: Queue) -> None:
    await queue.enqueue_many([ok.call(i) for i in range(5)])
    worker = Worker(queue, tasks=[ok], handle_signals=False)
    runner = asyncio.create_task(worker.run())
    try:
        async with api_client(create_app(queue, insecure_open=True)) as http:
            async def listed() -> bool:
                body = (await http.get(f"/api/queues/{queue.name}/workers")).json()
                return [w["id"] for w in body["workers"]] == [worker.id]

            await wait_until(listed, timeout=10)
            await wait_until(lambda: worker.processed == 5, timeout=10)

            async def counted() -> bool:
                body = (await http.get(f"/api/queues/{queue.name}/metrics",
                                       params={"minutes": 5})).json()
                return bool(body["completed"] == 5)

            await wait_until(counted, timeout=10)
            body = (await http.get(f"/api/queues/{queue.name}/metrics")).json()
            assert len(body["series"]) == 60 and body["run"]["count"] == 5
    finally:
        worker.stop()
        await asyncio.wait_for(runner, 30)


async def test_schedules_list_and_run_now(queue: Queue) -> None:
    from aiojobs_redis.schedules.spec import Schedule

    await queue.schedules.upsert(Schedule("pulse", ok, every_s=3600, args=[1]))
    async with api_client(create_app(queue, insecure_open=True)) as http:
        body = (await http.get(f"/api/queues/{queue.name}/schedules")).json()
        [s] = body["schedules"]
        assert s["name"] == "pulse" and s["task"] == "ok" and s["next_run_at"]
        r = await http.post(f"/api/queues/{queue.name}/schedules/pulse/run")
        assert r.status_code == 200
        job_id = r.json()["job_id"]
    assert (await queue.job(job_id).state()) is JobState.WAITING
    await queue.schedules.remove("pulse")


async def test_schedule_names_with_slashes_and_dots_are_read_exactly(queue: Queue) -> None:
    from aiojobs_redis.schedules.spec import Schedule

    for name in ("pulse", "reports/../pulse"):
        await queue.schedules.upsert(Schedule(name, ok, every_s=3600, args=[1]))
    async with api_client(create_app(queue, insecure_open=True)) as http:
        r = await http.post(f"/api/queues/{queue.name}/schedules/reports%2F..%2Fpulse/run")
        assert r.status_code == 200 and r.json()["schedule"] == "reports/../pulse", r.text
        job_id = r.json()["job_id"]
        assert job_id.startswith("sched:reports/../pulse:")
        # an encoded slash is part of the name, never the separator of '/run'
        r = await http.post(f"/api/queues/{queue.name}/schedules/pulse%2Frun")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert await queue.job_ids(JobState.WAITING) == [job_id]  # one run, of that schedule
    for name in ("pulse", "reports/../pulse"):
        await queue.schedules.remove(name)


# -------------------------------------------------------------------- bad input


def _bad_requests(q: str, ids: dict[str, list[str]]) -> list[tuple[str, str, int, str]]:
    base = f"/api/queues/{q}"
    cases = [
        ("GET", "/api/queues/no-such-queue", 404, "queue_not_found"),
        ("GET", "/api/queues/no-such-queue/jobs", 404, "queue_not_found"),
        ("POST", "/api/queues/no-such-queue/pause", 404, "queue_not_found"),
        ("POST", "/api/queues/no-such-queue/retry-failed", 404, "queue_not_found"),
        ("GET", f"{base}/jobs/no-such-job", 404, "job_not_found"),
        ("DELETE", f"{base}/jobs/no-such-job", 404, "job_not_found"),
        ("POST", f"{base}/jobs/no-such-job/retry", 404, "job_not_found"),
        ("POST", f"{base}/jobs/no-such-job/promote", 404, "job_not_found"),
        ("POST", f"{base}/jobs/{ids['completed'][0]}/retry", 409, "wrong_state"),
        ("POST", f"{base}/jobs/{ids['waiting'][0]}/promote", 409, "wrong_state"),
        ("DELETE", f"{base}/jobs/{ids['active'][0]}", 409, "wrong_state"),
        ("POST", f"{base}/jobs/{ids['failed'][0]}/explode", 404, "not_found"),
        ("POST", f"{base}/jobs/{ids['failed'][0]}", 404, "not_found"),
        ("GET", f"{base}/jobs/bad%20id", 400, "bad_job_id"),
        ("GET", f"{base}/jobs?limit=0", 400, "bad_parameter"),
        ("GET", f"{base}/jobs?limit=201", 400, "bad_parameter"),
        ("GET", f"{base}/jobs?limit=ten", 400, "bad_parameter"),
        ("GET", f"{base}/jobs?offset=-1", 400, "bad_parameter"),
        ("GET", f"{base}/jobs?state=lost", 400, "bad_parameter"),
        ("GET", f"{base}/jobs?order=random", 400, "bad_parameter"),
        ("GET", f"{base}/metrics?minutes=0", 400, "bad_parameter"),
        ("GET", f"{base}/metrics?minutes=1441", 400, "bad_parameter"),
        ("PUT", f"{base}/pause", 405, "method_not_allowed"),
        ("GET", f"{base}/retry-failed", 405, "method_not_allowed"),
        ("PATCH", f"{base}/jobs/{ids['failed'][0]}", 405, "method_not_allowed"),
        ("POST", "/api/queues", 405, "method_not_allowed"),
        ("GET", "/api/nothing-here", 404, "not_found"),
        ("POST", f"{base}/schedules/no-such-schedule/run", 404, "schedule_not_found"),
        ("POST", f"{base}/schedules/x/stop", 404, "not_found"),
        ("DELETE", f"{base}/schedules/x/run", 405, "method_not_allowed"),
        ("GET", f"{base}/job", 400, "bad_parameter"),
        ("GET", f"{base}/job?id=no-such-job", 404, "job_not_found"),
        ("POST", f"{base}/job/retry?id={ids['completed'][0]}", 409, "wrong_state"),
        ("POST", f"{base}/jobs/{ids['failed'][0]}%2Fretry", 404, "not_found"),
        ("GET", f"{base}/jobs?state=waiting&token=x", 400, "token_in_url"),
    ]
    return cases


async def test_bad_input_gets_a_clear_json_4xx_and_changes_nothing(
        queue: Queue, client: aioredis.Redis) -> None:
    ids = await populate(queue)
    before = await redis_state(client, queue)
    async with api_client(create_app(queue, insecure_open=True)) as http:
        for method, path, status, code in _bad_requests(queue.name, ids):
            r = await http.request(method, path)
            where = f"{method} {path}"
            assert r.status_code == status, f"{where}: {r.status_code} {r.text}"
            assert r.headers["content-type"].startswith("application/json"), where
            error = r.json()["error"]
            assert error["status"] == status and error["code"] == code, f"{where}: {error}"
            assert len(error["message"]) > 10, where
    assert await redis_state(client, queue) == before


async def test_read_only_refuses_every_change(queue: Queue, client: aioredis.Redis) -> None:
    ids = await populate(queue)
    before = await redis_state(client, queue)
    base = f"/api/queues/{queue.name}"
    async with api_client(create_app(queue, read_only=True)) as http:
        for method, path in [("POST", f"{base}/jobs/{ids['failed'][0]}/retry"),
                             ("POST", f"{base}/jobs/{ids['delayed'][0]}/promote"),
                             ("DELETE", f"{base}/jobs/{ids['completed'][0]}"),
                             ("POST", f"{base}/retry-failed"), ("POST", f"{base}/pause"),
                             ("POST", f"{base}/resume")]:
            r = await http.request(method, path)
            assert r.status_code == 403 and r.json()["error"]["code"] == "read_only"
        assert (await http.get(f"{base}/jobs?state=failed")).status_code == 200
        assert (await http.get("/api/queues")).json()["read_only"] is True
    assert await redis_state(client, queue) == before


async def test_token_is_required_everywhere(queue: Queue) -> None:
    token = "s3cret-token-value"
    app = create_app(queue, token=token)
    async with api_client(app) as http:
        for path in ("/api/queues", "/metrics", "/openapi.json",
                     f"/api/queues/{queue.name}/jobs", f"/api/queues/{queue.name}/job?id=x"):
            r = await http.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        assert (await http.get("/api/queues",
                               headers={"Authorization": "Bearer wrong-token"})).status_code == 401
        assert (await http.post(f"/api/queues/{queue.name}/pause")).status_code == 401
        assert not await queue.is_paused()
        ok_ = await http.get("/api/queues", headers={"Authorization": f"Bearer {token}"})
        assert ok_.status_code == 200
        # the page is static (no data): it loads without the token, which it takes from
        # the URL's fragment (/#token=...), never sent to a server
        page = await http.get("/")
        assert page.status_code == 200 and "<title>aiojobs_redis</title>" in page.text
        assert "location.hash" in page.text


async def test_a_token_in_the_query_string_is_refused(queue: Queue) -> None:
    """A secret in a URL lands in access logs: ?token= is not a way in, anywhere."""
    token = "s3cret-token-value"
    async with api_client(create_app(queue, token=token)) as http:
        for path in ("/", "/api/queues", f"/api/queues/{queue.name}/jobs?state=failed"):
            r = await http.get(path, params={"token": token})
            assert r.status_code == 400, path
            assert r.json()["error"]["code"] == "token_in_url"
            assert token not in r.text
        r = await http.post(f"/api/queues/{queue.name}/pause", params={"token": token})
        assert r.status_code == 400
    assert not await queue.is_paused()
    js = resources.files("aiojobs_redis.ops.web").joinpath("static/app.js").read_text()
    assert 'params.get("token")' not in js and "?token=" not in js


async def test_host_auth_hook(queue: Queue) -> None:
    async def only_admins(request: Request) -> bool:
        return request.headers.get("x-user") == "admin"

    async with api_client(create_app(queue, auth=only_admins)) as http:
        assert (await http.get("/api/queues")).status_code == 401
        assert (await http.get("/api/queues", headers={"x-user": "admin"})).status_code == 200


async def test_cross_site_changes_are_refused(queue: Queue) -> None:
    async with api_client(create_app(queue, insecure_open=True)) as http:
        r = await http.post(f"/api/queues/{queue.name}/pause",
                            headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
        assert not await queue.is_paused()
        r = await http.post(f"/api/queues/{queue.name}/pause",
                            headers={"Origin": "http://testserver"})
        assert r.status_code == 200


# ------------------------------------------------------------- page, docs, mount


async def test_page_is_safe_and_self_contained(queue: Queue) -> None:
    async with api_client(create_app(queue, insecure_open=True)) as http:
        r = await http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    js = resources.files("aiojobs_redis.ops.web").joinpath("static/app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, f"app.js must not use {sink}"
    assert "<script src=" not in r.text  # no external script, no build step


def test_openapi_describes_every_route_and_only_those(queue: Queue) -> None:
    app = create_app(queue, insecure_open=True)
    routes: set[tuple[str, str]] = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method == "HEAD":
                continue
            path = route.path
            if path.endswith("/jobs/{rest:path}"):
                prefix = path.replace("{rest:path}", "{job_id}")
                if method == "POST":
                    routes |= {(prefix + "/retry", "post"), (prefix + "/promote", "post")}
                else:
                    routes.add((prefix, method.lower()))
            elif path.endswith("/schedules/{rest:path}"):
                routes.add((path.replace("{rest:path}", "{name}/run"), method.lower()))
            else:
                routes.add((path, method.lower()))
    doc = openapi_document()
    described = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert described == routes
    for ops in doc["paths"].values():
        for op in ops.values():
            for p in op.get("parameters", []):
                assert p["in"] in ("path", "query")


async def test_openapi_served(queue: Queue) -> None:
    async with api_client(create_app(queue, insecure_open=True)) as http:
        doc = (await http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.") and "/api/queues/{queue}/jobs" in doc["paths"]


async def test_mounted_in_a_host_app(queue: Queue) -> None:
    await queue.enqueue(ok, 1)
    token = "s3cret-token-value"
    host = Starlette(routes=[Mount("/jobs", create_app(queues=[queue], token=token))])
    auth = {"Authorization": f"Bearer {token}"}
    async with api_client(host) as http:
        assert (await http.get("/jobs/api/queues")).status_code == 401
        body = (await http.get("/jobs/api/queues", headers=auth)).json()
        assert body["queues"][0]["counts"]["waiting"] == 1
        page = await http.get("/jobs/")
        assert page.status_code == 200 and "api/queues" in page.text
        assert (await http.get("/jobs/metrics")).status_code == 401
        m = await http.get("/jobs/metrics", headers=auth)
        assert m.status_code == 200 and "ajr_jobs" in m.text
        # the exact reading of ids works below a mount point too
        [job_id] = await queue.job_ids(JobState.WAITING)
        await store_as(queue, job_id, "a/../b")
        r = await http.get(f"/jobs/api/queues/{queue.name}/jobs/a%2F..%2Fb", headers=auth)
        assert r.status_code == 200 and r.json()["id"] == "a/../b"


def test_create_app_refuses_misuse(queue: Queue) -> None:
    with pytest.raises(ConfigurationError):
        create_app([], insecure_open=True)
    with pytest.raises(ConfigurationError):
        create_app([queue, Queue(queue.client, name=queue.name)], insecure_open=True)
    with pytest.raises(ConfigurationError):
        create_app(queue, token="short")
    with pytest.raises(ConfigurationError, match="contradicts"):
        create_app(queue, token="a-long-token", insecure_open=True)
    with pytest.raises(ConfigurationError, match="list of host names"):
        create_app(queue, token="a-long-token", allowed_hosts="ops.example.com")


# --------------------------------------------------------------- safe by default


def test_an_app_nothing_protects_refuses_to_build(queue: Queue) -> None:
    """create_app([queue]), as the docs used to show it, served pause/retry/remove and
    every job's arguments to anyone: it must say who may use it, or refuse to build."""
    with pytest.raises(ConfigurationError, match="say who may use this app"):
        create_app([queue])
    with pytest.raises(ConfigurationError, match="say who may use this app"):
        create_app(queues=[queue], read_only=False, token=None, auth=None)
    create_app(queue, token="a-long-token")
    create_app(queue, auth=lambda request: True)
    create_app(queue, read_only=True)
    create_app(queue, insecure_open=True)


async def test_a_mounted_app_refuses_foreign_hosts_on_loopback(queue: Queue) -> None:
    """The Host and Origin checks apply to a mounted app, not only to the dashboard
    command: on a connection to a loopback address (a host app on 127.0.0.1), a page that
    rebinds its DNS name to 127.0.0.1 can neither read nor change anything."""
    await failed_jobs(queue, ["job-1"])
    host = Starlette(routes=[Mount("/jobs", create_app([queue], insecure_open=True))])
    base = f"/jobs/api/queues/{queue.name}"
    evil = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    async with api_client(host, "http://127.0.0.1:8000") as http:
        assert (await http.get("/jobs/api/queues")).status_code == 200
        assert (await http.get("/jobs/api/queues",
                               headers={"Host": "localhost:8000"})).status_code == 200
        for method, path in [("GET", "/jobs/"), ("GET", "/jobs/api/queues"),
                             ("GET", f"{base}/jobs/job-1"), ("POST", f"{base}/pause"),
                             ("DELETE", f"{base}/jobs/job-1")]:
            r = await http.request(method, path, headers=evil)
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_host", path
        # same host, another origin: refused for changes
        r = await http.post(f"{base}/pause", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
        r = await http.delete(f"{base}/jobs/job-1", headers={"Origin": "null"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
    assert not await queue.is_paused()
    assert await queue.job_info("job-1") is not None
    # not on loopback and no allowed_hosts: the Host is the host app's business
    async with api_client(host, "http://ops.example.com") as http:
        assert (await http.get("/jobs/api/queues")).status_code == 200


async def test_allowed_hosts(queue: Queue) -> None:
    app = create_app(queue, read_only=True, allowed_hosts=["ops.example.com"])
    for base in ("http://127.0.0.1:8000", "http://10.0.0.5"):
        async with api_client(app, base) as http:
            for name, status in [("ops.example.com", 200), ("OPS.example.com:443", 200),
                                 ("localhost:8000", 200), ("[::1]:8000", 200),
                                 ("evil.example", 400), ("ops.example.com.evil", 400),
                                 ("", 400)]:
                r = await http.get("/api/queues", headers={"Host": name})
                assert r.status_code == status, (base, name, r.text)
    async with api_client(create_app(queue, read_only=True, allowed_hosts=["*"]),
                          "http://127.0.0.1") as http:
        assert (await http.get("/api/queues", headers={"Host": "any.example"})).status_code == 200


# ------------------------------------------------------------------------ states


async def test_states_come_from_the_state_table(queue: Queue,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The API lists the job states in the order of aiojobs_redis.states.STATE_SETS, and
    OpenAPI documents them; a state added to the table is served with no other change."""
    await populate(queue)
    async with api_client(create_app(queue, insecure_open=True)) as http:
        body = (await http.get("/api/queues")).json()
        assert body["states"] == [str(s) for s in STATE_SETS]
        assert list(body["queues"][0]["counts"]) == body["states"]
        doc = (await http.get("/openapi.json")).json()
    schema = doc["paths"]["/api/queues"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    assert schema["properties"]["states"]["items"]["enum"] == body["states"]
    [state] = [p for p in doc["paths"]["/api/queues/{queue}/jobs"]["get"]["parameters"]
               if p["name"] == "state"]
    assert state["schema"]["enum"] == body["states"]

    # a new state in the table (here: another name for the delayed set)
    table: dict[Any, str] = STATE_SETS
    monkeypatch.setitem(table, "parked", "delayed")
    async with api_client(create_app(queue, insecure_open=True)) as http:
        body = (await http.get("/api/queues")).json()
        assert body["states"][-1] == "parked" and body["queues"][0]["counts"]["parked"] == 2
        r = await http.get(f"/api/queues/{queue.name}/jobs", params={"state": "parked"})
        assert r.status_code == 200 and r.json()["total"] == 2
        doc = (await http.get("/openapi.json")).json()
    schema = doc["paths"]["/api/queues"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    assert "parked" in schema["properties"]["states"]["items"]["enum"]
    for static in ("app.js", "index.html"):
        text = resources.files("aiojobs_redis.ops.web").joinpath("static", static).read_text()
        assert "count-waiting" not in text and '"delayed", "active"' not in text, static


# -------------------------------------------------------------------------- CLI


def test_dashboard_refuses_to_bind_publicly_without_token_or_read_only() -> None:
    check_binding("127.0.0.1", None, False)
    check_binding("::1", None, False)
    check_binding("0.0.0.0", "a-long-token", False)
    check_binding("0.0.0.0", None, True)
    with pytest.raises(SystemExit, match="refusing"):
        check_binding("0.0.0.0", None, False)
    with pytest.raises(SystemExit, match="refusing"):
        check_binding("192.168.1.5", "", False)


def test_dashboard_parser() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dashboard", "--queue", "a", "--queue", "b", "--read-only"])
    assert args.queue == ["a", "b"] and args.read_only and args.host == "127.0.0.1"
    assert args.port == 8080 and callable(args.func)
    assert re.match(r"^[a-z_]+$", args.func.__name__)
