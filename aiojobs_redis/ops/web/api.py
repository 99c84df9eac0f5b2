"""The endpoints of the HTTP API: :class:`Api`, bound to the queues an app serves, one
method per route (queues and their counts, job lists read page by page in Redis, one job
and the actions on it, pause and resume, workers, metrics, schedules, OpenAPI and
Prometheus). The routes themselves are laid out in ``app.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from ...errors import ConfigurationError, wrap_redis_errors
from ...producer.queue import Queue
from ...scripts import SCRIPTS
from ...states import FINISHED, STATE_SETS, JobState, state_key
from .. import metrics
from ..registry import live_workers
from .bodies import change_body, redrive_body, requester
from .detail import flow_json, job_json, job_origin
from .openapi import openapi_document
from .safety import Json
from .views import (
    LIST_TEXT_CAP,
    ApiError,
    as_text,
    capped,
    cut_text,
    decoded,
    int_param,
    job_id_param,
    ms_iso,
    path_segments,
    snapshot_json,
    states,
)

MAX_PAGE: Final = 200
DEFAULT_PAGE: Final = 20
_LIST_FIELDS: Final = ("task", "state", "priority", "attempts", "max_attempts", "created",
                       "started", "finished", "due", "error", "worker", "progress")
_FIELD_CAP: Final = 1024  # bytes of each field read for a job list
#: the actions of POST .../jobs/{id}/<action> and POST .../job/<action>?id=
JOB_ACTIONS: Final = ("retry", "promote", "cancel", "change")


class Api:
    """The endpoints, bound to a set of queues."""

    def __init__(self, queues: Sequence[Queue], *, read_only: bool) -> None:
        self.queues = {q.name: q for q in queues}
        self.read_only = read_only

    def named(self, name: str) -> Queue:
        q = self.queues.get(name)
        if q is None:
            raise ApiError(404, "queue_not_found",
                           f"no queue named {name!r} is served here (known: {sorted(self.queues)})")
        return q

    def queue(self, request: Request) -> Queue:
        # api/queues/<name>/...: the name as sent, even with an encoded slash in it
        return self.named(path_segments(request)[2])

    async def list_queues(self, request: Request) -> Response:
        snaps = await asyncio.gather(*(metrics.snapshot(q) for q in self.queues.values()))
        return Json({"queues": [snapshot_json(s) for s in snaps], "states": states(),
                     "read_only": self.read_only})

    async def get_queue(self, request: Request) -> Response:
        s = await metrics.snapshot(self.queue(request))
        body = snapshot_json(s)
        body["totals"] = s.totals
        return Json(body)

    async def list_jobs(self, request: Request) -> Response:
        q = self.queue(request)
        raw_state = request.query_params.get("state", str(JobState.FAILED))
        known = {str(s): s for s in STATE_SETS}
        state = known.get(raw_state)
        if state is None:
            raise ApiError(400, "bad_parameter",
                           f"state must be one of {list(known)}, got {raw_state!r}")
        offset = int_param(request, "offset", 0, 0, 10**12)
        limit = int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        order = request.query_params.get("order", "newest" if state in FINISHED else "oldest")
        if order not in ("newest", "oldest"):
            raise ApiError(400, "bad_parameter",
                           f"order must be 'newest' or 'oldest', got {order!r}")
        script = SCRIPTS["read_jobs"]
        with wrap_redis_errors(f"list {state} jobs of {q.name!r}"):
            reply: list[Any] = await script(q.client, [state_key(q.keys, state)], [
                q.keys.job_prefix, offset, limit,
                1 if order == "newest" else 0, _FIELD_CAP, *_LIST_FIELDS])
        width = 1 + len(_LIST_FIELDS)
        jobs = []
        for i in range(1, len(reply), width):
            f = dict(zip(_LIST_FIELDS, reply[i + 1:i + width], strict=True))
            if f["state"] is None:
                continue  # its hash is gone (expired by retention in this instant)
            progress = None
            if f["progress"] is not None:
                progress = capped(decoded(f["progress"]), 200)["json"]
            jobs.append({
                "id": reply[i].decode(), "task": as_text(f["task"]), "state": as_text(f["state"]),
                "priority": int(f["priority"] or 0), "attempts": int(f["attempts"] or 0),
                "max_attempts": int(f["max_attempts"] or 0),
                "created_at": ms_iso(f["created"]), "started_at": ms_iso(f["started"]),
                "finished_at": ms_iso(f["finished"]), "due_at": ms_iso(f["due"]),
                "error": cut_text(as_text(f["error"]), LIST_TEXT_CAP),
                "worker": as_text(f["worker"]),
                "progress": progress,
            })
        return Json({"queue": q.name, "state": str(state), "order": order, "offset": offset,
                     "limit": limit, "total": int(reply[0]), "jobs": jobs})

    async def job(self, request: Request) -> Response:
        """.../jobs/{id} (GET, DELETE) and .../jobs/{id}/{retry|promote|cancel} (POST). The id
        is the rest of the path, decoded exactly (see path_segments): an id sent as one
        segment, '/' encoded, is read as it is, whatever it contains."""
        segments = path_segments(request)  # api, queues, <queue>, jobs, <id...>[, action]
        if len(segments) < 5 or segments[3] != "jobs":
            raise ApiError(404, "not_found", f"nothing at {request.url.path} (see openapi.json)")
        q = self.named(segments[2])
        rest = segments[4:]
        action = None
        if request.method == "POST":
            if len(rest) < 2 or rest[-1] not in JOB_ACTIONS:
                raise ApiError(404, "not_found", "POST .../jobs/{id}/retry, .../jobs/{id}/promote,"
                                                 " .../jobs/{id}/cancel or .../jobs/{id}/change")
            action = rest.pop()
        return await self.act(q, "/".join(rest), request, action)

    async def job_by_query(self, request: Request) -> Response:
        """.../job?id= (GET, DELETE), .../job/retry?id=, .../job/promote?id=,
        .../job/cancel?id= and .../job/change?id= (POST): the same with the id in the query
        string, for ids no URL path can carry ('.' and '..', which clients resolve even
        percent-encoded)."""
        q = self.queue(request)
        job_id = request.query_params.get("id")
        if job_id is None:
            raise ApiError(400, "bad_parameter", "give the job id as ?id=")
        action = path_segments(request)[-1] if request.method == "POST" else None
        return await self.act(q, job_id, request, action)

    async def act(self, q: Queue, raw_id: str, request: Request,
                  action: str | None) -> Response:
        job_id = job_id_param(raw_id)
        method = request.method
        if action == "retry":
            await q.retry_jobs([job_id], strict=True)
        elif action == "promote":
            await q.promote_job(job_id)
        elif action == "cancel":
            # CANCELLED: it was waiting or delayed and never runs; ACTIVE: its worker stops
            # it and records it cancelled. A finished job: JobStateError, naming its state
            state = await q.cancel_job(job_id, by=requester(request))
            return Json({"ok": True, "id": job_id, "action": action, "state": str(state)})
        elif action == "change":
            # WAITING or DELAYED, as the new delay makes it; running or finished: 409
            changes = await change_body(request)
            try:
                state = await q.change_job(job_id, **changes)
            except ConfigurationError as e:  # out of range, or nothing to change
                raise ApiError(400, "bad_body", str(e)) from None
            return Json({"ok": True, "id": job_id, "action": action, "state": str(state)})
        elif method == "DELETE":
            await q.remove_job(job_id)
            return Json({"ok": True, "id": job_id, "action": "remove"})
        else:
            info = await q.job_info(job_id)
            if info is None:
                raise ApiError(404, "job_not_found", f"no job {job_id!r} in queue {q.name!r}")
            body = job_json(info, await q.job_logs(job_id))
            body["origin"] = await job_origin(q, job_id)
            body["flow"] = await flow_json(q, info)
            return Json(body)
        return Json({"ok": True, "id": job_id, "action": action})

    async def retry_failed(self, request: Request) -> Response:
        n = await self.queue(request).retry_failed()
        return Json({"ok": True, "retried": n})

    async def redrive(self, request: Request) -> Response:
        """This queue being a dead-letter queue: its jobs back to their origin queues."""
        q = self.queue(request)
        wanted = await redrive_body(request)
        n = await q.redrive(**wanted)
        return Json({"ok": True, "action": "redrive", "redriven": n})

    async def pause(self, request: Request) -> Response:
        await self.queue(request).pause()
        return Json({"ok": True, "paused": True})

    async def resume(self, request: Request) -> Response:
        await self.queue(request).resume()
        return Json({"ok": True, "paused": False})

    async def workers(self, request: Request) -> Response:
        q = self.queue(request)
        with wrap_redis_errors(f"list workers of {q.name!r}"):
            found = await live_workers(q.client, q.keys)
            seconds, micros = await q.client.time()
        return Json({"queue": q.name, "now": seconds + micros / 1e6, "workers": found})

    async def metrics(self, request: Request) -> Response:
        q = self.queue(request)
        minutes = int_param(request, "minutes", 60, 1, metrics.MINUTE_SLOTS)
        return Json(await metrics.read_window(q.client, q.keys, minutes))

    async def schedules(self, request: Request) -> Response:
        q = self.queue(request)
        infos = await q.schedules.list()
        return Json({"queue": q.name, "schedules": [{
            "name": s.name, "task": s.task, "cron": s.cron, "every_s": s.every_s, "tz": s.tz,
            "next_run_at": s.next_run_at, "next_tick_at": s.next_tick_at, "runs": s.runs,
            "last_tick_at": s.last_tick_at, "last_job_id": s.last_job_id,
            "last_state": s.last_state, "last_error": cut_text(s.last_error, LIST_TEXT_CAP),
        } for s in infos]})

    async def run_schedule(self, request: Request) -> Response:
        # api, queues, <queue>, schedules, <name...>, run: the name decoded exactly
        segments = path_segments(request)
        if len(segments) < 6 or segments[3] != "schedules" or segments[-1] != "run":
            raise ApiError(404, "not_found", "POST .../schedules/{name}/run")
        q = self.named(segments[2])
        name = "/".join(segments[4:-1])
        if not name:
            raise ApiError(404, "not_found", "POST .../schedules/{name}/run")
        if await q.schedules.get(name) is None:
            raise ApiError(404, "schedule_not_found", f"no schedule {name!r} in queue {q.name!r}")
        job = await q.schedules.run_now(name)
        return Json({"ok": True, "schedule": name, "job_id": job.id})

    async def prometheus(self, request: Request) -> Response:
        from ..prometheus import CONTENT_TYPE, render

        return Response(await render(list(self.queues.values())), media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        return Json(openapi_document(read_only=self.read_only))

