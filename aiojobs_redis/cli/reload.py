"""``aiojobs-redis worker --reload``: the parent process that runs the worker as a child
(the same command without --reload), watches .py files with watchfiles and restarts the
child when one changes, forwards SIGTERM and SIGINT to it, and ends with it; and, in the
child, the pipe that stops it when that parent dies. The options and their help are in
``cli/worker.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from .common import check_url

log = logging.getLogger("aiojobs_redis.cli")

#: the environment variable that hands a --reload child the read end of a pipe whose
#: write end its parent holds: end of file there means the parent is gone
RELOAD_FD_ENV = "AJR_RELOAD_FD"


def child_argv(args: argparse.Namespace) -> list[str]:
    """The command a --reload (or --processes) parent runs as its worker: the same
    options, without --reload, --reload-dir and --processes (tests/test_cli.py checks that
    every option is passed)."""
    argv = [sys.executable, "-m", "aiojobs_redis", "worker", args.target,
            "--log-level", args.log_level, "--log-format", args.log_format]
    if args.no_uvloop:
        argv.append("--no-uvloop")
    url: str | None = getattr(args, "url", None)
    if url:
        argv += ["--url", url]
    if args.burst:
        argv.append("--burst")
    if args.concurrency is not None:
        argv += ["--concurrency", str(args.concurrency)]
    for name in args.queue or ():
        argv += ["--queue", name]
    return argv


def on_stop_signals(handler: Callable[[signal.Signals], None]) -> list[signal.Signals]:
    """Call ``handler(sig)`` on SIGTERM and SIGINT in this event loop; returns the signals
    that got it (to remove later), none where the platform has no signal handlers."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, handler, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(sig)
    return installed


def stop_when_parent_is_gone(fd: int) -> None:
    """In a --reload child: SIGTERM this process (a graceful stop) when the parent dies
    without stopping it (kill -9, say), instead of running on as an orphan."""
    os.set_inheritable(fd, False)  # not to the processes the user's code starts
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if data:
            return  # the parent writes nothing; ignore
        loop.remove_reader(fd)
        os.close(fd)
        log.warning("the --reload process is gone: stopping the worker")
        os.kill(os.getpid(), signal.SIGTERM)

    loop.add_reader(fd, readable)


def _describe(changes: set[tuple[Any, str]]) -> str:
    paths = sorted({os.path.relpath(path) for _, path in changes})
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def reload_dirs(given: list[str] | None) -> list[str]:
    dirs = [os.path.abspath(d) for d in given or [os.getcwd()]]
    for d in dirs:
        if not os.path.isdir(d):
            raise SystemExit(f"--reload-dir {d!r} is not a directory")
    return list(dict.fromkeys(dirs))


async def run_reloader(args: argparse.Namespace) -> int:
    """``worker --reload``: run the worker as a child process, restart it on changes."""
    try:
        # by name: mypy needs no watchfiles either (the reload extra is optional)
        watchfiles = importlib.import_module("watchfiles")
    except ImportError as e:
        raise SystemExit("--reload needs the watchfiles package, which is not installed:"
                         " pip install 'aiojobs_redis[reload]'") from e
    if args.burst:
        raise SystemExit("--reload and --burst do not go together: a burst worker stops when"
                         " the queue is empty, a reloading one runs until it is stopped")
    dirs = reload_dirs(args.reload_dir)
    url: str | None = getattr(args, "url", None)
    if url:
        check_url(url)  # here, not once per restart in the child
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # we say what changed
    return await Reloader(child_argv(args), dirs, watchfiles).run()


class Reloader:
    """The parent of ``worker --reload``: starts the worker, restarts it when a watched
    .py file changes, forwards SIGTERM and SIGINT to it (as SIGTERM) and ends with it."""

    def __init__(self, argv: list[str], dirs: list[str], watchfiles: Any) -> None:
        self.argv = argv
        self.dirs = dirs
        self.watchfiles = watchfiles
        self.child: asyncio.subprocess.Process | None = None
        self.stop = asyncio.Event()  # a signal came: stop the worker, then exit
        self.changes: asyncio.Queue[set[tuple[Any, str]]] = asyncio.Queue()
        # the child's end of a pipe: the child sees end of file when this process dies
        self.pipe_r, self.pipe_w = os.pipe()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        installed = on_stop_signals(self.on_signal)
        watch_stop = asyncio.Event()
        watcher = asyncio.create_task(self.watch(watch_stop), name="ajr-reload-watch")
        try:
            return await self.loop(watcher)
        finally:
            watch_stop.set()  # the watcher's thread sees it within a step (50 ms)
            await asyncio.gather(watcher, return_exceptions=True)
            if self.child is not None and self.child.returncode is None:
                self.child.send_signal(signal.SIGTERM)
                await self.child.wait()
            for sig in installed:
                loop.remove_signal_handler(sig)
            os.close(self.pipe_r)
            os.close(self.pipe_w)

    def on_signal(self, sig: signal.Signals) -> None:
        again = self.stop.is_set()
        self.stop.set()
        if self.child is not None and self.child.returncode is None:
            log.warning("%s: stopping the worker%s", sig.name,
                        " at once" if again else " gracefully (send it again to stop it at once)")
            self.child.send_signal(signal.SIGTERM)  # the worker's second one: at once

    async def watch(self, stop: asyncio.Event) -> None:
        async for changes in self.watchfiles.awatch(
                *self.dirs, watch_filter=self.watchfiles.PythonFilter(), stop_event=stop):
            self.changes.put_nowait(changes)

    async def start(self) -> asyncio.subprocess.Process:
        child = await asyncio.create_subprocess_exec(
            *self.argv, env={**os.environ, RELOAD_FD_ENV: str(self.pipe_r)},
            pass_fds=(self.pipe_r,),
            # its own session (so its own process group): Ctrl-C in a terminal reaches this
            # process only, which passes one SIGTERM on (the terminal's SIGINT to the child
            # as well would be a second signal: stop at once). uvloop has no process_group=.
            start_new_session=True)
        self.child = child
        return child

    async def loop(self, watcher: asyncio.Task[None]) -> int:
        log.info("--reload: watching %s for changes to .py files", ", ".join(self.dirs))
        code = 0
        while not self.stop.is_set():
            child = await self.start()
            if self.stop.is_set():  # a signal came while it started
                child.send_signal(signal.SIGTERM)
            exited = asyncio.ensure_future(child.wait())
            changed = await self.wait_for_change(exited, watcher)
            if changed is None:  # stopped by a signal: the worker was sent SIGTERM
                code = await exited
                log.info("--reload: the worker %s; stopping", exit_text(code))
                if code == -signal.SIGTERM:  # ours came before it could handle it
                    return 0
                return code if code >= 0 else 128 - code
            if exited.done():
                log.warning("--reload: the worker %s; it starts again when a watched .py"
                            " file changes", exit_text(exited.result()))
                if not changed:
                    changed = await self.wait_for_change(None, watcher)
                    if changed is None:
                        return 0
                log.info("--reload: %s changed: starting the worker", _describe(changed))
            else:
                log.info("--reload: %s changed: restarting the worker", _describe(changed))
                child.send_signal(signal.SIGTERM)
                await exited
            while not self.changes.empty():  # the restart covers them
                self.changes.get_nowait()
        return code

    async def wait_for_change(self, exited: asyncio.Future[int] | None,
                              watcher: asyncio.Task[None]) -> set[tuple[Any, str]] | None:
        """Changes, or None when a signal came first; returns at once when ``exited``
        (the worker's exit) comes first."""
        changed = asyncio.ensure_future(self.changes.get())
        stopped = asyncio.ensure_future(self.stop.wait())
        waits: set[asyncio.Future[Any]] = {changed, stopped, watcher}
        if exited is not None:
            waits.add(exited)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not changed.done():
                changed.cancel()
        if self.stop.is_set():
            return None
        if watcher.done():
            error = watcher.exception() if not watcher.cancelled() else None
            raise SystemExit(f"--reload cannot watch {', '.join(self.dirs)}: "
                             f"{error or 'the watcher stopped'}")
        if changed.done() and not changed.cancelled():
            return changed.result()
        return set()  # the worker exited
