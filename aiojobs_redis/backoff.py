"""Pure retry-delay arithmetic. The random source is a parameter."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from .options import Backoff, ExponentialBackoff, FixedBackoff

#: a callable backoff takes the number of the attempt that just failed (1-based)
#: and returns the delay in seconds before the next one
BackoffFunction = Callable[[int], float]

#: the longest retry delay (ten years, as the options allow)
MAX_RETRY_DELAY_S = 315_576_000.0


def retry_delay_s(
    backoff: Backoff | BackoffFunction, attempt: int, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    if isinstance(backoff, FixedBackoff):
        return _jittered(backoff.delay_s, backoff.jitter, rand)
    if isinstance(backoff, ExponentialBackoff):
        # the delay reaches max_s long before the power overflows a float: stop there
        raw = backoff.max_s
        if backoff.factor <= 1 or backoff.base_s <= 0:
            raw = min(backoff.base_s, backoff.max_s)
        else:
            step = backoff.base_s
            for _ in range(max(attempt - 1, 0)):
                step *= backoff.factor
                if step >= backoff.max_s:
                    break
            raw = min(step, backoff.max_s)
        return _jittered(raw, backoff.jitter, rand)
    delay = float(backoff(attempt))
    if not math.isfinite(delay):  # a callable that says inf or nan: wait as long as we allow
        return MAX_RETRY_DELAY_S if delay > 0 else 0.0
    return min(max(delay, 0.0), MAX_RETRY_DELAY_S)


def _jittered(delay: float, jitter: float, rand: Callable[[], float]) -> float:
    return delay * (1.0 - jitter * rand())
