"""Pure retry-delay arithmetic. The random source is a parameter."""

from __future__ import annotations

import random
from collections.abc import Callable

from .options import Backoff, ExponentialBackoff, FixedBackoff

#: a callable backoff takes the number of the attempt that just failed (1-based)
#: and returns the delay in seconds before the next one
BackoffFunction = Callable[[int], float]


def retry_delay_s(
    backoff: Backoff | BackoffFunction, attempt: int, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    if isinstance(backoff, FixedBackoff):
        return _jittered(backoff.delay_s, backoff.jitter, rand)
    if isinstance(backoff, ExponentialBackoff):
        raw = backoff.base_s * backoff.factor ** max(attempt - 1, 0)
        return _jittered(min(raw, backoff.max_s), backoff.jitter, rand)
    return max(float(backoff(attempt)), 0.0)


def _jittered(delay: float, jitter: float, rand: Callable[[], float]) -> float:
    return delay * (1.0 - jitter * rand())
