"""The HTTP API and the dashboard: one ASGI app (Starlette) over a set of queues.

Mount it in a host app with ``app.mount("/jobs", create_app([q], token=...))`` or run it
alone with ``aiojobs-redis dashboard``. Every list is paginated in Redis (ZRANGE by
rank), so no endpoint ever loads a whole state, whatever the size of the queue.
Errors are JSON: ``{"error": {"status": 404, "code": "job_not_found", "message": ...}}``.
Who may use the app, and from where, is decided before any route: see ``safety.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...errors import (
    AiojobsRedisError,
    ConfigurationError,
    JobNotFound,
    JobStateError,
    RedisError,
    RedisUnavailable,
    wrap_redis_errors,
)
from ...producer.job import JobInfo, JobLogLine
from ...producer.queue import Queue
from ...scripts import SCRIPTS
from ...states import FINISHED, STATE_SETS, JobState, state_key
from .. import metrics
from ..registry import live_workers
from .openapi import openapi_document
from .safety import (
    PAGE_PATH,
    AuthCheck,
    Guard,
    Json,
    error_response,
    make_policy,
)
from .views import (
    LIST_TEXT_CAP,
    ApiError,
    as_text,
    capped,
    cut_text,
    decoded,
    dt_iso,
    info_json,
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
#: the fields of the body of POST .../change, and the most bytes such a body may have
CHANGE_FIELDS: Final = ("priority", "delay_s")
MAX_CHANGE_BODY: Final = 1024
#: the fields of the body of POST .../redrive, their bounds, and the most bytes of a body
REDRIVE_FIELDS: Final = ("task", "error", "limit")
MAX_REDRIVE_LIMIT: Final = 1_000_000
MAX_REDRIVE_TASK: Final = 200  # a task's name is 1..200 characters
MAX_REDRIVE_ERROR: Final = 1000  # characters of the text looked for in a job's error
MAX_REDRIVE_BODY: Final = 8192
_BY_CAP: Final = 150  # bytes of a user's name recorded as who cancelled a job (max 200)



# ------------------------------------------------------------------------------ the API


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


def job_json(info: JobInfo, logs: Sequence[JobLogLine] = ()) -> dict[str, Any]:
    """One job as GET .../jobs/{id} answers it: the record, who cancelled it, and its log
    (oldest line first; each line's text is capped when written)."""
    body = info_json(info)
    body["cancelled_by"] = info.cancelled_by
    body["cancel_requested"] = info.cancel_requested
    body["logs"] = [{"at": dt_iso(line.at), "attempt": line.attempt, "text": line.text}
                    for line in logs]
    return body


FLOW_SHOWN = 50  # jobs listed each way in a job's flow section


async def flow_json(q: Queue, info: JobInfo) -> dict[str, Any] | None:
    """A job's place in its flow: the jobs it waits for (the first 50, with how each
    ended) and the jobs waiting for it (while it has not finished); None outside a flow."""
    waited_by = await q.job_dependents(info.id, limit=FLOW_SHOWN)
    if info.dependencies is None and not waited_by:
        return None
    waits_for = await q.job_dependencies(info.id) if info.dependencies else []
    return {
        "dependencies": info.dependencies or 0,
        "pending": info.dependencies_pending or 0,
        "waits_for": [{"id": d.id, "state": d.state, "error": cut_text(d.error, 300)}
                      for d in waits_for[:FLOW_SHOWN]],
        "waited_for_by": waited_by,
    }


async def job_origin(q: Queue, job_id: str) -> str | None:
    """The queue a job of a dead-letter queue came from (its record's ``origin``), or
    None for a job that was never dead-lettered."""
    with wrap_redis_errors(f"read the origin of job {job_id!r} of {q.name!r}"):
        raw = await q.client.hget(q.keys.job(job_id), "origin")
    if raw is None or isinstance(raw, str):  # a client that decodes replies gives str
        return raw
    return raw.decode("utf-8", "replace")


#: what json_body gives for a request without a body (JSON's null is None)
NO_BODY: Final = object()


async def json_body(request: Request, max_bytes: int) -> Any:
    """The request's body as JSON (NO_BODY when it is empty or blank): 400 ``bad_body``
    when it is larger than ``max_bytes`` or not JSON (``NaN`` and ``Infinity`` included)."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise ApiError(400, "bad_body", f"the body is larger than {max_bytes} bytes")

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(raw, parse_constant=refuse) if raw.strip() else NO_BODY
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        raise ApiError(400, "bad_body", f"the body is not JSON: {e}") from None


async def change_body(request: Request) -> dict[str, Any]:
    """The body of POST .../change: a JSON object with ``priority`` (an integer) and/or
    ``delay_s`` (a number), ``null`` standing for a field not given. Anything else is a
    400 ``bad_body``; the ranges are the queue's to check (ConfigurationError)."""
    body = await json_body(request, MAX_CHANGE_BODY)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_body", 'the body must be a JSON object: {"priority": 5},'
                                        ' {"delay_s": 60} or both')
    unknown = sorted(set(body) - set(CHANGE_FIELDS))
    if unknown:
        raise ApiError(400, "bad_body", f"unknown field(s) {unknown}: give priority, delay_s"
                                        " or both")
    priority, delay_s = body.get("priority"), body.get("delay_s")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ApiError(400, "bad_body", f"priority must be an integer, got {priority!r}")
    if delay_s is not None and (isinstance(delay_s, bool)
                                or not isinstance(delay_s, int | float)):
        raise ApiError(400, "bad_body", f"delay_s must be a number of seconds, got {delay_s!r}")
    if priority is None and delay_s is None:
        raise ApiError(400, "bad_body", "nothing to change: give priority, delay_s or both")
    return {"priority": priority, "delay_s": delay_s}


async def redrive_body(request: Request) -> dict[str, Any]:
    """The optional body of POST .../redrive: nothing, or a JSON object with ``task`` (a
    task's name), ``error`` (a text the job's error contains) and/or ``limit`` (at most
    this many jobs, 1..1,000,000), ``null`` standing for a field not given. Anything else
    is a 400 ``bad_body``."""
    body = await json_body(request, MAX_REDRIVE_BODY)
    if body is NO_BODY:
        return {"task": None, "error": None, "limit": None}
    if not isinstance(body, dict):
        raise ApiError(400, "bad_body", 'the body must be a JSON object, e.g. {"task":'
                                        ' "send_email", "error": "timeout", "limit": 100},'
                                        " or nothing (every job)")
    unknown = sorted(set(body) - set(REDRIVE_FIELDS))
    if unknown:
        raise ApiError(400, "bad_body", f"unknown field(s) {unknown}: give task, error"
                                        " and/or limit")
    task, error, limit = body.get("task"), body.get("error"), body.get("limit")
    for name, value, cap in (("task", task, MAX_REDRIVE_TASK),
                             ("error", error, MAX_REDRIVE_ERROR)):
        if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= cap):
            raise ApiError(400, "bad_body",
                           f"{name} must be a string of 1 to {cap} characters, got {value!r:.80}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or not 1 <= limit <= MAX_REDRIVE_LIMIT):
        raise ApiError(400, "bad_body", f"limit must be an integer from 1 to"
                                        f" {MAX_REDRIVE_LIMIT:,}, got {limit!r:.80}")
    return {"task": task, "error": error, "limit": limit}


def requester(request: Request) -> str:
    """Who asks for a change, as a job's record keeps it (``cancelled_by``): ``http``, and
    the user the host app authenticated, when it did (Starlette's AuthenticationMiddleware
    in front of a mounted app: ``http:<user's display name>``). A token or an ``auth``
    check names nobody."""
    user = request.scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return "http"
    name = " ".join(str(getattr(user, "display_name", "") or "").split())
    name = name.encode()[:_BY_CAP].decode("utf-8", "ignore")
    return f"http:{name}" if name else "http"


# ------------------------------------------------------------------------ the dashboard


class Page:
    """The dashboard: one HTML document with its script and style inline (package data),
    under a Content-Security-Policy that allows exactly those."""

    def __init__(self) -> None:
        folder = resources.files(__package__).joinpath("static")
        html = folder.joinpath("index.html").read_text("utf-8")
        js = folder.joinpath("app.js").read_text("utf-8")
        css = folder.joinpath("style.css").read_text("utf-8")
        self.body = (html.replace("/*STYLE*/", css).replace("/*SCRIPT*/", js)).encode()
        self.csp = (
            "default-src 'none'; connect-src 'self'; img-src 'self' data:; base-uri 'none';"
            f" form-action 'none'; frame-ancestors 'none'; script-src '{_sha256(js)}';"
            f" style-src '{_sha256(css)}'"
        )

    async def serve(self, request: Request) -> Response:
        return Response(self.body, media_type="text/html; charset=utf-8", headers={
            "Content-Security-Policy": self.csp, "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
        })


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


# ---------------------------------------------------------------------------- the app


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"nothing at {request.url.path} (see openapi.json)"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, code, message, exc.headers)


async def _core_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, JobNotFound):
        return error_response(404, "job_not_found", str(exc))
    if isinstance(exc, JobStateError):
        return error_response(409, "wrong_state", str(exc))
    if isinstance(exc, RedisUnavailable):
        return error_response(503, "redis_unavailable", str(exc))
    if isinstance(exc, RedisError):
        return error_response(502, "redis_error", str(exc))
    if isinstance(exc, LookupError):  # ScheduleNotFound and the like
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, ValueError):
        return error_response(400, "bad_request", str(exc))
    return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")


def create_app(queues: Queue | Sequence[Queue], *, token: str | None = None,
               read_only: bool = False, auth: AuthCheck | None = None,
               insecure_open: bool = False,
               allowed_hosts: Iterable[str] | None = None) -> Starlette:
    """The JSON API, Prometheus ``/metrics`` and the dashboard page for ``queues``.

    Say who may use it, at least one of (else ConfigurationError):

    ``token``: ``Authorization: Bearer <token>`` is required on every endpoint (the page
    itself loads without it; open it as ``.../#token=<token>``);
    ``auth``: a host app's ``(request) -> bool`` check (sync or async), run on every
    request; it may raise ``starlette.exceptions.HTTPException``;
    ``read_only``: every change (retry, remove, promote, cancel, pause, ...) is refused;
    ``insecure_open``: none of these: anyone who reaches the app may use it.

    ``allowed_hosts``: the ``Host`` names the app answers to besides the loopback names.
    Without it, a request that came in on a loopback address must name a loopback host
    (a page using DNS rebinding is refused) and others may name any; with it, every
    request must name one of them or a loopback host (``["*"]``: any host). A changing
    request from another origin is always refused. The app does not own the queues:
    close them yourself.
    """
    qs = (queues,) if isinstance(queues, Queue) else tuple(queues)
    if not qs or not all(isinstance(q, Queue) for q in qs):
        raise ConfigurationError("create_app needs one Queue or a sequence of Queues")
    if len({q.name for q in qs}) != len(qs):
        raise ConfigurationError("create_app got two queues with the same name")
    policy = make_policy(token=token, auth=auth, read_only=read_only,
                         insecure_open=insecure_open, allowed_hosts=allowed_hosts)
    api = Api(qs, read_only=read_only)
    page = Page()
    base = "/api/queues/{queue}"
    routes = [
        Route(PAGE_PATH, page.serve, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/metrics", api.prometheus, methods=["GET"]),
        Route("/api/queues", api.list_queues, methods=["GET"]),
        Route(base, api.get_queue, methods=["GET"]),
        Route(base + "/jobs", api.list_jobs, methods=["GET"]),
        # cancel and change have routes of their own (so the route table lists them, as
        # OpenAPI does); an id with a '/' sent as such goes past them to the next route,
        # which does the same
        Route(base + "/jobs/{job_id}/cancel", api.job, methods=["POST"]),
        Route(base + "/jobs/{job_id}/change", api.job, methods=["POST"]),
        Route(base + "/jobs/{rest:path}", api.job, methods=["GET", "DELETE", "POST"]),
        Route(base + "/job", api.job_by_query, methods=["GET", "DELETE"]),
        Route(base + "/job/retry", api.job_by_query, methods=["POST"]),
        Route(base + "/job/promote", api.job_by_query, methods=["POST"]),
        Route(base + "/job/cancel", api.job_by_query, methods=["POST"]),
        Route(base + "/job/change", api.job_by_query, methods=["POST"]),
        Route(base + "/retry-failed", api.retry_failed, methods=["POST"]),
        Route(base + "/redrive", api.redrive, methods=["POST"]),
        Route(base + "/pause", api.pause, methods=["POST"]),
        Route(base + "/resume", api.resume, methods=["POST"]),
        Route(base + "/workers", api.workers, methods=["GET"]),
        Route(base + "/metrics", api.metrics, methods=["GET"]),
        Route(base + "/schedules", api.schedules, methods=["GET"]),
        Route(base + "/schedules/{rest:path}", api.run_schedule, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, AiojobsRedisError: _core_error,
    })
    app.add_middleware(Guard, policy=policy)
    app.state.queues = api.queues
    return app
