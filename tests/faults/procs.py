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


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` and wait; a process that does not end within 10 s is a failure (its
    stacks are printed when py-spy is installed), and is then SIGKILLed."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    try:
        proc.wait(10)
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
