"""aiojobs_redis.logs: the JSON formatter, configure_logging, and the command's
--log-format as users run it (a real worker process writing JSON lines to stderr)."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from aiojobs_redis import Queue
from aiojobs_redis.logs import EXTRA_FIELDS, JsonFormatter, configure_logging, jsonable
from tests.test_cli import COMMAND, ROOT, Lines, env, finish

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _strict(line: str) -> dict[str, Any]:
    """Parse one JSON line as a strict reader would (no NaN or Infinity)."""
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    assert "\n" not in line and len(line.splitlines()) == 1, line
    value: dict[str, Any] = json.loads(line, parse_constant=refuse)
    return value


def _record(msg: str = "job %s done", args: tuple[Any, ...] = ("j1",), *,
            exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    record = logging.getLogger("aiojobs_redis.worker").makeRecord(
        "aiojobs_redis.worker", logging.INFO, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_a_record_is_one_json_line_with_its_fields() -> None:
    record = _record(job_id="j1", task="send", queue="emails", attempt=2, duration_ms=12.5,
                     worker_id="host:1:ab", outcome="completed", unrelated="not copied")
    out = _strict(JsonFormatter().format(record))
    assert out == {
        "time": out["time"], "level": "INFO", "logger": "aiojobs_redis.worker",
        "message": "job j1 done", "job_id": "j1", "task": "send", "queue": "emails",
        "attempt": 2, "duration_ms": 12.5, "worker_id": "host:1:ab", "outcome": "completed",
    }
    assert ISO_MS.fullmatch(out["time"])
    created = datetime.fromtimestamp(record.created, tz=UTC)
    assert out["time"] == created.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_fields_that_are_not_given_are_left_out() -> None:
    out = _strict(JsonFormatter().format(_record(job_id="j1")))
    assert set(out) == {"time", "level", "logger", "message", "job_id"}
    assert set(EXTRA_FIELDS) == {"job_id", "task", "queue", "attempt", "duration_ms",
                                 "worker_id", "outcome"}


def test_an_exception_is_an_exc_field() -> None:
    try:
        raise ValueError("bad value\nsecond line")
    except ValueError:
        record = _record("failed", (), exc_info=sys.exc_info(), job_id="j2")
    out = _strict(JsonFormatter().format(record))
    assert out["message"] == "failed" and out["job_id"] == "j2"
    assert out["exc"].startswith("Traceback (most recent call last):")
    assert out["exc"].endswith("ValueError: bad value\nsecond line")
    # logging.exception() through a handler: the same
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logs.exc")
    logger.addHandler(handler)
    logger.propagate = False
    table: dict[str, int] = {}
    try:
        try:
            table["missing"]
        except KeyError:
            logger.exception("lookup failed", extra={"task": "t"})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    out = _strict(stream.getvalue().rstrip("\n"))
    assert out["level"] == "ERROR" and out["task"] == "t" and "KeyError: 'missing'" in out["exc"]


class Opaque:
    def __repr__(self) -> str:
        return "<Opaque>"


class Broken:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_values_json_cannot_hold_are_written_as_their_repr() -> None:
    record = _record(job_id=b"\x00\xff", task=Opaque(), queue={1, 2}, attempt=float("nan"),
                     duration_ms=float("inf"), worker_id={("a", 1): [b"x", Opaque()]},
                     outcome=Broken())
    out = _strict(JsonFormatter().format(record))
    assert out["job_id"] == repr(b"\x00\xff")
    assert out["task"] == "<Opaque>"
    assert out["queue"] == repr({1, 2})
    assert out["attempt"] == "nan" and out["duration_ms"] == "inf"
    assert out["worker_id"] == {repr(("a", 1)): [repr(b"x"), "<Opaque>"]}
    assert out["outcome"].startswith("<Broken object (repr failed")
    deep: list[Any] = []
    for _ in range(200):
        deep = [deep]
    assert isinstance(jsonable(deep), list)  # cut, not a RecursionError


def test_a_message_stays_on_one_line() -> None:
    text = "line one\nline two\r\u2028\u2029\x85 \x1b[31m \udcff end"
    line = JsonFormatter().format(_record("%s", (text,)))
    assert len(line.splitlines()) == 1
    line.encode("utf-8")  # writable as UTF-8 (the lone surrogate escaped)
    assert _strict(line)["message"] == text


def test_bad_log_arguments_do_not_lose_the_record() -> None:
    out = _strict(JsonFormatter().format(_record("%d items", ("many",))))
    assert "%d items" in out["message"] and "many" in out["message"]


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield root
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        root.setLevel(level)


def test_configure_logging(root_logger: logging.Logger) -> None:
    before = len(root_logger.handlers)
    stream = io.StringIO()
    configure_logging("warning", "json", stream=stream)
    configure_logging("WARNING", "json", stream=stream)  # replaces its own handler
    assert len(root_logger.handlers) == before + 1
    logging.getLogger("aiojobs_redis.test").info("not shown")
    logging.getLogger("aiojobs_redis.test").warning("shown %d", 1, extra={"queue": "q"})
    [line] = stream.getvalue().splitlines()
    assert _strict(line)["message"] == "shown 1" and _strict(line)["queue"] == "q"
    text = io.StringIO()
    configure_logging(logging.INFO, "text", stream=text)
    assert len(root_logger.handlers) == before + 1
    logging.getLogger("aiojobs_redis.test").info("plain")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d [\d:,]+ INFO    aiojobs_redis.test: plain\n",
                        text.getvalue())
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("INFO", "xml")


@pytest.mark.parametrize("how", ["before", "after", "env"])
def test_worker_logs_json_lines(redis_url: str, queue: Queue, how: str) -> None:
    """The command's worker with --log-format json (or $AJR_LOG_FORMAT=json): every line
    on stderr is a JSON object, from the start line to the last one after SIGTERM."""
    argv = ["worker", "tests.test_cli:make_worker", "--url", redis_url]
    extra = {"AJR_TEST_QUEUE": queue.name}
    if how == "before":
        argv = ["--log-format", "json", *argv]
    elif how == "after":
        argv = [*argv, "--log-format", "JSON"]
    else:
        extra["AJR_LOG_FORMAT"] = "json"
    proc = subprocess.Popen([*COMMAND, *argv], cwd=ROOT, env=env(**extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = Lines(proc.stderr)
    try:
        started = lines.wait_for(lambda x: " started: " in x)
        assert started is not None, lines.seen
    finally:
        code, seen = finish(proc, lines)
    assert code == 0, seen
    records = [_strict(x) for x in seen]
    for r in records:
        assert ISO_MS.fullmatch(r["time"]) and r["level"] in ("INFO", "WARNING")
        assert r["logger"].startswith("aiojobs_redis")
    messages = [r["message"] for r in records]
    assert any(m.startswith("worker ") and " started: " in m for m in messages), messages
    assert any("SIGTERM" in m for m in messages) and "stopped" in messages[-1], messages
