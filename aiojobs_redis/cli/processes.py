"""``aiojobs-redis worker --processes N``: N worker processes under one command.

Each process is the same worker command without --processes: its own interpreter, event
loop and connections, sharing nothing but Redis (the jobs' leases keep them apart, as
for workers on different machines). The parent forwards SIGTERM and SIGINT to every
process (a second signal: each stops at once), starts again a process that exits while
the others run (a crash, an out-of-memory kill: after 1 s, doubling up to 30 s while it
keeps failing fast), and ends when all have ended. A process sees when the parent dies
(kill -9) through a pipe and stops gracefully instead of running on as an orphan. With
--burst, a process that ends with code 0 is done and not started again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import time

from .common import check_url
from .reload import RELOAD_FD_ENV, child_argv, exit_text, on_stop_signals

log = logging.getLogger("aiojobs_redis.cli")

MAX_PROCESSES = 256
_FIRST_DELAY_S = 1.0
_MAX_DELAY_S = 30.0
_STEADY_S = 10.0  # a process that ran this long before it exited starts again at once-ish


async def run_processes(args: argparse.Namespace) -> int:
    """``worker --processes N``: supervise N worker processes (see the module's text)."""
    if args.reload:
        raise SystemExit("--processes and --reload do not go together: --reload restarts one"
                         " worker process on changes, for development")
    url: str | None = getattr(args, "url", None)
    if url:
        check_url(url)  # here, not once per process
    argv = child_argv(args)
    return await Supervisor(argv, args.processes, burst=args.burst).run()


class Supervisor:
    def __init__(self, argv: list[str], count: int, *, burst: bool) -> None:
        self.argv = argv
        self.count = count
        self.burst = burst
        self.stop = asyncio.Event()
        self.children: dict[int, asyncio.subprocess.Process] = {}  # slot -> process
        self.pipe_r, self.pipe_w = os.pipe()  # end of file in a child: the parent is gone

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        installed = on_stop_signals(self.on_signal)
        log.info("starting %d worker processes", self.count)
        try:
            codes = await asyncio.gather(*(self.keep(slot) for slot in range(self.count)))
        finally:
            for child in self.children.values():
                if child.returncode is None:
                    child.send_signal(signal.SIGTERM)
                    await child.wait()
            for sig in installed:
                loop.remove_signal_handler(sig)
            os.close(self.pipe_r)
            os.close(self.pipe_w)
        worst = max(codes, default=0)
        return worst

    def on_signal(self, sig: signal.Signals) -> None:
        again = self.stop.is_set()
        self.stop.set()
        log.warning("%s: stopping %d worker processes%s", sig.name, len(self.running()),
                    " at once" if again else " gracefully (send it again to stop them at once)")
        for child in self.running():
            child.send_signal(signal.SIGTERM)  # a worker's second one: at once

    def running(self) -> list[asyncio.subprocess.Process]:
        return [c for c in self.children.values() if c.returncode is None]

    async def keep(self, slot: int) -> int:
        """Run process ``slot`` until the command stops (or, with --burst, until it ends
        well); its last exit code, as a shell reports it (128 + signal)."""
        delay = _FIRST_DELAY_S
        while True:
            started = time.monotonic()
            child = await asyncio.create_subprocess_exec(
                *self.argv, env={**os.environ, RELOAD_FD_ENV: str(self.pipe_r),
                                 "AJR_PROCESS": f"{slot + 1}/{self.count}"},
                pass_fds=(self.pipe_r,),
                # its own session: Ctrl-C in a terminal reaches the parent only, which
                # passes one SIGTERM on (a second signal to the worker stops it at once)
                start_new_session=True)
            self.children[slot] = child
            if self.stop.is_set():  # a signal came while it started
                child.send_signal(signal.SIGTERM)
            code = await child.wait()
            if self.stop.is_set() or (self.burst and code == 0):
                if code == -signal.SIGTERM:  # ours came before it could handle it
                    return 0
                return code if code >= 0 else 128 - code
            if time.monotonic() - started >= _STEADY_S:
                delay = _FIRST_DELAY_S
            log.warning("worker process %d/%d (pid %d) %s; starting it again in %.0f s",
                        slot + 1, self.count, child.pid, exit_text(code), delay)
            stopped = asyncio.ensure_future(self.stop.wait())
            try:
                await asyncio.wait([stopped], timeout=delay)
            finally:
                stopped.cancel()
            if self.stop.is_set():
                return code if code >= 0 else 128 - code
            delay = min(delay * 2, _MAX_DELAY_S)
