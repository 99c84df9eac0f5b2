"""Job cancellation where operators reach it: the HTTP API (POST .../jobs/{id}/cancel and
.../job/cancel?id=, with the API's guards) and the ``aiojobs-redis jobs cancel`` command
(a real process). A waiting job cancelled never runs; a running one is stopped by its
worker and recorded cancelled; unknown and finished jobs are refused and change nothing."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis

from aiojobs_redis import JobCancelled, JobState, Queue, Worker, task
from aiojobs_redis.ops.web import create_app

from .conftest import hang, wait_until
from .test_cli import arun, one_line_error, run
from .test_web import api_client, redis_state
from .test_worker import running

ran: list[Any] = []  # what the task "cancel.record" was called with


@task(name="cancel.record")
async def record(x: Any) -> Any:
    ran.append(x)
    return x


@task(name="cancel.hang")
async def hang_forever() -> None:
    await hang()  # an asyncio.Event nobody sets: only a cancellation ends it


async def cancelled(queue: Queue, job_id: str) -> bool:
    return (await queue.job(job_id).info()).state is JobState.CANCELLED


async def jobs_state(client: aioredis.Redis, queue: Queue) -> dict[bytes, Any]:
    """Every key of the queue and its content, but the reply memos of single calls
    (``op:<token>``, kept 60 s so that a call sent again is not applied twice: cancel_job
    keeps its refusals there too). Equal before and after: no job changed."""
    memo = queue.keys.op_prefix.encode()
    return {k: v for k, v in (await redis_state(client, queue)).items()
            if not k.startswith(memo)}


# ------------------------------------------------------------------------------ HTTP


async def test_http_cancel_of_a_waiting_job_and_it_never_runs(queue: Queue) -> None:
    ran.clear()
    doomed, kept = await queue.enqueue_many([record.call("doomed"), record.call("kept")])
    delayed = await queue.enqueue(record.options(delay_s=3600), "delayed")
    base = f"/api/queues/{queue.name}"
    async with api_client(create_app(queue, insecure_open=True)) as http:
        r = await http.post(f"{base}/jobs/{quote(doomed.id, safe='')}/cancel")
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "id": doomed.id, "action": "cancel",
                            "state": "cancelled"}
        # the query form, on a delayed job
        r = await http.post(f"{base}/job/cancel", params={"id": delayed.id})
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
        detail = (await http.get(f"{base}/jobs/{quote(doomed.id, safe='')}")).json()
        assert detail["state"] == "cancelled" and detail["cancelled_by"] == "http"
        assert detail["cancel_requested"] is False
        listed = (await http.get(f"{base}/jobs", params={"state": "cancelled"})).json()
        assert sorted(j["id"] for j in listed["jobs"]) == sorted([doomed.id, delayed.id])
        counts = (await http.get("/api/queues")).json()["queues"][0]["counts"]
        assert counts["cancelled"] == 2 and counts["waiting"] == 1
    info = await doomed.info()
    assert info.state is JobState.CANCELLED and info.cancelled_by == "http"

    await Worker(queue, tasks=[record], handle_signals=False).run(burst=True)
    assert ran == ["kept"]  # the cancelled job never ran
    assert await cancelled(queue, doomed.id) and await cancelled(queue, delayed.id)
    assert (await kept.info()).state is JobState.COMPLETED
    with pytest.raises(JobCancelled):
        await doomed.result(timeout=5)


async def test_http_cancel_of_an_unknown_job_is_404_and_changes_nothing(
        queue: Queue, client: aioredis.Redis) -> None:
    await queue.enqueue(record, 1)
    before = await jobs_state(client, queue)
    base = f"/api/queues/{queue.name}"
    async with api_client(create_app(queue, insecure_open=True)) as http:
        for r in (await http.post(f"{base}/jobs/no-such-job/cancel"),
                  await http.post(f"{base}/job/cancel", params={"id": "no-such-job"})):
            assert r.status_code == 404, r.text
            assert r.json()["error"]["code"] == "job_not_found"
        # an encoded slash is part of the id, never the separator of the action
        r = await http.post(f"{base}/jobs/x%2Fcancel")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await http.post(f"{base}/job/cancel")
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_parameter"
    assert await jobs_state(client, queue) == before


async def test_http_cancel_of_a_finished_job_is_409_naming_its_state(
        queue: Queue, client: aioredis.Redis) -> None:
    done = await queue.enqueue(record, "done")
    await Worker(queue, tasks=[record], handle_signals=False).run(burst=True)
    gone = await queue.enqueue(record, "gone")
    await queue.cancel_job(gone.id, by="test")
    before = await jobs_state(client, queue)
    base = f"/api/queues/{queue.name}"
    async with api_client(create_app(queue, insecure_open=True)) as http:
        for job_id, state in ((done.id, "completed"), (gone.id, "cancelled")):
            r = await http.post(f"{base}/jobs/{job_id}/cancel")
            assert r.status_code == 409, r.text
            error = r.json()["error"]
            assert error["code"] == "wrong_state" and state in error["message"], error
        detail = (await http.get(f"{base}/jobs/{gone.id}")).json()
        assert detail["cancelled_by"] == "test"
    assert await jobs_state(client, queue) == before


async def test_read_only_and_other_origins_cannot_cancel(queue: Queue,
                                                         client: aioredis.Redis) -> None:
    job = await queue.enqueue(record, 1)
    before = await jobs_state(client, queue)
    base = f"/api/queues/{queue.name}"
    async with api_client(create_app(queue, read_only=True)) as http:
        for path in (f"{base}/jobs/{job.id}/cancel", f"{base}/job/cancel?id={job.id}"):
            r = await http.post(path)
            assert r.status_code == 403 and r.json()["error"]["code"] == "read_only", r.text
    async with api_client(create_app(queue, insecure_open=True)) as http:
        r = await http.post(f"{base}/jobs/{job.id}/cancel",
                            headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
    assert await jobs_state(client, queue) == before
    assert (await job.info()).state is JobState.WAITING


async def test_running_jobs_are_stopped_by_their_worker(queue: Queue, redis_url: str) -> None:
    """One running job cancelled through HTTP, one through the command: each answer says
    the cancellation was requested, and the worker records both cancelled."""
    by_http, by_cli = await queue.enqueue_many([hang_forever.call(), hang_forever.call()])
    worker = Worker(queue, tasks=[hang_forever], concurrency=2, handle_signals=False,
                    shutdown_timeout_s=1)
    async with running(worker):
        async def both_active() -> bool:
            return all([await j.state() is JobState.ACTIVE for j in (by_http, by_cli)])

        await wait_until(both_active, timeout=10)
        async with api_client(create_app(queue, insecure_open=True)) as http:
            r = await http.post(f"/api/queues/{queue.name}/jobs/{by_http.id}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "active", r.text
        done = await arun("jobs", "cancel", by_cli.id, "--url", redis_url,
                          "--queue", queue.name)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert done.stdout == (f"{queue.name} {by_cli.id}: cancellation requested"
                               " (running on its worker)\n")
        await wait_until(lambda: cancelled(queue, by_http.id), timeout=10)
        await wait_until(lambda: cancelled(queue, by_cli.id), timeout=10)
    assert (await by_http.info()).cancelled_by == "http"
    assert ((await by_cli.info()).cancelled_by or "").startswith("cli:")


# ------------------------------------------------------------------------------- CLI


async def test_cli_cancels_a_waiting_job_and_refuses_unknown_and_finished_ones(
        queue: Queue, redis_url: str) -> None:
    job = await queue.enqueue(record, 1)
    argv = ("--url", redis_url, "--queue", queue.name)
    done = await arun("jobs", "cancel", job.id, *argv)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout == f"{queue.name} {job.id}: cancelled\n"
    info = await job.info()
    assert info.state is JobState.CANCELLED
    who = info.cancelled_by or ""
    assert who.startswith("cli:") and "@" in who, who

    shown = await arun("jobs", "show", job.id, *argv)
    assert shown.returncode == 0, shown.stderr
    rows = dict(line.split(None, 1) for line in shown.stdout.splitlines())
    assert rows["state"] == "cancelled" and rows["cancelled_by"] == who

    line = one_line_error(await arun("jobs", "cancel", job.id, *argv), 1)
    assert f"job {job.id!r} is cancelled" in line
    line = one_line_error(await arun("jobs", "cancel", "nope", *argv), 1)
    assert f"no job 'nope' in queue {queue.name!r}" in line
    assert (await job.info()).cancelled_by == who  # nothing changed


def test_cli_cancel_in_a_queue_that_does_not_exist(queue: Queue, redis_url: str) -> None:
    line = one_line_error(run("jobs", "cancel", "nope", "--url", redis_url,
                              "--queue", queue.name), 1)
    assert "no job 'nope'" in line and "has no keys at all" in line
