"""The HTTP API and the dashboard: one ASGI app (Starlette) over a set of queues.

Mount it in a host app with ``app.mount("/jobs", create_app([q], token=...))`` or run it
alone with ``aiojobs-redis dashboard``. Every list is paginated in Redis (ZRANGE by
rank), so no endpoint ever loads a whole state, whatever the size of the queue.
Errors are JSON: ``{"error": {"status": 404, "code": "job_not_found", "message": ...}}``.
Who may use the app, and from where, is decided before any route: see ``safety.py``.

This module lays the app out: its routes, its error handlers and the dashboard page. The
endpoints are in ``api.py``, the detail of one job in ``detail.py``, request bodies in
``bodies.py``, the JSON shapes in ``views.py``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from importlib import resources

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
)
from ...producer.queue import Queue
from .api import Api
from .safety import PAGE_PATH, AuthCheck, Guard, error_response, make_policy
from .views import ApiError

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
