"""What a changing request of the HTTP API sends: the JSON body of POST .../change (a
job's new priority and delay) and of POST .../redrive (which dead-lettered jobs go back),
each checked field by field (a 400 ``bad_body`` names what is wrong), and who asks
(:func:`requester`, kept as who cancelled a job).
"""

from __future__ import annotations

import json
from typing import Any, Final

from starlette.requests import Request

from .views import ApiError

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

