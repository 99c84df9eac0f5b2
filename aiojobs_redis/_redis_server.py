"""Start a throwaway redis-server on a free loopback port in a temporary directory.

Used by the demo, the test suite and the benchmarks; never touches a shared
instance. ``kill()`` sends SIGKILL and ``start()`` again restarts it on the same
port and directory (so AOF files survive a crash, as in production).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port(*, cluster: bool = False) -> int:
    """A free loopback port; with ``cluster``, one whose bus port (+10000) is free too."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if not cluster:
            return port
        if port <= 55535 and _is_free(port + 10000):
            return port
    raise RuntimeError("no free port pair for a cluster-mode redis-server")


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class RedisServer:
    """A redis-server process of our own."""

    def __init__(self, *, port: int | None = None, directory: str | None = None,
                 appendonly: bool = False, appendfsync: str = "everysec",
                 extra: list[str] | None = None, binary: str = "redis-server") -> None:
        path = shutil.which(binary)
        if path is None:
            raise FileNotFoundError(
                f"{binary} is not on PATH; install it (e.g. apt-get install -y redis-server)"
            )
        self.binary = path
        self.port = port or free_port(cluster="--cluster-enabled" in (extra or []))
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="ajr-redis-")
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra = list(extra or [])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", self.directory, "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync, "--protected-mode", "yes",
            "--logfile", str(Path(self.directory) / "redis.log"), "--daemonize", "no",
            *self.extra,
        ]

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = Path(self.directory) / "redis.log"
                text = log.read_text() if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start:\n{text[-2000:]}")
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
                return reply.startswith(b"+PONG")  # not -LOADING
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
