"""The OpenAPI 3.1 description of the HTTP API (served at ``/openapi.json``).

Kept by hand next to the routes; a test checks that every route of the app is
described here and every path described here is a route.
"""

from __future__ import annotations

from typing import Any, Final

from ...states import STATE_SETS

_ERROR: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["status", "code", "message"],
                             "properties": {"status": {"type": "integer"},
                                            "code": {"type": "string"},
                                            "message": {"type": "string"}}}},
}
_OBJECT: Final = {"type": "object"}
_CANCELLED: Final[dict[str, Any]] = {
    "type": "object", "required": ["ok", "id", "action", "state"], "properties": {
        "ok": {"const": True}, "id": {"type": "string"}, "action": {"const": "cancel"},
        "state": {"enum": ["cancelled", "active"], "description":
                  "cancelled: the job was waiting or delayed and will never run; active: it"
                  " is running, its worker stops it within milliseconds and records it"
                  " cancelled"},
    }}
_CHANGED: Final[dict[str, Any]] = {
    "type": "object", "required": ["ok", "id", "action", "state"], "properties": {
        "ok": {"const": True}, "id": {"type": "string"}, "action": {"const": "change"},
        "state": {"enum": ["waiting", "delayed"], "description":
                  "the job's state after the change: delayed when its new delay is in the"
                  " future, waiting otherwise"},
    }}
_CHANGE_BODY: Final[dict[str, Any]] = {
    "required": True,
    "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "properties": {
            "priority": {"type": ["integer", "null"], "minimum": -1000, "maximum": 1000,
                         "description": "the new priority, higher runs first (a waiting job"
                                        " keeps its place among the jobs of that priority)"},
            "delay_s": {"type": ["number", "null"], "minimum": 0, "description":
                        "run no earlier than this many seconds from now (0: a delayed job"
                        " waits now)"},
        }}}},
    "description": "priority, delay_s or both (null: not changed); anything else is 400"
                   " bad_body",
}
_CHANGE_TEXT: Final = (
    "change a waiting or delayed job's priority and/or delay (400 bad_body for a body that"
    " is not such an object or is out of range; 409 for a running or finished job, the"
    " message naming its state)")
_JOB_TEXT: Final = (
    "one job: arguments and result (capped), progress, attempts, error and traceback,"
    " timestamps, who cancelled it (cancelled_by), whether its cancellation is pending"
    " (cancel_requested), the queue it came from when it was dead-lettered (origin), and"
    " its log (logs: its last 100 lines, oldest first, each {at, attempt, text})")
_LOG_LINE: Final[dict[str, Any]] = {
    "type": "object", "required": ["at", "attempt", "text"], "properties": {
        "at": {"type": "string", "description": "when it was written (ISO-8601, UTC, ms)"},
        "attempt": {"type": "integer"},
        "text": {"type": "string", "description": "at most 2,000 characters"},
    }}
_JOB_SCHEMA: Final[dict[str, Any]] = {
    "type": "object", "properties": {
        "logs": {"type": "array", "items": _LOG_LINE},
        "origin": {"type": ["string", "null"], "description":
                   "in a dead-letter queue: the queue the job failed in and goes back to"
                   " when redriven; null for a job that was never dead-lettered"},
        "flow": {"type": ["object", "null"], "description":
                 "a job of a flow: dependencies (how many it waits for), pending (how many"
                 " have not finished), waits_for (the first 50: {id, state, error}) and"
                 " waited_for_by (ids of the first 50 jobs waiting for it, while it has"
                 " not finished); null outside a flow"},
    }}
_REDRIVEN: Final[dict[str, Any]] = {
    "type": "object", "required": ["ok", "action", "redriven"], "properties": {
        "ok": {"const": True}, "action": {"const": "redrive"},
        "redriven": {"type": "integer", "minimum": 0,
                     "description": "how many jobs went back to their origin queues"},
    }}
_REDRIVE_BODY: Final[dict[str, Any]] = {
    "required": False,
    "content": {"application/json": {"schema": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "task": {"type": ["string", "null"], "minLength": 1, "maxLength": 200,
                     "description": "only the jobs of this task (its name)"},
            "error": {"type": ["string", "null"], "minLength": 1, "maxLength": 1000,
                      "description": "only the jobs whose error contains this text"},
            "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000,
                      "description": "at most this many jobs, oldest first"},
        }}}},
    "description": "which jobs (null: not filtered); no body: every job of the queue."
                   " Anything else is 400 bad_body",
}
_REDRIVE_TEXT: Final = (
    "this queue being a dead-letter queue: send its failed jobs back to their origin queues"
    " as new waiting jobs with the same ids and fresh attempts (all of them, or those of a"
    " task, or those whose error contains a text; at most limit). Jobs with no origin stay."
    " 400 bad_body for a body that is not such an object or is out of range")
_CANCEL_TEXT: Final = (
    "cancel a waiting, delayed or active job (409 once it has finished: completed, failed or"
    " cancelled). Recorded as cancelled by 'http', or 'http:<user>' when the host app"
    " authenticated a user")


def _param(name: str, where: str, schema: dict[str, Any], text: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": text}


_QUEUE = _param("queue", "path", {"type": "string"}, "a queue served by this app")
_JOB = _param("job_id", "path", {"type": "string"},
              "job id, percent-encoded: send it as one segment, '/' as %2F (a '/' sent as"
              " such is also read as a '/' of the id). The ids '.' and '..' cannot be sent"
              " in a path (clients resolve them, even as %2E): use .../job?id=")
_JOB_QUERY = _param("id", "query", {"type": "string"}, "job id (any id, '.' and '..' too)",
                    required=True)


def _queues_schema(states: list[str]) -> dict[str, Any]:
    return {"type": "object", "required": ["queues", "states", "read_only"], "properties": {
        "queues": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"},
            "counts": {"type": "object", "description": "jobs per state (keys: states)",
                       "additionalProperties": {"type": "integer"}},
            "paused": {"type": "boolean"}, "workers": {"type": "integer"},
            "oldest_waiting_age_s": {"type": ["number", "null"]},
            "totals": {"type": "object", "additionalProperties": {"type": "integer"}},
        }}},
        "states": {"type": "array", "items": {"enum": states}, "description":
                   "every job state, in display order (the table of aiojobs_redis.states):"
                   " the dashboard builds its counts and tabs from it"},
        "read_only": {"type": "boolean"},
    }}


def _op(summary: str, params: list[dict[str, Any]] | None = None, *, changes: bool = False,
        content: str = "application/json", errors: tuple[int, ...] = (400, 404),
        schema: dict[str, Any] | None = None,
        body: dict[str, Any] | None = None) -> dict[str, Any]:
    if schema is None:
        schema = _OBJECT if content == "application/json" else {"type": "string"}
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {content: {"schema": schema}}},
    }
    codes = set(errors) | {400, 401}  # 400: bad_host, token_in_url (any request)
    if changes:
        codes |= {403, 409}
    for code in sorted(codes):
        responses[str(code)] = {"description": "error",
                                "content": {"application/json": {"schema": _ERROR}}}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


def openapi_document(*, read_only: bool = False) -> dict[str, Any]:
    states = [str(s) for s in STATE_SETS]
    paths: dict[str, Any] = {
        "/": {"get": _op("the dashboard page (HTML)", content="text/html", errors=())},
        "/openapi.json": {"get": _op("this document", errors=())},
        "/metrics": {"get": _op("Prometheus metrics of every queue (text format 0.0.4)",
                                content="text/plain", errors=())},
        "/api/queues": {"get": _op("every queue: counts, paused, live workers, oldest waiting"
                                   " job's age, totals; and the job states in order",
                                   errors=(), schema=_queues_schema(states))},
        "/api/queues/{queue}": {"get": _op("one queue's snapshot with every cumulative counter",
                                           [_QUEUE])},
        "/api/queues/{queue}/jobs": {"get": _op("a page of jobs in one state (paginated in"
                                                " Redis)", [
            _QUEUE,
            _param("state", "query", {"enum": states, "default": "failed"}, "job state"),
            _param("offset", "query", {"type": "integer", "minimum": 0, "default": 0}, "skip"),
            _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200,
                                      "default": 20}, "page size"),
            _param("order", "query", {"enum": ["newest", "oldest"]},
                   "default: newest for completed/failed, run order (oldest) otherwise"),
        ])},
        "/api/queues/{queue}/jobs/{job_id}": {
            "get": _op(_JOB_TEXT, [_QUEUE, _JOB], schema=_JOB_SCHEMA),
            "delete": _op("remove a job (refused while active: 409)", [_QUEUE, _JOB],
                          changes=True),
        },
        "/api/queues/{queue}/jobs/{job_id}/retry": {
            "post": _op("put a failed job back to waiting (409 unless failed)", [_QUEUE, _JOB],
                        changes=True)},
        "/api/queues/{queue}/jobs/{job_id}/promote": {
            "post": _op("run a delayed job now (409 unless delayed)", [_QUEUE, _JOB],
                        changes=True)},
        "/api/queues/{queue}/jobs/{job_id}/cancel": {
            "post": _op(_CANCEL_TEXT, [_QUEUE, _JOB], changes=True, schema=_CANCELLED)},
        "/api/queues/{queue}/jobs/{job_id}/change": {
            "post": _op(_CHANGE_TEXT, [_QUEUE, _JOB], changes=True, schema=_CHANGED,
                        body=_CHANGE_BODY)},
        "/api/queues/{queue}/job": {
            "get": _op("one job, its id in the query string (any id)", [_QUEUE, _JOB_QUERY],
                       schema=_JOB_SCHEMA),
            "delete": _op("remove a job, its id in the query string", [_QUEUE, _JOB_QUERY],
                          changes=True),
        },
        "/api/queues/{queue}/job/retry": {
            "post": _op("retry a failed job, its id in the query string", [_QUEUE, _JOB_QUERY],
                        changes=True)},
        "/api/queues/{queue}/job/promote": {
            "post": _op("promote a delayed job, its id in the query string",
                        [_QUEUE, _JOB_QUERY], changes=True)},
        "/api/queues/{queue}/job/cancel": {
            "post": _op("cancel a job, its id in the query string", [_QUEUE, _JOB_QUERY],
                        changes=True, schema=_CANCELLED)},
        "/api/queues/{queue}/job/change": {
            "post": _op("change a waiting or delayed job's priority and/or delay, its id in"
                        " the query string", [_QUEUE, _JOB_QUERY], changes=True,
                        schema=_CHANGED, body=_CHANGE_BODY)},
        "/api/queues/{queue}/retry-failed": {
            "post": _op("put every failed job back to waiting", [_QUEUE], changes=True)},
        "/api/queues/{queue}/redrive": {
            "post": _op(_REDRIVE_TEXT, [_QUEUE], changes=True, schema=_REDRIVEN,
                        body=_REDRIVE_BODY)},
        "/api/queues/{queue}/pause": {
            "post": _op("workers stop taking jobs of this queue", [_QUEUE], changes=True)},
        "/api/queues/{queue}/resume": {
            "post": _op("workers take jobs of this queue again", [_QUEUE], changes=True)},
        "/api/queues/{queue}/workers": {"get": _op("live workers and their heartbeats",
                                                   [_QUEUE])},
        "/api/queues/{queue}/metrics": {"get": _op("per-minute series and percentiles", [
            _QUEUE, _param("minutes", "query", {"type": "integer", "minimum": 1,
                                                "maximum": 1440, "default": 60}, "window"),
        ])},
    }
    name = _param("name", "path", {"type": "string"}, "schedule name")
    paths["/api/queues/{queue}/schedules"] = {
        "get": _op("schedules with their next run and last outcome", [_QUEUE])}
    paths["/api/queues/{queue}/schedules/{name}/run"] = {
        "post": _op("enqueue one job of the schedule now", [_QUEUE, name], changes=True)}
    description = (
        "Operations API of aiojobs_redis. Errors are JSON: "
        '{"error": {"status": ..., "code": ..., "message": ...}}. A token, when the app has'
        " one, goes in 'Authorization: Bearer', never in the URL (a query string with"
        " 'token' is refused: 400 token_in_url)."
    )
    if read_only:
        description += " This instance is read-only: every POST and DELETE answers 403."
    return {
        "openapi": "3.1.0",
        "info": {"title": "aiojobs_redis operations API", "version": _version(),
                 "description": description},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }


def _version() -> str:
    from ... import __version__

    return __version__
