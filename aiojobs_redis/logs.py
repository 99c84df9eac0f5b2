"""Logging set-up: plain text or one JSON object per line.

``configure_logging(level, fmt)`` is what the ``aiojobs-redis`` command calls (its
``--log-level`` and ``--log-format``); an application that configures logging itself can
use :class:`JsonFormatter` on its own handlers.

A JSON line has ``time`` (ISO-8601 UTC with milliseconds), ``level``, ``logger`` and
``message``; then each of :data:`EXTRA_FIELDS` that the record carries (given with
``log.info(..., extra={"job_id": ...})``); ``exc`` with the formatted exception when there
is one, ``stack`` with ``stack_info``. A value that JSON cannot hold is written as its
``repr``: a log call never fails because of what it carries.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO

#: record attributes copied into a JSON line when a log call passes them in ``extra=``
EXTRA_FIELDS: Final = ("job_id", "task", "queue", "attempt", "duration_ms", "worker_id",
                       "outcome")

LOG_FORMATS: Final = ("text", "json")
LogFormat = Literal["text", "json"]

#: the text format of the command's logs
TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: characters JSON leaves unescaped that some readers take as line breaks
_LINE_BREAKS: Final = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}
_MAX_DEPTH: Final = 50


def jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` made of what ``json.dumps`` writes as valid JSON: str, int, finite
    float, bool, None, lists and str-keyed dicts. Anything else (bytes, a set, an
    object, NaN, a dict key that is not a string, nesting deeper than 50) becomes its
    ``repr`` (a tuple becomes a list)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if _depth >= _MAX_DEPTH:
        return repr(value)
    if isinstance(value, list | tuple):
        return [jsonable(v, _depth + 1) for v in value]
    if isinstance(value, dict):
        return {k if isinstance(k, str) else repr(k): jsonable(v, _depth + 1)
                for k, v in value.items()}
    if isinstance(value, datetime):
        return iso_time(value)
    try:
        return repr(value)
    except Exception as e:  # a broken __repr__ must not break the caller
        return f"<{type(value).__name__} object (repr failed: {e!r})>"


def iso_time(value: datetime) -> str:
    """ISO-8601 in UTC with milliseconds: ``2024-05-01T12:00:00.123Z`` (a naive
    datetime is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_line(obj: Any) -> str:
    """``obj`` as one line of JSON (UTF-8 text, no line break of any kind inside)."""
    text = json.dumps(jsonable(obj), ensure_ascii=False, allow_nan=False)
    for char, escaped in _LINE_BREAKS.items():
        if char in text:
            text = text.replace(char, escaped)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: written as JSON's \udXXX escapes
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class JsonFormatter(logging.Formatter):
    """Each record as one line of JSON (see the module's text for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception as e:  # bad %-arguments: say so rather than lose the record
            message = f"{record.msg!r} % {record.args!r} (log arguments do not fit: {e})"
        created = datetime.fromtimestamp(record.created, tz=UTC)
        out: dict[str, Any] = {
            "time": iso_time(created),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for name in EXTRA_FIELDS:
            if name in record.__dict__:
                out[name] = record.__dict__[name]
        if record.exc_info and not record.exc_text:  # cached as logging.Formatter does
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json_line(out)


_HANDLER_MARK: Final = "_aiojobs_redis_handler"


def configure_logging(level: int | str = "INFO", fmt: LogFormat | str = "text", *,
                      stream: TextIO | None = None) -> logging.Handler:
    """Log records of ``level`` and above to ``stream`` (default: stderr) as ``text``
    or ``json`` lines, through one handler on the root logger. Calling it again replaces
    the handler it installed before; other handlers are left alone."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
