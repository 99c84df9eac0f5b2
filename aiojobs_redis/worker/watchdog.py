"""The event-loop watchdog: a thread that notices when the worker's event loop is
blocked (a CPU loop or ``time.sleep`` in an ``async def`` handler) and says which
jobs were running and for how long.

What a blocked loop means (docs/guarantees.md): nothing on that loop runs, lease
renewals included; if it stays blocked longer than the lease, other workers recover
the jobs and run them again, and the blocked worker's late outcomes are refused by
the fencing token. Run blocking code in a sync task (it goes to a thread).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("aiojobs_redis.worker")


class LoopWatchdog:
    """Beats on the loop every ``interval_s``; a thread warns when beats stop for
    longer than ``threshold_s``, once per blocked episode, and again when it ends."""

    def __init__(self, describe: Callable[[], str], *, threshold_s: float = 1.0,
                 interval_s: float = 0.1) -> None:
        self.describe = describe  # what runs on the loop (read from the watchdog thread)
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self._last_beat = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.blocked_episodes = 0

    async def run(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="ajr-loop-watchdog",
                                        daemon=True)
        self._thread.start()
        try:
            while True:
                self._last_beat = time.monotonic()
                await asyncio.sleep(self.interval_s)
        finally:
            self._stop.set()
            self._thread.join(timeout=1.0)  # let it report an episode that just ended

    def _watch(self) -> None:
        blocked_since: float | None = None
        running = ""
        while not self._stop.wait(self.interval_s):
            silent = time.monotonic() - self._last_beat
            if silent > self.threshold_s and blocked_since is None:
                blocked_since = self._last_beat
                self.blocked_episodes += 1
                try:
                    running = self.describe()
                except Exception:  # the loop's structures may be mid-change
                    running = "(unknown)"
                log.error("event loop blocked for %.1f s while running %s: an async handler is"
                          " blocking (use a sync task for blocking code); leases cannot be"
                          " renewed while this lasts", silent, running)
            elif silent <= self.threshold_s and blocked_since is not None:
                self._ended(blocked_since, running)
                blocked_since = None
        if blocked_since is not None and self._last_beat > blocked_since:
            self._ended(blocked_since, running)

    def _ended(self, blocked_since: float, running: str) -> None:
        log.error("event loop was blocked for %.1f s in total while running %s",
                  self._last_beat - blocked_since, running)
