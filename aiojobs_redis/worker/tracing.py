"""OpenTelemetry tracing (the optional ``otel`` extra): a web request's trace goes on
into the jobs it enqueues.

``instrument_tracing()``, called once in each process (the web app and the worker):

- the producer stores the current trace context (W3C ``traceparent``/``tracestate``,
  through OpenTelemetry's global propagator) in the headers of every job it enqueues,
  once per ``enqueue``/``enqueue_many`` call;
- every :class:`~aiojobs_redis.Worker` made afterwards opens one span per attempt
  (``process <task>``, kind CONSUMER), a child of the enqueueing span, with the queue,
  task, job id and attempt as attributes; a failed attempt records its exception and an
  ERROR status. ``TracingMiddleware()`` in ``Worker(middleware=[...])`` does the same
  for one worker without the global switch.

Nothing is imported from OpenTelemetry until tracing is turned on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..producer.headers import add_header_source, remove_header_source
from .context import JobContext

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

    from .execution import Middleware

_INSTRUMENTATION = "aiojobs_redis"
_provider: list[TracerProvider | None] = []  # [provider] while instrumented


def _otel_missing(e: ImportError) -> ConfigurationError:
    return ConfigurationError(
        f"tracing needs OpenTelemetry: pip install 'aiojobs_redis[otel]' ({e})")


def instrument_tracing(tracer_provider: TracerProvider | None = None) -> None:
    """Turn tracing on in this process: enqueued jobs carry the current trace context,
    workers made from now on open a span per attempt (``tracer_provider``: default the
    global one)."""
    try:
        import opentelemetry.propagate
        import opentelemetry.trace  # noqa: F401
    except ImportError as e:
        raise _otel_missing(e) from e
    _provider[:] = [tracer_provider]
    add_header_source(_inject)


def uninstrument_tracing() -> None:
    """Turn tracing off again (workers already made keep their middleware)."""
    _provider.clear()
    remove_header_source(_inject)


def tracing_middleware() -> tuple[Middleware, ...]:
    """What a new worker adds in front of its own middleware: tracing when it is on."""
    return (TracingMiddleware(_provider[0]),) if _provider else ()


def _inject() -> dict[str, str] | None:
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


class TracingMiddleware:
    """Worker middleware: one OpenTelemetry span per attempt, child of the trace context
    the job was enqueued in (when it has one)."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as e:
            raise _otel_missing(e) from e
        self._tracer: Tracer = trace.get_tracer(_INSTRUMENTATION,
                                                tracer_provider=tracer_provider)

    async def __call__(self, ctx: JobContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        parent = propagate.extract(ctx.headers) if ctx.headers else None
        attributes: dict[str, str | int] = {
            "messaging.system": "aiojobs_redis",
            "messaging.operation.type": "process",
            "messaging.destination.name": ctx.queue.name,
            "messaging.message.id": ctx.id,
            "aiojobs_redis.task": ctx.task,
            "aiojobs_redis.attempt": ctx.attempt,
            "aiojobs_redis.max_attempts": ctx.max_attempts,
            "aiojobs_redis.worker_id": ctx.worker.worker_id,
        }
        with self._tracer.start_as_current_span(
                f"process {ctx.task}", context=parent, kind=SpanKind.CONSUMER,
                attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            try:
                return await call_next()
            except BaseException as e:
                span.record_exception(e)
                span.set_status(Status(StatusCode.ERROR, f"{type(e).__name__}: {e}"))
                raise
