"""Prometheus metrics of queues, read from Redis at scrape time (``prometheus_client``).

The app of :mod:`aiojobs_redis.ops.web` serves them at ``/metrics``; a worker can serve
them on a port of its own with :func:`serve_metrics`. Every scrape reads each queue
in a few round trips, whatever its size (see :func:`aiojobs_redis.ops.metrics.snapshot`).

Metrics (label ``queue``):

=====================================  =========  =========================================
``ajr_jobs``                           gauge      jobs per ``state`` (extra label)
``ajr_queue_paused``                   gauge      1 when paused
``ajr_workers``                        gauge      live workers serving the queue
``ajr_oldest_waiting_job_age_seconds`` gauge      age of the next job to run (0: none)
``ajr_jobs_completed_total``           counter    jobs completed
``ajr_jobs_failed_total``              counter    jobs failed for good
``ajr_jobs_retried_total``             counter    failed attempts that will be retried
``ajr_jobs_stalled_total``             counter    stalled jobs recovered
``ajr_job_wait_seconds``               histogram  from runnable to taken by a worker
``ajr_job_run_seconds``                histogram  handler run time
=====================================  =========================================
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Final, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..producer.queue import Queue
from . import metrics


class ServesQueues(Protocol):
    """A worker, or anything else that names the queues it serves."""

    @property
    def queues(self) -> Sequence[Queue]: ...

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
_LE: Final = (*tuple(f"{ms / 1000:g}" for ms in metrics.BUCKETS_MS), "+Inf")


def families(snapshots: Sequence[metrics.Snapshot]) -> list[Metric]:
    """Metric families for a set of queue snapshots."""
    jobs = GaugeMetricFamily("ajr_jobs", "Jobs per state", labels=["queue", "state"])
    paused = GaugeMetricFamily("ajr_queue_paused", "1 when the queue is paused", labels=["queue"])
    workers = GaugeMetricFamily("ajr_workers", "Live workers serving the queue",
                                labels=["queue"])
    oldest = GaugeMetricFamily("ajr_oldest_waiting_job_age_seconds",
                               "Age of the next job to run, since it became runnable (0: none)",
                               labels=["queue"])
    counters = {
        name: CounterMetricFamily(f"ajr_jobs_{name}", text, labels=["queue"])
        for name, text in (("completed", "Jobs completed"), ("failed", "Jobs failed for good"),
                           ("retried", "Failed attempts that will be retried"),
                           ("stalled", "Stalled jobs recovered"),
                           ("cancelled", "Jobs cancelled (waiting, delayed or running)"),
                           ("deduplicated", "Enqueues answered by an open dedup window"),
                           ("dead_lettered", "Jobs moved into this dead-letter queue"),
                           ("limited", "Fetches cut short by a queue limit while jobs waited"),
                           ("parked", "Jobs parked by a group limit"),
                           ("released", "Jobs of a flow released when the jobs they waited"
                            " for had finished"))
    }
    hist = {
        kind: HistogramMetricFamily(f"ajr_job_{kind}_seconds", text, labels=["queue"])
        for kind, text in (("wait", "Time from runnable to taken by a worker"),
                           ("run", "Handler run time"))
    }
    for s in snapshots:
        q = [s.queue]
        for state, n in s.counts.items():
            jobs.add_metric([s.queue, state], n)
        paused.add_metric(q, 1 if s.paused else 0)
        workers.add_metric(q, len(s.workers))
        oldest.add_metric(q, s.oldest_waiting_age_s or 0.0)
        for name, fam in counters.items():
            fam.add_metric(q, s.totals[name])
        for kind, histogram in hist.items():
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for i, le in enumerate(_LE):
                cumulative += s.totals[f"{kind}:{i}"]
                buckets.append((le, cumulative))
            histogram.add_metric(q, buckets, sum_value=s.totals[f"{kind}_sum_ms"] / 1000)
    return [jobs, paused, workers, oldest, *counters.values(), *hist.values()]


class _Prefetched(Collector):
    """A collector over families read beforehand (Redis is read asynchronously)."""

    def __init__(self, fams: list[Metric]) -> None:
        self.fams = fams

    def collect(self) -> Iterator[Metric]:
        yield from self.fams


async def render(queues: Sequence[Queue]) -> bytes:
    """The Prometheus text exposition of ``queues``, read from Redis now."""
    snaps = await asyncio.gather(*(metrics.snapshot(q) for q in queues))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Prefetched(families(snaps)))
    return generate_latest(registry)


async def serve_metrics(source: ServesQueues | Queue | Sequence[Queue], *, port: int,
                        host: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` of a worker's queues (or of ``queues``) on ``host:port`` until
    cancelled: ``asyncio.create_task(serve_metrics(worker, port=9108))``."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    if isinstance(source, Queue):
        queues: Sequence[Queue] = (source,)
    elif isinstance(source, Sequence):
        queues = tuple(source)
    else:
        queues = source.queues

    async def endpoint(request: Request) -> Response:
        return Response(await render(queues), media_type=CONTENT_TYPE)

    app = Starlette(routes=[Route("/metrics", endpoint, methods=["GET"])])
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    # the worker owns the signals: uvicorn must not take SIGTERM/SIGINT from it
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.create_task(server.serve())
    try:
        await asyncio.shield(serving)
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
