"""Start worker processes for fault tests; kill them by PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: how long a fact may take to come true in a scenario (a worker started and took jobs,
#: a process ended, a job finished...): generous, for a loaded machine, where a Python
#: process alone takes seconds to start. Waits poll the fact and return as soon as it
#: holds, so an idle machine never waits this long.
FACT_S = 60.0
#: pytest-timeout of a scenario (a guard against hangs, far above its waits)
SCENARIO_TIMEOUT_S = 600


def start_worker(redis_url: str, queue: str, *, log: Path, lease_ms: int = 2000,
                 concurrency: int = 5, target: str = "tests.faults.app:make_worker",
                 extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, REDIS_URL=redis_url, AJR_QUEUE=queue, AJR_LEASE_MS=str(lease_ms),
               AJR_CONCURRENCY=str(concurrency), **(extra_env or {}))
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aiojobs_redis", "--log-level", "INFO", "worker", target],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )


def alive(*procs: subprocess.Popen[bytes] | None, log: Path) -> bool:
    """True while every given worker process runs; an AssertionError with the end of
    their log when one has exited, so a wait for what a worker should do fails at once
    instead of at its timeout."""
    for proc in procs:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise AssertionError(f"worker process {proc.pid} exited with {proc.returncode}:"
                                 f"\n{tail}")
    return True


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` and wait; a process that does not end within FACT_S is a failure (its
    stacks are printed when py-spy is installed), and is then SIGKILLed."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        proc.wait(FACT_S)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGUSR1)  # the worker logs where its tasks wait
        time.sleep(0.5)
        if shutil.which("py-spy"):
            dump = subprocess.run(["py-spy", "dump", "--pid", str(proc.pid)],
                                  capture_output=True, text=True, check=False)
            print(dump.stdout, dump.stderr, file=sys.stderr)
        proc.kill()
        proc.wait(10)
        raise
