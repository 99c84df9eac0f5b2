"""Worker middleware, job headers, OpenTelemetry tracing and the worker's job log lines,
against a real Redis."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aiojobs_redis import (
    ConfigurationError,
    FixedBackoff,
    JobContext,
    JobFailed,
    JobOptions,
    JobState,
    Queue,
    TracingMiddleware,
    Worker,
    add_header_source,
    current_job,
    instrument_tracing,
    remove_header_source,
    task,
    uninstrument_tracing,
)

from .conftest import hang

CallNext = Callable[[], Awaitable[Any]]
NOW = FixedBackoff(delay_s=0)  # a retry without a wait


@task(name="mw.add")
async def add(a: int, b: int) -> int:
    return a + b


@task(name="mw.boom", attempts=2)
async def boom() -> None:
    raise ValueError("boom")


@task(name="mw.sync_mul")
def sync_mul(a: int, b: int) -> int:
    return a * b


@task(name="mw.slow", timeout_s=0.05)
async def slow() -> None:
    await hang()


@task(name="mw.headers")
async def read_headers() -> dict[str, str]:
    return dict(current_job().headers)


async def burst(queue: Queue, *tasks: Any, **kwargs: Any) -> Worker:
    worker = Worker(queue, tasks=list(tasks), handle_signals=False, concurrency=4, **kwargs)
    await asyncio.wait_for(worker.run(burst=True), 30)
    return worker


async def test_middleware_runs_in_order_around_every_attempt(queue: Queue) -> None:
    trail: list[str] = []

    def recorder(name: str) -> Callable[[JobContext, CallNext], Awaitable[Any]]:
        async def middleware(ctx: JobContext, call_next: CallNext) -> Any:
            trail.append(f"{name} before {ctx.task} #{ctx.attempt}")
            try:
                result = await call_next()
            except Exception as e:
                trail.append(f"{name} failed {type(e).__name__}")
                raise
            trail.append(f"{name} after {result!r}")
            return result
        return middleware

    ok = await queue.enqueue(add, 2, 3)
    await burst(queue, add, middleware=[recorder("outer"), recorder("inner")])
    assert await ok.result(timeout=5) == 5
    assert trail == ["outer before mw.add #1", "inner before mw.add #1", "inner after 5",
                     "outer after 5"]

    trail.clear()
    bad = await queue.enqueue(boom.options(backoff=NOW, attempts=2))
    await burst(queue, boom, middleware=[recorder("m")])
    with pytest.raises(JobFailed):
        await bad.result(timeout=5)
    assert trail == ["m before mw.boom #1", "m failed ValueError",
                     "m before mw.boom #2", "m failed ValueError"]


async def test_middleware_can_change_the_result_and_wraps_sync_handlers(queue: Queue) -> None:
    async def doubler(ctx: JobContext, call_next: CallNext) -> Any:
        return 2 * await call_next()

    async def absorb(ctx: JobContext, call_next: CallNext) -> Any:
        try:
            return await call_next()
        except ValueError:
            return "absorbed"

    product = await queue.enqueue(sync_mul, 3, 4)
    failing = queue.job((await queue.enqueue(boom)).id)  # its result: what absorb returns
    await burst(queue, sync_mul, boom, middleware=[absorb, doubler])
    assert await product.result(timeout=5) == 24
    assert await failing.result(timeout=5) == "absorbed"


def watcher(seen: list[str]) -> Callable[[JobContext, CallNext], Awaitable[Any]]:
    """A middleware that notes what came out of the handler, by kind, and lets it through."""
    async def watch(ctx: JobContext, call_next: CallNext) -> Any:
        try:
            return await call_next()
        except BaseException as e:
            seen.append("TimeoutError" if isinstance(e, TimeoutError) else type(e).__name__)
            raise
    return watch


async def test_the_timeout_covers_the_handler_and_middleware_sees_it(queue: Queue) -> None:
    seen: list[str] = []
    job = await queue.enqueue(slow)
    await burst(queue, slow, middleware=[watcher(seen)])
    info = await job.info()
    assert info is not None and info.state is JobState.FAILED
    assert info.error is not None and info.error.startswith("Timeout:"), info.error
    assert seen == ["TimeoutError"]


async def test_a_failing_middleware_fails_the_attempt_not_the_worker(queue: Queue) -> None:
    async def broken(ctx: JobContext, call_next: CallNext) -> Any:
        raise RuntimeError("middleware broke")

    job = await queue.enqueue(add, 1, 1)
    worker = await burst(queue, add, middleware=[broken])
    info = await job.info()
    assert info is not None and info.state is JobState.FAILED
    assert info.error == "RuntimeError: middleware broke"
    assert worker.failed == 1


def test_middleware_must_be_callable(queue: Queue) -> None:
    with pytest.raises(ConfigurationError, match="middleware"):
        Worker(queue, tasks=[add], middleware=["not callable"])  # type: ignore[list-item]


async def test_headers_travel_from_the_producer_to_the_handler(queue: Queue) -> None:
    calls = 0

    def request_id() -> dict[str, str]:
        nonlocal calls
        calls += 1
        return {"x-request-id": "req-42"}

    def broken() -> dict[str, str]:
        raise RuntimeError("a header source that fails costs no job")

    plain = await queue.enqueue(read_headers)
    add_header_source(broken)
    add_header_source(request_id)
    try:
        jobs = await queue.enqueue_many([read_headers.call() for _ in range(3)])
    finally:
        remove_header_source(request_id)
        remove_header_source(broken)
    assert calls == 1, "one call of a source per enqueue call, not per job"
    await burst(queue, read_headers)
    assert await plain.result(timeout=5) == {}
    for job in jobs:
        assert await job.result(timeout=5) == {"x-request-id": "req-42"}
        info = await job.info()
        assert info is not None and info.args == [] and info.kwargs == {}


# ---------------------------------------------------------------------------- tracing

@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    uninstrument_tracing()
    provider.shutdown()


async def test_a_trace_goes_from_the_enqueueing_span_into_each_attempt(
        queue: Queue, spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    instrument_tracing(provider)
    tracer = provider.get_tracer("web")
    with tracer.start_as_current_span("POST /signup") as request_span:
        ok = await queue.enqueue(add, 1, 2)
        bad = await queue.enqueue(boom.options(backoff=NOW))
    untraced = await queue.enqueue(add, 5, 5)  # outside any span: a trace of its own
    await burst(queue, add, boom)
    assert await ok.result(timeout=5) == 3
    with pytest.raises(JobFailed):
        await bad.result(timeout=5)

    finished = [s for s in exporter.get_finished_spans() if s.name.startswith("process ")]
    by_job: dict[str, list[Any]] = {}
    for span in finished:
        assert span.attributes is not None
        by_job.setdefault(str(span.attributes["messaging.message.id"]), []).append(span)
    assert sorted(len(v) for v in by_job.values()) == [1, 1, 2], "one span per attempt"
    request = request_span.get_span_context()
    for job_id in (ok.id, bad.id):
        for span in by_job[job_id]:
            assert span.kind is SpanKind.CONSUMER
            assert span.context.trace_id == request.trace_id
            assert span.parent is not None and span.parent.span_id == request.span_id
    (ok_span,) = by_job[ok.id]
    assert ok_span.status.status_code is StatusCode.UNSET
    assert ok_span.attributes["messaging.destination.name"] == queue.name
    assert ok_span.attributes["aiojobs_redis.task"] == "mw.add"
    assert [s.attributes["aiojobs_redis.attempt"] for s in by_job[bad.id]] == [1, 2]
    for span in by_job[bad.id]:
        assert span.status.status_code is StatusCode.ERROR
        assert [e.name for e in span.events] == ["exception"]
    (own,) = by_job[untraced.id]
    assert own.parent is None and own.context.trace_id != request.trace_id


async def test_tracing_middleware_without_the_global_switch(
        queue: Queue, spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    job = await queue.enqueue(add, 1, 2)
    await burst(queue, add, middleware=[TracingMiddleware(provider)])
    assert await job.result(timeout=5) == 3
    (span,) = exporter.get_finished_spans()
    assert span.name == "process mw.add" and span.parent is None


# ------------------------------------------------------------------------- log lines

async def test_log_lines_carry_durations_fields_and_one_traceback(
        queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiojobs_redis.worker")
    ok = await queue.enqueue(add, 1, 2)
    bad = await queue.enqueue(boom.options(backoff=NOW))
    await burst(queue, add, boom)
    await ok.result(timeout=5)
    records = [r for r in caplog.records if getattr(r, "job_id", None) in (ok.id, bad.id)]
    done = [r for r in records if getattr(r, "outcome", "") == "completed"]
    assert len(done) == 1 and " completed in " in done[0].getMessage()
    assert done[0].__dict__["duration_ms"] >= 0 and done[0].__dict__["task"] == "mw.add"
    retrying = [r for r in records if getattr(r, "outcome", "") == "retrying"]
    assert len(retrying) == 1 and "Traceback" not in retrying[0].getMessage()
    failed = [r for r in records if getattr(r, "outcome", "") == "failed"]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING
    text = failed[0].getMessage()
    assert "failed for good after attempt 2" in text
    assert text.count("Traceback (most recent call last)") == 1
    assert 'raise ValueError("boom")' in text
    assert failed[0].__dict__["attempt"] == 2 and failed[0].__dict__["queue"] == queue.name

    caplog.clear()
    quiet = await queue.enqueue(boom.options(backoff=NOW, attempts=1))
    await burst(queue, boom, log_tracebacks=False)
    (line,) = [r for r in caplog.records if getattr(r, "job_id", None) == quiet.id
               and getattr(r, "outcome", "") == "failed"]
    assert "Traceback" not in line.getMessage()
    info = await quiet.info()
    assert info is not None and info.traceback and "Traceback" in info.traceback


async def test_the_no_persistence_warning_says_how_to_silence_it(
        queue: Queue, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, logger="aiojobs_redis.worker")
    await burst(queue, add)
    (warning,) = [r.getMessage() for r in caplog.records if "persistence is off" in
                  r.getMessage()]
    assert "AJR_NO_PERSISTENCE_OK=1 silences this warning" in warning
    caplog.clear()
    monkeypatch.setenv("AJR_NO_PERSISTENCE_OK", "1")
    await burst(queue, add)
    assert not [r for r in caplog.records if "persistence is off" in r.getMessage()]


def test_job_options_are_untouched_by_headers() -> None:
    # headers live in the payload, never in the stored options: the options cache of a
    # worker stays keyed by a few distinct encodings
    assert "headers" not in JobOptions.__struct_fields__


def test_the_middleware_example_runs(redis_url: str) -> None:
    """docs/examples/middleware.py, as docs/middleware.md presents it."""
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "middleware.py"
    done = subprocess.run([sys.executable, str(example)], env={"REDIS_URL": redis_url},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "cat.png resized (request req-7)",
        "failed",
        "[\"flaky attempt 2: ConnectionError('upstream down')\"]",
        "[(('flaky', 'error'), 2), (('resize', 'ok'), 1)]",
    ]


@task(name="mw.sync_slow", timeout_s=0.05)
def sync_slow() -> None:
    current_job().cancel_event.wait(30)  # returns as soon as the timeout fires


async def test_a_sync_handlers_timeout_is_a_timeout_error_to_middleware(queue: Queue) -> None:
    seen: list[str] = []
    job = await queue.enqueue(sync_slow)
    await burst(queue, sync_slow, middleware=[watcher(seen)])
    info = await job.info()
    assert info is not None and info.state is JobState.FAILED
    assert info.error is not None and info.error.startswith("Timeout:"), info.error
    assert seen == ["TimeoutError"]
