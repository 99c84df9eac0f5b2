"""What a handler raises to decide its job's outcome itself.

- ``raise Retry(delay_s=30)``: run the job again later. By default the attempt counts
  (like any failure: with no attempts left the job fails for good); with
  ``count_attempt=False`` the attempt is given back, which moves a running job back to
  delayed however many times it asks (BullMQ's ``DelayedError``): for "not yet", such
  as an upstream's rate limit, not for errors.
- ``raise Unrecoverable("bad input")``: fail the job for good now, whatever attempts
  remain.

Both are recorded on the job (error ``Retry: ...`` or ``Unrecoverable: ...``) like any
other outcome, fenced by the attempt's lease.
"""

from __future__ import annotations

import math

#: the longest delay a Retry may ask for (a year)
MAX_RETRY_DELAY_S = 366 * 24 * 3600.0


class Retry(Exception):
    """Run the job again after ``delay_s`` seconds (None: the job's backoff decides).

    ``count_attempt``: True (default), this attempt counts toward the job's attempts;
    False, it is given back and the job runs again whatever its attempts.
    """

    def __init__(self, reason: str = "", *, delay_s: float | None = None,
                 count_attempt: bool = True) -> None:
        if delay_s is not None and (isinstance(delay_s, bool)
                                    or not isinstance(delay_s, int | float)
                                    or not math.isfinite(delay_s)
                                    or not 0 <= delay_s <= MAX_RETRY_DELAY_S):
            raise ValueError(f"Retry(delay_s=...) must be from 0 to {MAX_RETRY_DELAY_S:.0f}"
                             f" seconds, not {delay_s!r}")
        super().__init__(reason)
        self.reason = reason
        self.delay_s = delay_s
        self.count_attempt = count_attempt


class WaitForChildren(Exception):
    """Raised by :meth:`JobContext.wait_for` after it added the jobs to wait for: the
    attempt ends there, without holding a worker slot, and the job runs again (its
    attempt given back) once they have finished. Let it propagate."""

    def __init__(self, children: list[str], policy: str) -> None:
        super().__init__(f"waiting for {len(children)} job(s)")
        self.children = children
        self.policy = policy


class Unrecoverable(Exception):
    """Fail the job for good now: retrying cannot help (bad input, a gone resource)."""
