"""What the HTTP API reads and answers, apart from its routes: request parameters and
exact paths, and the JSON shapes of a job and a queue (values capped for display)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote_to_bytes

import msgspec
from starlette.requests import Request

from ... import codec
from ...errors import InvalidJobId
from ...producer.job import JobInfo
from ...producer.job_ids import check_job_id
from ...states import STATE_SETS
from .. import metrics
from .safety import route_path

VALUE_CAP: Final = 4096  # characters of JSON shown for arguments, results and progress
LIST_TEXT_CAP: Final = 300  # characters of an error message in a job list
TRACEBACK_CAP: Final = 65_536

_json = msgspec.json.Encoder(enc_hook=repr)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


# ----------------------------------------------------------------------------- helpers


def ms_iso(raw: bytes | None) -> str | None:
    if raw is None or int(raw) <= 0:
        return None
    return datetime.fromtimestamp(int(raw) / 1000, tz=UTC).isoformat(timespec="milliseconds")


def dt_iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds")


def cut_text(text: str | None, cap: int) -> str | None:
    if text is None or len(text) <= cap:
        return text
    return text[:cap] + f"… [{len(text) - cap} more characters]"


def capped(value: Any, cap: int = VALUE_CAP) -> dict[str, Any]:
    """A value for display: its JSON text cut at ``cap`` characters; the value itself
    only when it fits."""
    text = _json.encode(value).decode()
    if len(text) <= cap:
        return {"value": value, "json": text, "size": len(text), "truncated": False}
    return {"json": text[:cap], "size": len(text), "truncated": True}


def decoded(raw: bytes) -> Any:
    try:
        return codec.decode_value(raw)
    except codec.DecodeError:
        return None


def as_text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", "replace")


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_parameter", f"{name} must be between {low} and {high}")
    return value


def job_id_param(raw: str) -> str:
    try:
        return check_job_id(raw)
    except InvalidJobId as e:
        raise ApiError(400, "bad_job_id", str(e)) from None


def _decode(segment: bytes) -> str:
    return unquote_to_bytes(segment).decode("utf-8", "replace")


def path_segments(request: Request) -> list[str]:
    """The segments of the request's route path, each percent-decoded on its own.

    The router matches the decoded path, in which an encoded slash (``%2F``) is a slash
    like any other. Here the path is split at the slashes that were sent as slashes, in
    the raw path, before decoding: ``jobs/a%2F..%2Fb`` is one segment, the job id
    ``a/../b``, and ``%2E%2E`` is the literal ``..``; so a job id or a schedule name is
    read exactly as it was encoded, and nothing in it can stand for a queue or an action.
    """
    decoded = route_path(request.scope)
    raw: bytes | None = request.scope.get("raw_path")
    if raw is None:  # an ASGI server that does not give it: the decoded path
        return decoded.split("/")[1:]
    parts = [_decode(s) for s in raw.split(b"?", 1)[0].split(b"/")]
    # the route path is the end of the raw path (after a mount point or a root path)
    for first in range(1, len(parts)):
        if "/" + "/".join(parts[first:]) == decoded:
            return parts[first:]
    raise ApiError(400, "bad_path", f"cannot read the path {decoded!r} exactly: is a"
                                    " slash of the mount point percent-encoded?")


def states() -> list[str]:
    """The job states, in display order: the table of aiojobs_redis.states."""
    return [str(s) for s in STATE_SETS]


def info_json(info: JobInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": info.id, "queue": info.queue, "task": info.task, "state": info.state,
        "priority": info.priority, "attempts": info.attempts,
        "max_attempts": info.max_attempts, "stalls": info.stalls,
        "args": capped(info.args), "kwargs": capped(info.kwargs),
        "progress": capped(info.progress), "result": capped(info.result),
        "error": cut_text(info.error, TRACEBACK_CAP),
        "traceback": cut_text(info.traceback, TRACEBACK_CAP),
        # the same text as the job lists give (milliseconds, UTC)
        "created_at": dt_iso(info.created_at), "started_at": dt_iso(info.started_at),
        "finished_at": dt_iso(info.finished_at), "due_at": dt_iso(info.due_at),
        "worker": info.worker,
        "payload_error": info.payload_error,
    }
    return out


def snapshot_json(s: metrics.Snapshot) -> dict[str, Any]:
    return {
        "name": s.queue, "counts": s.counts, "paused": s.paused, "workers": len(s.workers),
        "oldest_waiting_age_s": s.oldest_waiting_age_s,
        "totals": {k: s.totals[k] for k in ("completed", "failed", "retried", "stalled")},
    }
