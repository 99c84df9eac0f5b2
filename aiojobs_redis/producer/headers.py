"""Job headers: string metadata that travels with a job from the producer to the
worker's middleware (``current_job().headers``), such as a trace context.

A header source is a function called once per ``enqueue``/``enqueue_many`` call, in the
producer's context; what it returns is stored in the payload of each job of that call.
With no source registered (the default) nothing is added and nothing is called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("aiojobs_redis.producer")

HeaderSource = Callable[[], "dict[str, str] | None"]

#: registered sources, called in order (a later one wins on a shared name)
HEADER_SOURCES: list[HeaderSource] = []


def add_header_source(source: HeaderSource) -> None:
    """Call ``source`` on every enqueue and store what it returns with the jobs (once)."""
    if source not in HEADER_SOURCES:
        HEADER_SOURCES.append(source)


def remove_header_source(source: HeaderSource) -> None:
    """Stop calling ``source`` (nothing happens when it was not registered)."""
    if source in HEADER_SOURCES:
        HEADER_SOURCES.remove(source)


def collect_headers() -> dict[str, str] | None:
    """The headers for the jobs of one enqueue call; a failing source is logged and
    skipped (a trace context must never cost a job)."""
    headers: dict[str, str] = {}
    for source in HEADER_SOURCES:
        try:
            more = source()
        except Exception:
            log.exception("job header source %r failed; enqueueing without its headers",
                          source)
            continue
        if more:
            headers.update((str(k), str(v)) for k, v in more.items())
    return headers or None
